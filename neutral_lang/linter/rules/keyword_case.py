"""NP302 keyword-case: ``and_perp``, ``And_Salt``, ``AND_TOPk``.

Keywords are case-sensitive (docs/language.md): any other spelling is plain text. Plain ``and`` and
``And`` are English and never flagged; only case variants of ``AND_PERP``, ``AND_SALT`` and
``AND_TOPK`` are.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import spelling

RULE = rule("keyword-case")


def check(ctx):
    for start, end, word, fix in spelling(ctx.text, "case"):
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is plain text: keywords are case-sensitive; did you mean {fix}?",
            hint=f"write {fix} in capitals",
            fix=fix,
        )
