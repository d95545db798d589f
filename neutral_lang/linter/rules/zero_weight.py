"""NP404 zero-weight: ``a castle AND_PERP monster :0``.

A part with weight 0 contributes ``0 * delta``: for ``AND``, ``AND_PERP`` and ``AND_TOPK`` it
vanishes (its text is still evaluated by the original). A zero-weight ``AND_SALT`` part adds
nothing itself, but it still competes for salient pixels: where it is the most salient, its
``AND_SALT`` siblings do not act there either.
"""

from __future__ import annotations

from ...ast import Keyword
from ..registry import rule
from ..scan import prompts

RULE = rule("zero-weight")


def check(ctx):
    if ctx.prompt is None:
        return
    for depth, prompt in prompts(ctx.prompt):
        parts = prompt.parts
        salts = sum(p.keyword is Keyword.AND_SALT for p in parts)
        for i, part in enumerate(parts):
            if part.weight != 0 or part.weight_span is None:
                continue
            kw = part.keyword.value
            competes = part.keyword is Keyword.AND_SALT and salts > 1
            if competes:
                message = (f"{kw} part with weight 0 adds nothing itself, but still competes for salient pixels: "
                           f"where it wins, its AND_SALT sibling{'s do' if salts > 2 else ' does'} not act")
                hint = "remove the part to let its siblings act everywhere"
            else:
                message = f"{kw} part with weight 0 contributes nothing"
                hint = "remove the part, or give it a weight (e.g. :0.5)"
            # Deleting it is exact unless it is the first part (its keyword is implicit), it
            # competes, or the group would be left with one part (A1111 text).
            # Nor when text after it has an implicit AND: deleted, the text would join the part before.
            fixable = i > 0 and part.keyword_span is not None and not competes and (depth == 0 or len(parts) >= 3) \
                and (i + 1 == len(parts) or parts[i + 1].keyword_span is not None)
            yield RULE.diagnostic(part.span, message, hint=hint, fix="" if fixable else None)
