"""NP408 inline-weight: ``girl on a swing:1.2 green grass:1.0 pink trousers:0.8``.

Other UIs (and prompts copied from them with the brackets lost) weight a phrase by gluing
``:number`` to it in the middle of the text. Here a weight is only ever at the end of a part
(docs/language.md, "Weights"): the mid-text ones are text, sent to the text encoder, and only the
last number weights the part -- the whole part, not its last phrase. Flagged: a ``:`` outside A1111
brackets, glued to a letter (not a digit: ``16:9`` is text), followed by a number with a decimal
point and then more text. The unsafe fix writes the phrase as A1111 emphasis,
``(girl on a swing:1.2)``, which weights it inside the text encoder as the other UI meant.
"""

from __future__ import annotations

import re

from ...ast import Span
from ...formatter import format_number
from ..registry import rule
from ..scan import text_parts
from .weight_like_text import colons

RULE = rule("inline-weight")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?=[\s,;]+\S)")
# Where a phrase starts: after a separator, a bracket or a previous weight.
_BOUNDARY = re.compile(r"[,;.|()\[\]<>\n]")


def check(ctx):
    if ctx.prompt is None:
        return
    for part, text, base in text_parts(ctx.prompt):
        floor = 0  # where the next phrase may start
        for c in colons(text):
            if text[c] != ":" or c == 0 or not text[c - 1].isalpha():
                continue
            m = _DECIMAL.match(text, c + 1)
            if m is None:
                continue
            start = floor
            for b in _BOUNDARY.finditer(text, floor, c):
                start = b.end()
            while start < c and text[start].isspace():
                start += 1
            floor = m.end()
            phrase = text[start:c]
            weight = m.group()
            if part.weight_span is not None:
                last = f"only the last weight, {format_number(part.weight)}, weights the part, and all of it"
            else:
                last = "the part keeps weight 1"
            yield RULE.diagnostic(
                Span(base + start, base + m.end()),
                f"':{weight}' is text, not the weight of '{phrase}': a weight ends a part; {last}",
                hint=f"to weight the phrase, write A1111 emphasis `({phrase}:{weight})`; "
                "to make it a part of its own, start it with AND",
                fix=f"({phrase}:{weight})",
            )
