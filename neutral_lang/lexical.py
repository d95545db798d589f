"""Lexical facts of the language, each written once: numbers and their canonical text, keyword
option lists, bracket pairing as A1111 pairs brackets, and the weight-like tail of a text.

The parser, the strict check, the linter, the formatter, the IR's printing and the testing kit
import these; none of them keeps its own copy (docs/language.md). Every scan here is linear in
the length of the text, whatever its shape (docs/reliability.md). No torch, no Lark.
"""

from __future__ import annotations

import math

import re
from dataclasses import dataclass
from functools import lru_cache

from .keywords import KEYWORD_RE

__all__ = [
    "NUMBER_RE", "NUMBER", "NONFINITE", "format_number", "option_lists", "Brackets", "scan_brackets",
    "WEIGHT_LIKE_TAIL", "has_weight_like_tail",
]

#: A weight or option value: a decimal number with optional sign, fraction and exponent
#: (docs/language.md, "Weights"): ``1``, ``-0.5``, ``+.4``, ``2.``, ``1e-3``. The integer digits and
#: the fraction cannot trade digits (``[0-9]+(?:\.[0-9]*)?``, not ``[0-9]+\.?[0-9]*``): a long digit
#: run that fails to match then backtracks in linear, not quadratic, time.
NUMBER_RE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER = re.compile(NUMBER_RE)
#: What Python's ``float()`` also reads as a number but is never a weight: ``nan``, ``-inf``, ``Infinity``.
NONFINITE = re.compile(r"[+-]?(?:nan|inf(?:inity)?)", re.IGNORECASE)


def format_number(value: float) -> str:
    """The shortest text that reads back as ``value``: ``-1``, ``0.4``, ``1e-05``, ``1e+16``.

    Whole numbers below 10^16 print without a fraction (every such float is exact); the rest
    print as Python's shortest round-trip ``repr``. The formatter, the IR's dump and the CLI
    print weights with it, so they agree.

    Raises ``ValueError`` for nan and infinities: the language has no spelling for them
    (docs/language.md, "Weights"), so a tree holding one (built in code) has no text.
    """
    if not math.isfinite(value):
        raise ValueError(f"weight {value!r} is not finite: a weight is a finite decimal number, such as 0.5 or -1")
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


# ---------------------------------------------------------------------------------------------
# Keyword option lists


def option_lists(text: str) -> tuple[tuple[int, int], ...]:
    """``(open, end)`` of every keyword option list: a ``(`` written directly after a keyword whose
    content, up to the first ``)``, holds ``=`` (docs/language.md, "Keyword options"). ``end`` is
    just after the ``)``, or ``len(text)`` when the list is unclosed. A keyword inside an option
    list is not a keyword. Linear: the next ``)`` and ``=`` are found once for a run of keywords.
    """
    out: list[tuple[int, int]] = []
    n = len(text)
    close = equals = -2  # cached positions of the next ')' and '=' (-1: none left; -2: not looked yet)
    after = 0  # keywords before this offset lie inside an option list
    for m in KEYWORD_RE.finditer(text):
        open_ = m.end()
        if m.start() < after or open_ >= n or text[open_] != "(":
            continue
        if close != -1 and close < open_:
            close = text.find(")", open_)
        end = n if close < 0 else close
        if equals != -1 and equals < open_:
            equals = text.find("=", open_)
        if 0 <= equals < end:
            after = n if close < 0 else close + 1
            out.append((open_, after))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Brackets

# Escapes first, so that `\(` is never a bracket.
_BRACKET_RE = re.compile(r"\\.|[\[\]()]", re.S)
_OPENER_OF = {"]": "[", ")": "("}


@dataclass(frozen=True, slots=True)
class Brackets:
    """The A1111 brackets of a text: matched pairs ``(open, close, char)`` and unmatched ones
    ``(pos, char)``, both sorted by position. Square and round brackets pair separately, each
    with its own stack, as A1111's ``parse_prompt_attention`` pairs them; escapes (``\\[``) and
    keyword option lists are not brackets."""

    pairs: tuple[tuple[int, int, str], ...]
    unmatched: tuple[tuple[int, str], ...]


@lru_cache(maxsize=4)  # strict parsing and two lint rules scan the same text; results are immutable
def scan_brackets(text: str) -> Brackets:
    """Pair the ``[ ]`` and ``( )`` of ``text`` as A1111 does. Strict parsing raises for the first
    of ``unmatched``; the linter reports each of them (NP201)."""
    skip = option_lists(text)
    stacks: dict[str, list[int]] = {"[": [], "(": []}
    pairs: list[tuple[int, int, str]] = []
    unmatched: list[tuple[int, str]] = []
    k = 0
    for m in _BRACKET_RE.finditer(text):
        ch = m.group()
        if len(ch) != 1:
            continue
        pos = m.start()
        while k < len(skip) and skip[k][1] <= pos:
            k += 1
        if k < len(skip) and skip[k][0] <= pos:
            continue
        if ch in stacks:
            stacks[ch].append(pos)
        else:
            stack = stacks[_OPENER_OF[ch]]
            if stack:
                pairs.append((stack.pop(), pos, _OPENER_OF[ch]))
            else:
                unmatched.append((pos, ch))
    for ch, stack in stacks.items():
        unmatched.extend((pos, ch) for pos in stack)
    pairs.sort()
    unmatched.sort()
    return Brackets(tuple(pairs), tuple(unmatched))


# ---------------------------------------------------------------------------------------------
# The weight-like tail

#: Text whose end the parser would read as a weight (or reject as a non-finite one) if nothing
#: followed it: ``x :1``, ``x : -2.5 ``, ``x :nan``. Such a text keeps its tail only when a real
#: weight follows it (``x :1 :2``), so the formatter writes the weight even when it is 1.
WEIGHT_LIKE_TAIL = re.compile(r":\s*(?:" + NUMBER_RE + r"|" + NONFINITE.pattern + r")\s*$", re.IGNORECASE)


def has_weight_like_tail(text: str) -> bool:
    """Whether ``text`` ends in ``:`` and a number (finite or not), give or take whitespace.

    Linear: only the characters after the last ``:`` are looked at (a number holds no ``:``)."""
    colon = text.rfind(":")
    return colon >= 0 and WEIGHT_LIKE_TAIL.match(text, colon) is not None
