"""NP104 text-after-group: ``[a AND_SALT b] tail`` -- text right after a group's ``]``.

The original starts a new part there with an implicit ``AND`` (docs/language.md), so ``tail`` is
added to the prompt on its own rather than joining the group or the text before it.
"""

from __future__ import annotations

import bisect

from ..registry import rule
from ..scan import in_text_brackets, prompts, scan_brackets

RULE = rule("text-after-group")


def check(ctx):
    if ctx.prompt is None:
        return
    text = ctx.text
    brackets = scan_brackets(text)
    # Each closer and the offset of its opener (-1: unmatched), by position.
    closers = sorted([(close, open_) for open_, close, _ in brackets.pairs]
                     + [(pos, -1) for pos, ch in brackets.unmatched if ch in ")]"])
    closer_pos = [c for c, _ in closers]
    inside = in_text_brackets(text, ctx.prompt)
    for _, prompt in prompts(ctx.prompt):
        for i, part in enumerate(prompt.parts):
            if i == 0 or part.keyword_span is not None:
                continue
            span = part.body.span
            shown = text[span.start:span.end]
            if len(shown) > 30:
                shown = shown[:30] + "..."
            # Tails are disjoint, so looking at the closers inside each one stays linear.
            k = bisect.bisect_left(closer_pos, span.start)
            stray = None
            while k < len(closers) and closers[k][0] < span.end:
                if closers[k][1] < span.start:
                    stray = closers[k][0]
                    break
                k += 1
            if stray is not None:
                # `[a AND b] c]`: a closer of something opened before the text (or of nothing, NP201)
                # says the text may belong in the group; an AND before it would keep the bracket.
                hint = (f"the '{text[stray]}' in it closes nothing opened in the text: if the text belongs in the group, "
                        "move the group's ']' after it; if not, remove the stray bracket and write AND before the text")
                fix = None
            elif text[span.start] == ":":
                # `[a AND b]:0.:1`: a weight-like tail (NP403); an AND would make it an empty weighted part.
                hint = "this text starts with ':': write the group's weight once, right after its ']'"
                fix = None
            elif inside(span.start):
                # `([a AND b] c)`: an AND here would split the A1111 brackets around it (NP202).
                hint = "the group and this text are inside A1111 brackets, which a keyword would split: " \
                    "move the text inside the group or before it"
                fix = None
            else:
                hint = "write AND before it to say so, or move the text inside the group or before it"
                # After a weight (`[a AND b]:0tail`) the keyword needs a space to be a whole word.
                glued = span.start > 0 and (text[span.start - 1].isalnum() or text[span.start - 1] == "_")
                fix = (" AND " if glued else "AND ") + text[span.start:span.end]
            yield RULE.diagnostic(span, f"text after a group is a separate AND part: '{shown}'", hint=hint, fix=fix)
