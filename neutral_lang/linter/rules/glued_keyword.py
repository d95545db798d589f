"""NP303 glued-keyword: ``AND_PERPmonster``, ``monsterAND_SALT``, ``castle_AND_TOPK``.

A keyword is a whole word (``\\bAND_PERP\\b``, docs/language.md): run together with letters, digits
or underscores it is plain text, and the prompt is not split there.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import LONG_KEYWORDS, spelling

RULE = rule("glued-keyword")


def check(ctx):
    for start, end, word, fix in spelling(ctx.text, "glued"):
        kws = [w for w in fix.split(" ") if w in LONG_KEYWORDS]
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is plain text: {kws[0]} is a keyword only as a whole word",
            hint=f"put spaces around the keyword: {fix}",
            fix=fix,
        )
