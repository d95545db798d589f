"""The prompt linter: what the original extension would silently do with a prompt, and where.

    >>> import neutral_lang as nl
    >>> [(d.code, d.span.start, d.fix) for d in nl.lint("a castle AND_PREP monster")]
    [('NP301', 9, 'AND_PERP')]

``fix(text)`` applies the safe fixes (:mod:`~neutral_lang.linter.fix`).

One rule per module under ``rules/``; codes, names and severities come from the one
:mod:`~neutral_lang.linter.registry`; each code is documented in ``docs/rules/<code>.md``.
Imports no torch.
"""

from __future__ import annotations

from .diagnostic import SEVERITIES, Diagnostic
from .engine import lint
from .fix import apply_fixes, fix, fix_all
from .registry import FIX_KINDS, RULES, Rule, resolve

__all__ = ["lint", "fix", "fix_all", "apply_fixes", "Diagnostic", "Rule", "RULES", "SEVERITIES", "FIX_KINDS", "resolve"]
