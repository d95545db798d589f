"""NP102 empty-part: ``a AND AND b``, ``a AND_PERP`` -- a doubled or trailing keyword.

Between two keywords in a row, or after a keyword at the end, there is an empty part: the
original conditions on the empty prompt there and adds it with the keyword's weight.
The first part of a prompt or group is NP101 / NP103.
"""

from __future__ import annotations

from ...ast import Leaf
from ..registry import rule
from ..scan import prompts

RULE = rule("empty-part")


def check(ctx):
    if ctx.prompt is None:
        return
    for depth, prompt in prompts(ctx.prompt):
        parts = prompt.parts
        for i in range(1, len(parts)):
            part = parts[i]
            if not isinstance(part.body, Leaf) or part.body.text or part.keyword_span is None:
                continue
            kw = part.keyword.value
            if i + 1 < len(parts) and parts[i + 1].keyword_span is not None:
                what = f"{kw} is followed directly by {parts[i + 1].keyword.value}"
            else:
                what = f"{kw} ends the {'prompt' if depth == 0 else 'group'}"
            # Deleting the keyword removes just the empty part, unless that leaves a one-part group
            # (which would turn into A1111 text) or the part carries a weight of its own.
            # An option list after the keyword (valid or not) would be left behind as text.
            fixable = part.weight_span is None and (depth == 0 or len(parts) >= 3) and \
                ctx.text[part.keyword_span.end:part.keyword_span.end + 1] != "("
            yield RULE.diagnostic(
                part.keyword_span,
                f"{what}: the empty part between them conditions on the empty prompt"
                if i + 1 < len(parts) else f"{what}: it adds an empty part that conditions on the empty prompt",
                hint=f"remove the extra {kw}, or write the text of the part after it",
                fix="" if fixable else None,
            )
