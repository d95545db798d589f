"""NP403 weight-like-text: ``hello :abc``, ``x :1 :2``, ``x :1,5``, ``x :- 1``, ``x :−1``, ``x ::-1``.

A part's weight is a trailing ``:number`` followed only by a keyword, the group's ``]`` or the
end (docs/language.md, "Weights"). Anything else that looks like one stays in the text and goes
to the text encoder, and the part keeps weight 1 (or the weight after it). This rule covers
"the number you meant is text", for colons outside A1111 brackets and extra-network tags
(``(x:1.2)``, ``[a:b:0.5]`` and ``<lora:name:0.8>`` are A1111 syntax); docs/lint.md lists the
whole class with the rule that reports each case:

- a ``:number`` that ends the text because a real weight follows it (``x :1 :2``: weight 2);
- a ``:number`` followed by more text, with a space before the colon (``:0.5 tail``, ``x :1 y``);
  glued to a word (``swing:1.2 green``) it is NP408;
- a sign apart from its number (``x :- 1``): fix ``:-1``;
- a number in look-alike characters: a Unicode minus or dash (``:−1``, ``:–1``), a full-width
  colon or digits (``：１.２``): fix in ASCII;
- a doubled colon before the weight (``x ::-1``, as Midjourney writes weights): the first ``:``
  stays in the text; fix: delete it;
- a ``:`` at the end of the text with something that is not a decimal number after it, when the
  colon has a space before it (``hello :abc``) or the thing starts like a number (``x:1_0``,
  ``x :1,5``, ``x :.5.``, ``x :-1,``); a decimal comma or a trailing ``,``/``;`` gets a fix;
- a lone ``:`` at the end of the text, with a space before it (``x :``).

Linear in the text: each colon looks at the characters up to the next colon or space once.
"""

from __future__ import annotations

import re
import unicodedata

from ...ast import Span
from ...lexical import NUMBER_RE
from ..registry import rule
from ..scan import text_parts

RULE = rule("weight-like-text")
#: Characters read as a colon by a reader, and by NFKC: ASCII, full-width, small.
COLONS = ":\uff1a\ufe55"
_TOKEN = re.compile(r"\\.|[\[\]()" + COLONS + r"]", re.S)
# A1111 extra networks (modules/extra_networks.py): `<lora:name:0.8>`, `<hypernet:name:1>`.
_EXTRA_NETWORK = re.compile(r"<\w+:[^<>\n]*>")
_NUMBER = re.compile(NUMBER_RE)
_UNSIGNED = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_AFTER = re.compile(r"\s*([^\s" + COLONS + r"]+)")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")
# Minus signs and dashes that are not ASCII '-' (NFKC keeps them): a reader sees a minus.
_MINUS_LIKE = dict.fromkeys(map(ord, "\u2212\u2010\u2011\u2012\u2013\u2014\ufe63\uff0d"), "-")
HINT = ("a weight is ':' and a decimal number in ASCII (0.5, -1, 1e-3) at the end of a part, "
        "right before a keyword, the group's ']' or the end")


def colons(text: str) -> list[int]:
    """Offsets of the colons (and full-width colons) outside A1111 brackets and extra-network tags
    (``<lora:name:0.8>``), escapes honoured. A bracket may be half in another part
    (``(red AND blue:1.2)`` splits into ``(red`` and ``blue:1.2)``), so a colon counts only if no
    bracket is open before it and no unmatched closer follows it."""
    tags = {m.start() + i for m in _EXTRA_NETWORK.finditer(text) for i, ch in enumerate(m.group()) if ch == ":"}
    tokens = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
    inside: set[int] = set(tags)
    depth = 0
    for pos, t in tokens:
        if t in "[(":
            depth += 1
        elif t in "])":
            depth = max(0, depth - 1)
        elif t in COLONS and depth:
            inside.add(pos)
    depth = 0
    for pos, t in reversed(tokens):
        if t in "])":
            depth += 1
        elif t in "[(":
            depth = max(0, depth - 1)
        elif t in COLONS and depth:
            inside.add(pos)
    return [pos for pos, t in tokens if t in COLONS and pos not in inside]


