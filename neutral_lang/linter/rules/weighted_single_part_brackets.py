"""NP203 weighted-single-part-brackets: ``[x] :0.5``, ``[cat:dog:0.5] :2``.

A bracket opens a group only when it holds two or more parts (docs/language.md); ``[x]`` is A1111
text -- de-emphasis, prompt editing ``[from:to:when]`` or alternation ``[a|b]`` -- and the weight
after it is the weight of the part whose text is ``[x]``. It looks like a weighted group, but the
text encoder sees the brackets.
"""

from __future__ import annotations

import re

from ...ast import Leaf, Span
from ...formatter import format_number
from ..registry import rule
from ..scan import prompts

RULE = rule("weighted-single-part-brackets")
_TOKEN = re.compile(r"\\.|[\[\]|:]", re.S)


def _reading(text: str) -> str | None:
    """How A1111 reads ``text`` if one ``[`` at its start is closed by the ``]`` at its end:
    ``de-emphasis``, ``prompt editing`` or ``alternation``; ``None`` if the brackets are not one pair."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    depth, colon, bar = 0, False, False
    for m in _TOKEN.finditer(text):
        t = m.group()
        if t == "[":
            depth += 1
        elif t == "]":
            depth -= 1
            if depth == 0 and m.end() != len(text):
                return None
        elif depth == 1:
            colon |= t == ":"
            bar |= t == "|"
    if depth != 0 or text.endswith("\\]"):
        return None
    return "alternation" if bar else "prompt editing" if colon else "de-emphasis"


def check(ctx):
    if ctx.prompt is None:
        return
    for _, prompt in prompts(ctx.prompt):
        for part in prompt.parts:
            if part.weight_span is None or not isinstance(part.body, Leaf):
                continue
            reading = _reading(part.body.text)
            if reading is None:
                continue
            text = part.body.text
            inner = text[1:-1].strip()
            at = part.body.span.start
            if at > 0 and (ctx.text[at - 1].isalnum() or ctx.text[at - 1] == "_"):
                inner = " " + inner  # `AND[x] :0.5`: without its bracket the text would glue to the keyword
            yield RULE.diagnostic(
                Span(part.body.span.start, part.weight_span.end),
                f"'{text}' holds a single part, so it is A1111 {reading}, not a group: "
                f"the weight {format_number(part.weight)} applies to the part '{text}'",
                hint=(f"to weight the text alone drop the brackets: `{inner} :{format_number(part.weight)}`; "
                      "a group holds two or more parts") if reading == "de-emphasis" and inner.strip()[:1] not in ("", "[") else
                (f"the weight applies to the whole part, {reading} included, which is right if that is what you "
                 "meant; a group holds two or more parts"),
            )
