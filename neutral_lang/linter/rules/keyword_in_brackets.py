"""NP202 keyword-in-brackets: ``a [b AND c] d``, ``(red AND blue:1.2)``.

A keyword splits the prompt wherever it stands, even inside A1111 brackets of leaf text, exactly
as A1111's own ``AND`` split does (docs/language.md): ``a [b AND c] d`` is the two parts ``a [b``
and ``c] d``, each with an unbalanced bracket. A group is different: its ``[`` starts a part.

The unsafe fix, for a plain ``AND`` between words inside ``( )`` only, writes the English ``and``
(what ``(red AND blue:1.2)`` most likely means); the hint says how a group is written, without rewriting the prompt, since
which part the author wanted grouped is not in the text.
"""

from __future__ import annotations

import heapq

from ...ast import Span, iter_parts
from ...errors import line_col
from ..registry import rule
from ..scan import group_brackets, scan_brackets, splits_text

RULE = rule("keyword-in-brackets")
_CLOSE = {"[": "]", "(": ")"}


def check(ctx):
    if ctx.prompt is None:
        return
    groups = group_brackets(ctx.prompt)
    pairs = [p for p in scan_brackets(ctx.text).pairs if p[0] not in groups]
    keywords = sorted(
        ((part.keyword_span.start, part.keyword_span.end, part.keyword.value)
         for _, part in iter_parts(ctx.prompt) if part.keyword_span is not None),
    )
    if not pairs or not keywords:
        return
    # Sweep in source order; `open_heap` holds the pairs opened before the keyword, innermost
    # (latest opened) on top. Pairs closed before it are popped lazily: keywords only move right.
    open_heap: list[tuple[int, int, str]] = []
    i = 0
    for start, end, kw in keywords:
        while i < len(pairs) and pairs[i][0] < start:
            heapq.heappush(open_heap, (-pairs[i][0], pairs[i][1], pairs[i][2]))
            i += 1
        while open_heap and open_heap[0][1] < start:
            heapq.heappop(open_heap)
        if not open_heap:
            continue
        open_, ch = -open_heap[0][0], open_heap[0][2]
        line, col = line_col(ctx.text, open_)
        # `red AND blue` reads as English; `[AND]` or `(AND :0)` has no words to join.
        english = kw == "AND" and ch == "(" and splits_text(ctx.text, start, end, "AND")
        yield RULE.diagnostic(
            Span(start, end),
            f"{kw} splits the '{ch}...{_CLOSE[ch]}' opened at line {line}, column {col}: "
            "each side becomes a separate part with an unbalanced bracket",
            hint=("for the English word write `and`; " if english else "")
            + f"for a group, the '[' must be the first thing of a part, right after a keyword",
            fix="and" if english else None,
        )
