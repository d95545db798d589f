"""NP104 text-after-group: ``[a AND_SALT b] tail`` -- text right after a group's ``]``.

The original starts a new part there with an implicit ``AND`` (docs/language.md), so ``tail`` is
added to the prompt on its own rather than joining the group or the text before it.
"""

from __future__ import annotations

from ..registry import rule
from ..scan import prompts

RULE = rule("text-after-group")


def check(ctx):
    if ctx.prompt is None:
        return
    text = ctx.text
    for _, prompt in prompts(ctx.prompt):
        for i, part in enumerate(prompt.parts):
            if i == 0 or part.keyword_span is not None:
                continue
            span = part.body.span
            shown = text[span.start:span.end]
            if len(shown) > 30:
                shown = shown[:30] + "..."
            yield RULE.diagnostic(
                span,
                f"text after a group is a separate AND part: '{shown}'",
                hint="write the AND explicitly (as the fix does), or move the text inside the group or before it",
                fix="AND " + text[span.start:span.end],
            )
