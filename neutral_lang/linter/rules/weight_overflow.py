"""NP406 weight-overflow: ``a AND b :1e39``, ``[a AND b :1e20] :1e20``.

Weights multiply down the tree: the delta of ``b`` in ``[a AND b :1e20] :1e20`` is scaled by
``1e40``, and the guidance scale multiplies it again. float32 (what the executor computes in for
float32, float16 and bfloat16 runs) holds at most about ``3.4e38``, so such a prompt cannot run:
``guide`` raises an error naming the part. This rule says so before the run, for every part whose
product of weights first exceeds ``neutral_lang.plan.WEIGHT_LIMITS["float32"]`` (the dtype's
largest value over a headroom of 1024 for the guidance scale and the size of a prediction delta).
"""

from __future__ import annotations

from ...ast import Group
from ...plan import WEIGHT_LIMITS
from ..registry import rule

RULE = rule("weight-overflow")
_LIMIT = WEIGHT_LIMITS["float32"]


def check(ctx):
    if ctx.prompt is None:
        return
    stack = [(1.0, ctx.prompt)]  # (product of the enclosing weights, prompt); no recursion
    while stack:
        outer, prompt = stack.pop()
        for part in prompt.parts:
            product = outer * abs(part.weight)
            if product > _LIMIT >= outer:
                yield RULE.diagnostic(
                    part.weight_span or part.span,
                    f"the weights down to this part multiply to {product:.3g}, more than float32 guidance can "
                    f"carry ({_LIMIT:.3g}): the run would fail with an overflow",
                    hint="use weights of a sensible size; nested weights multiply",
                )
            elif isinstance(part.body, Group) and product <= _LIMIT:
                stack.append((product, part.body.prompt))
