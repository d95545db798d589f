"""NP407 text-read-as-weight: ``a castle, 16:9 AND_PERP fog``, ``sunset at 12:30``, ``cat:dog:0.5``.

A ``:number`` at the end of a part is its weight (docs/language.md, "Weights"), whatever stands
before the colon. Written right after a digit, it is almost always an aspect ratio, a time or a
score: ``a castle, 16:9 AND_PERP fog :-0.5`` weights the part ``a castle, 16`` by 9. This rule
covers "text you meant became a weight" (the other half of the class of NP403, listed in
docs/lint.md):

- ``digits:digits`` at the end of a part (``16:9``, ``4:3``, ``12:30``, ``1:1``): the fix writes
  the weight 1 after it (``16:9 :1``), which keeps ``16:9`` as text and means what the prompt says;
- ``word:word:number`` at the end of a part (``cat:dog:0.5``): A1111 prompt editing without its
  brackets, read as the text ``cat:dog`` with weight 0.5. The hint gives the bracketed form; no
  fix, since a weight may have been meant.
"""

from __future__ import annotations

import re

from ...ast import Leaf, Span
from ...formatter import format_number
from ..registry import rule
from ..scan import prompts

RULE = rule("text-read-as-weight")
_UNSIGNED_INTEGER = re.compile(r":[0-9]+")
_WORDS = re.compile(r"[^\W\d_][\w ]*")


def _trailing(text: str, keep) -> int:
    """Where the run of characters ``keep`` accepts at the end of ``text`` starts (``len(text)``:
    none). Scans back from the end only: a regex ``search`` anchored with ``$`` would retry from
    every offset, quadratic on a long run of digits."""
    i = len(text)
    while i > 0 and keep(text[i - 1]):
        i -= 1
    return i


def _editing(text: str) -> int | None:
    """The offset of ``word:word`` at the end of ``text`` (prompt editing without brackets, the
    part's weight being its ``:when``), or ``None``. Linear: the tail after the last ``:`` and the
    words before it are each looked at once."""
    colon = text.rfind(":")
    if colon <= 0 or not _WORDS.fullmatch(text, colon + 1):
        return None
    start = _trailing(text[:colon], lambda ch: ch.isalnum() or ch in "_ ")
    while start < colon and text[start] == " ":
        start += 1
    if start == colon or not _WORDS.fullmatch(text, start, colon) or text[start - 1:start] == "\\":
        return None
    return start


def check(ctx):
    if ctx.prompt is None:
        return
    text = ctx.text
    for _, prompt in prompts(ctx.prompt):
        for part in prompt.parts:
            weight = part.weight_span
            if weight is None or not isinstance(part.body, Leaf) or part.body.span.end != weight.start:
                continue  # a weight after a space (`16 :9`) is written as one
            body = part.body
            written = text[weight.start:weight.end]
            digits = _trailing(body.text, lambda ch: ch in "0123456789")
            if digits < len(body.text) and _UNSIGNED_INTEGER.fullmatch(written):
                start = body.span.start + digits
                shown = text[start:weight.end]
                yield RULE.diagnostic(
                    Span(start, weight.end),
                    f"'{shown}' reads as the weight {format_number(part.weight)} of the part "
                    f"'{body.text}': a ratio or a time at the end of a part is taken for its weight",
                    hint=f"write the weight after it, `{shown} :1`, or put the ratio earlier in the part",
                    fix=f"{shown} :1",
                )
                continue
            editing = _editing(body.text)
            if editing is not None:
                start = body.span.start + editing
                shown = text[start:weight.end]
                yield RULE.diagnostic(
                    Span(start, weight.end),
                    f"'{shown}' looks like A1111 prompt editing without its brackets: it reads as the text "
                    f"'{text[start:weight.start]}' with weight {format_number(part.weight)}",
                    hint=f"for prompt editing write `[{shown}]`",
                )
