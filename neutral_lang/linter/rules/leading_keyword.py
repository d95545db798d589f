"""NP101 leading-keyword: ``AND_PERP monster`` -- a keyword as the very first word.

The original splits at every keyword, so the text before the first one -- nothing -- becomes an
``AND`` part of its own: the empty prompt is the base, and ``AND_PERP``/``AND_SALT``/``AND_TOPK``
act relative to it (docs/language.md, "Keywords").
"""

from __future__ import annotations

from ...ast import Leaf, Span
from ..registry import rule

RULE = rule("leading-keyword")


def check(ctx):
    if ctx.prompt is None:
        return
    parts = ctx.prompt.parts
    first = parts[0]
    if len(parts) < 2 or not isinstance(first.body, Leaf) or first.body.text or parts[1].keyword_span is None:
        return
    second = parts[1]
    kw = second.keyword.value
    span, fix = second.keyword_span, None
    if second.keyword.value == "AND" and first.weight_span is None and not second.options and \
            isinstance(second.body, Leaf) and second.body.text:
        # `AND x` -> `x`: the keyword and the space after it go.
        span, fix = Span(0, second.body.span.start), ""
    yield RULE.diagnostic(
        span,
        f"the prompt starts with {kw}: an empty AND part comes before it, so the empty prompt is the base",
        hint=f"write the base prompt before {kw}" + ("" if fix is None else ", or drop the keyword"),
        fix=fix,
    )
