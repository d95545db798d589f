"""NP103 group-leading-keyword: ``x AND_PERP [AND_SALT a AND b]`` -- a group that starts with a keyword.

As at the start of a prompt (NP101), the text before the group's first keyword -- nothing --
is the group's first part, so the group's base is the empty prompt.
"""

from __future__ import annotations

from ...ast import Leaf
from ..registry import rule
from ..scan import prompts

RULE = rule("group-leading-keyword")


def check(ctx):
    if ctx.prompt is None:
        return
    for depth, prompt in prompts(ctx.prompt):
        parts = prompt.parts
        if depth == 0 or len(parts) < 2 or parts[1].keyword_span is None:
            continue
        first = parts[0]
        if isinstance(first.body, Leaf) and not first.body.text:
            kw = parts[1].keyword.value
            yield RULE.diagnostic(
                parts[1].keyword_span,
                f"the group starts with {kw}: its first part is empty, so the empty prompt is its base",
                hint=f"write the group's base part first, before {kw}",
            )
