"""NP301 misspelt-keyword: ``AND_PREP``, ``AND_SLAT``, ``ANDPERP``, ``AND_TOP``, ``and_prep``, ``AND PERP``.

Keywords are exact, so a near miss is plain text: the words stay in the part before them and no
conciliation happens. A word counts as a near miss when it is within two edits (insert, delete,
substitute, swap two neighbours) of ``AND_PERP``, ``AND_SALT`` or ``AND_TOPK``, closer to one of
them than to the others, and looks like an attempt at a keyword (starts with ``AND``, or with
``a``/``A`` and holds an underscore). ``AND PERP`` and ``AND-PERP`` (a real ``AND`` followed by
``PERP``) count too. Plain ``AND`` is never guessed at: ``HAND``, ``ANDROID`` are words.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import in_text_brackets, spelling

RULE = rule("misspelt-keyword")


def check(ctx):
    inside = in_text_brackets(ctx.text, ctx.prompt)
    for start, end, word, fix, splits in spelling(ctx.text, "misspelt"):
        splits = splits and not inside(start)
        yield RULE.diagnostic(
            Span(start, end),
            f"'{word}' is not a keyword, so it is read as plain text: did you mean {fix}?",
            hint=f"write `{fix}`" if splits else f"write {fix}, with a part's text on each side",
            fix=fix if splits else None,
        )
