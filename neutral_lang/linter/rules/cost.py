"""NP107 cost (info, opt-in): model evaluations per sampling step.

One evaluation per unique leaf text (identical texts share one, docs/semantics.md) plus one for the
unconditional prediction. Counted on the AST, before the compiler prunes dead parts: the plan
that ``neutral-lang explain`` shows may need fewer.
"""

from __future__ import annotations

from ...ast import Prompt, Span, leaves
from ..registry import rule

RULE = rule("cost")


def unique_texts(prompt: Prompt) -> list[str]:
    """The distinct leaf texts, in source order: one model evaluation each per step."""
    return list(dict.fromkeys(leaf.text for leaf in leaves(prompt)))


def evaluations(prompt: Prompt) -> int:
    """Model evaluations per step: the unique leaf texts plus the unconditional."""
    return len(unique_texts(prompt)) + 1


def check(ctx):
    if ctx.prompt is None:
        return
    n = len(unique_texts(ctx.prompt))
    yield RULE.diagnostic(
        Span(0, len(ctx.text)),
        f"{n + 1} model evaluations per step: {n} unique text{'s' if n != 1 else ''} + 1 unconditional",
        hint="identical texts are evaluated once; 'neutral-lang explain' shows the compiled plan, which may prune more",
    )
