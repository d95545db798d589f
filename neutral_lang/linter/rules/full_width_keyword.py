"""NP305 full-width-keyword: ``a castle ＡＮＤ＿ＰＥＲＰ monster``, ``城堡ＡＮＤ怪物``.

Input methods for Chinese, Japanese and Korean type full-width Latin letters (U+FF21...) unless
switched to half-width. Keywords are ASCII words (docs/language.md, "Keywords"), so a full-width
keyword is plain text that the text encoder sees, and the prompt is not split there. Found by
folding each character with Unicode NFKC (``ＡＮＤ＿ＰＥＲＰ`` folds to ``AND_PERP``); a bare
``ＡＮＤ`` counts only between non-Latin characters (``ＨＡＮＤ`` is a word).
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import in_text_brackets, spelling

RULE = rule("full-width-keyword")


def check(ctx):
    inside = in_text_brackets(ctx.text, ctx.prompt)
    for start, end, word, fix, splits in spelling(ctx.text, "width"):
        splits = splits and not inside(start)
        keyword = next(w for w in fix.split(" ") if w in ("AND", "AND_PERP", "AND_SALT", "AND_TOPK"))
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is plain text: {keyword} is a keyword only in ASCII letters, not full-width ones",
            hint=f"switch the input method to half-width and write `{fix}`" if splits else f"switch the input method to half-width and write {fix}, with a part's text on each side",
            fix=fix if splits else None,
        )
