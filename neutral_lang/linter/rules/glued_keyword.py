"""NP303 glued-keyword: ``AND_PERPmonster``, ``monsterAND_SALT``, ``castle_AND_TOPK``.

A keyword is a whole word (``\\bAND_PERP\\b``, docs/language.md): run together with letters, digits
or underscores it is plain text, and the prompt is not split there.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import LONG_KEYWORDS, in_text_brackets, spelling

RULE = rule("glued-keyword")


def check(ctx):
    inside = in_text_brackets(ctx.text, ctx.prompt)
    for start, end, word, fix, splits in spelling(ctx.text, "glued"):
        splits = splits and not inside(start)
        kws = [w for w in fix.split(" ") if w in LONG_KEYWORDS]
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is plain text: {kws[0]} is a keyword only as a whole word",
            hint=f"put spaces around the keyword: `{fix}`" if splits else f"put spaces around the keyword ({fix}), with a part's text on each side",
            fix=fix if splits else None,
        )
