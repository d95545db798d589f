"""NP302 keyword-case: ``and_perp``, ``And_Salt``, ``AND_TOPk``.

Keywords are case-sensitive (docs/language.md): any other spelling is plain text. Plain ``and`` and
``And`` are English and never flagged; only case variants of ``AND_PERP``, ``AND_SALT`` and
``AND_TOPK`` are.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import in_text_brackets, spelling

RULE = rule("keyword-case")


def check(ctx):
    inside = in_text_brackets(ctx.text, ctx.prompt)
    for start, end, word, fix, splits in spelling(ctx.text, "case"):
        splits = splits and not inside(start)
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is plain text: keywords are case-sensitive; did you mean {fix}?",
            hint=f"write `{fix}`, in capitals" if splits else f"write {fix} in capitals, with a part's text on each side",
            fix=fix if splits else None,
        )
