"""NP204 emphasis-too-deep: ``(((...(a`` with more than 480 brackets open around text.

A1111's emphasis multiplies the weight of everything inside a bracket when the bracket closes (or,
left open, at the end of the text), so text inside n brackets is multiplied n times; the work is
quadratic in the length without a limit. ``emphasis.parse`` refuses text inside more than
``emphasis.MAX_DEPTH`` (480) brackets open at once, nested or left open, and ``run()`` refuses a
prompt whose text, as written, has such text, before any text is encoded (docs/emphasis.md). This rule reports the first such text of each part,
as the part is written.
"""

from __future__ import annotations

from ... import emphasis
from ...ast import Span
from ..registry import rule
from ..scan import text_parts

RULE = rule("emphasis-too-deep")


def check(ctx):
    if ctx.prompt is None:
        return
    for _, text, base in text_parts(ctx.prompt):
        error = emphasis.depth_error(text)
        if error is not None:
            yield RULE.diagnostic(
                Span(base + error.position, base + error.position + 1),
                f"text inside {error.depth} brackets at once (nested or left open): A1111 emphasis is read to "
                f"{emphasis.MAX_DEPTH} levels, so run() refuses this prompt",
                hint="remove brackets or close the ones left open; a bracket with a backslash before it is text",
            )
