"""The prompt linter: what the original extension would silently do with a prompt, and where.

    >>> import neutral_lang as nl
    >>> [(d.code, d.span.start, d.fix) for d in nl.lint("a castle AND_PREP monster")]
    [('NP301', 9, 'AND_PERP')]

One rule per module under ``rules/``; codes, names and severities come from the one
:mod:`~neutral_lang.linter.registry`; each code is documented in ``docs/rules/<code>.md``.
Imports no torch.
"""

from __future__ import annotations

from .diagnostic import SEVERITIES, Diagnostic
from .engine import lint
from .registry import RULES, Rule, resolve

__all__ = ["lint", "Diagnostic", "Rule", "RULES", "SEVERITIES", "resolve"]
