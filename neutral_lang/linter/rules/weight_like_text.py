"""NP403 weight-like-text: ``hello :abc``, ``x :1 :2``, ``x :1_0``, ``x :1,5``, ``[a AND b] :0.5 tail``.

A part's weight is a trailing ``:number`` followed only by a keyword, the group's ``]`` or the
end (docs/language.md). Anything else that looks like one stays in the text and goes to the text
encoder, and the part keeps weight 1 (or the weight after it). Flagged, for colons outside A1111
brackets (``(x:1.2)`` and ``[a:b:0.5]`` are A1111 syntax):

- a ``:number`` that ends the text because a real weight follows it (``x :1 :2``: weight 2);
- a ``:number`` followed by more text (``:0.5 tail``, ``x :1 y``);
- a ``:`` at the end of the text with something that is not a decimal number after it, when the
  colon has a space before it (``hello :abc``) or the thing starts like a number (``x:1_0``,
  ``x :1,5``, ``x :.5.``); a decimal comma gets a fix (``:1.5``);
- a lone ``:`` at the end of the text, with a space before it (``x :``).
"""

from __future__ import annotations

import re
from bisect import bisect_right

from ...ast import Leaf, Span
from ...lexical import NUMBER_RE
from ..registry import rule
from ..scan import prompts

RULE = rule("weight-like-text")
_TOKEN = re.compile(r"\\.|[\[\]():]", re.S)
_NUMBER = re.compile(NUMBER_RE)
_RUN = re.compile(r"\S+")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")


def _colons(text: str):
    """Offsets of the colons outside brackets, escapes honoured. A bracket may be half in another
    part (``(red AND blue:1.2)`` splits into ``(red`` and ``blue:1.2)``), so a colon counts only if
    no bracket is open before it and no unmatched closer follows it."""
    tokens = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
    inside: set[int] = set()
    depth = 0
    for pos, t in tokens:
        if t in "[(":
            depth += 1
        elif t in "])":
            depth = max(0, depth - 1)
        elif t == ":" and depth:
            inside.add(pos)
    depth = 0
    for pos, t in reversed(tokens):
        if t in "])":
            depth += 1
        elif t in "[(":
            depth = max(0, depth - 1)
        elif t == ":" and depth:
            inside.add(pos)
    return [pos for pos, t in tokens if t == ":" and pos not in inside]


def _finding(text: str, c: int, runs: tuple[list[int], list[int]]):
    """(end offset in text, message, fix) for the colon at ``c``, or None. ``runs`` holds the starts
    and ends of the text's non-space runs: the word after each colon is found by bisection, so a run
    of colons costs O(n log n), not O(n^2) (issue 14)."""
    spaced = c == 0 or text[c - 1].isspace()
    starts, ends = runs
    k = bisect_right(ends, c + 1)  # the first run that holds something after the colon
    if k == len(ends):
        if spaced and c > 0:
            return len(text), "':' with no number after it is text, not a weight", None
        return None
    token_start, end = max(c + 1, starts[k]), ends[k]
    # The word after the colon is sliced out only for a message: on a run of colons it is the
    # rest of the run, and copying it for every colon would be quadratic.
    at_end = k == len(ends) - 1
    number = _NUMBER.fullmatch(text, token_start, end) is not None
    if number and at_end:
        return end, f"'{text[c:end]}' stays text: only the last ':number' of a part is its weight", None
    if number and spaced:
        return end, f"'{text[c:end]}' is text, not a weight: only a keyword, ']' or the end may follow a weight", None
    if not at_end:
        return None
    first = text[token_start]
    numeric = first in "+-.0123456789" and (c == 0 or not text[c - 1].isdigit())
    if not (spaced or numeric) or first in "([":
        return None
    token = text[token_start:end]
    fix = None
    if _DECIMAL_COMMA.fullmatch(token):
        fix = text[c:token_start] + token.replace(",", ".")
    return end, f"'{text[c:end]}' is text, not a weight: '{token}' is not a decimal number", fix


def check(ctx):
    if ctx.prompt is None:
        return
    for _, prompt in prompts(ctx.prompt):
        for part in prompt.parts:
            if not isinstance(part.body, Leaf) or not part.body.text:
                continue
            text, base = part.body.text, part.body.span.start
            runs = None
            for c in _colons(text):
                if runs is None:
                    found_runs = [m.span() for m in _RUN.finditer(text)]
                    runs = ([a for a, _ in found_runs], [b for _, b in found_runs])
                found = _finding(text, c, runs)
                if found is None:
                    continue
                end, message, fix = found
                yield RULE.diagnostic(
                    Span(base + c, base + end),
                    message,
                    hint="a weight is ':' and a decimal number (0.5, -1, 1e-3) at the end of a part, "
                    "right before a keyword, the group's ']' or the end",
                    fix=fix,
                )
