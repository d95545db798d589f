"""NP405 empty-window: ``AND_TOPK(start=0.8, end=0.5)``, ``AND_PERP(end=0)``, ``AND_SALT(start=1.0)``.

A part acts at step ``i`` when ``start <= i < end`` (docs/language.md, "Keyword options"). Flagged when no step of
any run can satisfy that: ``end`` is 0; both bounds are of one kind (both step indices or both
fractions) and ``start >= end``; or ``start`` is the fraction 1.0 (step ``num_steps``, after the
last one). The compiler prunes such a part (``Window.is_empty``); with mixed kinds the answer
depends on the number of steps, and nothing is said.
"""

from __future__ import annotations

from ...ir import Bound, Window
from ..registry import rule
from ..scan import prompts

RULE = rule("empty-window")


def _bound(part, name: str) -> Bound | None:
    for opt in part.options:
        if opt.name == name:
            return Bound(opt.value, opt.is_fraction)
    return None


def check(ctx):
    if ctx.prompt is None:
        return
    for _, prompt in prompts(ctx.prompt):
        for part in prompt.parts:
            if not part.options or part.keyword_span is None:
                continue
            window = Window(_bound(part, "start"), _bound(part, "end"))
            start = window.start
            late = start is not None and start.fraction and start.value >= 1.0
            if not (window.is_empty() or late):
                continue
            written = ", ".join(f"{o.name}={o.text}" for o in part.options if o.name in ("start", "end"))
            yield RULE.diagnostic(
                part.keyword_span,
                f"the window {written} contains no step: this {part.keyword.value} part never acts",
                hint="start must come before end: a step index (10) or a fraction of the steps (0.5); "
                "a fraction f means step int(f * num_steps)",
            )