def ascii_number(token: str) -> str | None:
    """``token`` as the ASCII number a reader sees in it (``−1`` -> ``-1``, ``１.２`` -> ``1.2``),
    when it is one only after folding look-alike characters; else ``None``."""
    folded = unicodedata.normalize("NFKC", token).translate(_MINUS_LIKE)
    return folded if folded != token and _NUMBER.fullmatch(folded) else None


def _finding(text: str, c: int, last: int, tail: int):
    """(end offset in text, message, fix) for the colon at ``c``, or None. ``last``: the offset of
    the last non-space character of ``text``; ``tail``: the offset of the first colon after the last
    character that is neither a colon nor a space (a run of colons at the end is reported once)."""
    spaced = c == 0 or text[c - 1].isspace()
    colon = text[c]
    m = _AFTER.match(text, c + 1)
    if m is None:
        if spaced and c == tail and (c > 0 or last > 0):
            shown = text[c:last + 1] if last - c < 30 else text[c:c + 30] + "..."
            return last + 1, f"'{shown}' with no number after it is text, not a weight", None
        return None
    token, end = m.group(1), m.end(1)
    at_end = end > last
    shown = text[c:end]
    if colon != ":" or not token.isascii():
        folded = ascii_number(token) if token.isascii() is False else token
        if folded is not None and _NUMBER.fullmatch(folded) and at_end:
            odd = "".join(ch for ch in colon + token if not ch.isascii())[:1]
            name = unicodedata.name(odd, f"U+{ord(odd):04X}")
            return end, (f"'{shown}' is text, not a weight: '{odd}' ({name}) is not the ASCII character "
                         "a weight is written with"), ":" + folded
        if colon != ":":
            return None
    number = _NUMBER.fullmatch(token) is not None
    if token in "+-" and not at_end:
        n = re.compile(r"\s+(" + _UNSIGNED.pattern + r")(?=\s*$)").match(text, end)
        if n is not None:
            return n.end(1), (f"'{text[c:n.end(1)]}' is text, not a weight: a space between the sign and the "
                              f"number; the part keeps weight 1"), f":{token}{n.group(1)}"
    if number and at_end:
        if c > 0 and text[c - 1].isdigit():
            return None  # `16:9 :1`: a ratio kept as text on purpose (NP407's fix)
        return end, f"'{shown}' stays text: only the last ':number' of a part is its weight", None
    if number and spaced:
        return end, f"'{shown}' is text, not a weight: only a keyword, ']' or the end may follow a weight", None
    if not at_end:
        return None
    numeric = token[0] in "+-.0123456789" and (c == 0 or not text[c - 1].isdigit())
    if not (spaced or numeric) or token[0] in "([<" or "\\" in token:  # an escape is deliberate text
        return None
    fix = None
    if _DECIMAL_COMMA.fullmatch(token):
        fix = text[c:m.start(1)] + token.replace(",", ".")
    elif _NUMBER.fullmatch(token.rstrip(",;")):
        fix = text[c:m.start(1)] + token.rstrip(",;")
    return end, f"'{shown}' is text, not a weight: '{token}' is not a decimal number", fix


def check(ctx):
    if ctx.prompt is None:
        return
    for part, text, base in text_parts(ctx.prompt):
        stripped = text.rstrip()
        if part.weight_span is not None and stripped.endswith(":") and stripped[-2:-1] not in ("\\", ":") \
                and not stripped[-2:-1].isdigit():  # `0::1` would become the ratio `0:1`
            # `x ::-1`: the weight is the last colon; the one before it stays in the text.
            c = len(stripped) - 1
            yield RULE.diagnostic(
                Span(base + c, base + c + 1),
                f"the first ':' of '::' stays in the text: the weight {ctx.text[part.weight_span.start + 1:part.weight_span.end].strip()} "
                "takes only the last one",
                hint=HINT, fix="",
            )
            text = text[:c]
        last = len(text.rstrip()) - 1
        tail = len(text.rstrip(" \t\n\r\f\v" + COLONS))
        while tail < len(text) and text[tail] not in COLONS:
            tail += 1
        for c in colons(text):
            found = _finding(text, c, last, tail)
            if found is None:
                continue
            end, message, fix = found
            if part.weight_span is not None:
                fix = None  # a weight follows: fixed, this would be text that looks like a weight
            yield RULE.diagnostic(Span(base + c, base + end), message, hint=HINT, fix=fix)
