"""Errors for people: what is wrong, where (line, column, caret), and what to write instead.

Each kind of parse error is a subclass of :class:`ParseError`, so that callers (the linter, the
CLI) recognise it by class, never by its message.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache


@lru_cache(maxsize=8)
def _line_starts(text: str) -> tuple[int, ...]:
    """Offsets where the lines of ``text`` start: built once per text, so that each of many
    positions in one long text costs O(log n), not O(n) (issue 14)."""
    return (0, *(m.end() for m in _NEWLINE.finditer(text)))


_NEWLINE = re.compile("\n")


def _line_of(text: str, pos: int) -> tuple[int, int, int]:
    """0-based line index of ``pos``, and the offsets where that line starts and ends (before its newline)."""
    starts = _line_starts(text)
    i = bisect_right(starts, pos) - 1
    end = starts[i + 1] - 1 if i + 1 < len(starts) else len(text)
    return i, starts[i], end


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character offset ``pos`` in ``text``."""
    pos = max(0, min(pos, len(text)))
    i, start, _ = _line_of(text, pos)
    return i + 1, pos - start + 1


def caret_excerpt(text: str, pos: int, end: int | None = None, *, width: int = 72) -> str:
    """The source line holding ``pos`` with a caret under ``pos`` (and tildes up to ``end``).

    Long lines are cut to a window of ``width`` characters around the position, so a caret under
    a 10^6-character prompt stays readable.
    """
    pos = max(0, min(pos, len(text)))
    _, line_start, line_end = _line_of(text, pos)
    lo = max(line_start, pos - width // 2)
    hi = min(line_end, lo + width)
    prefix = "..." if lo > line_start else ""
    suffix = "..." if hi < line_end else ""
    shown = text[lo:hi].replace("\t", " ")
    stop = pos + 1 if end is None else max(pos + 1, min(end, hi))
    # Padded in display cells, so the caret sits under a character after wide (CJK) text.
    from .cells import cell_width

    marker = "^" + "~" * max(0, cell_width(text[pos:stop]) - 1)
    return f"{prefix}{shown}{suffix}\n{' ' * (len(prefix) + cell_width(text[lo:pos]))}{marker}"


class ParseError(ValueError):
    """A prompt that cannot be read. Carries ``line``, ``column`` (1-based), ``pos`` (0-based
    offset), ``end``, a short ``label``, a ``hint`` of what to write instead, and a caret excerpt.
    """

    def __init__(self, label: str, text: str, pos: int, end: int | None = None, *, hint: str = ""):
        self.label = label
        self.text = text
        self.pos = pos
        self.end = pos + 1 if end is None else end
        self.hint = hint
        self.line, self.column = line_col(text, pos)
        self.excerpt = caret_excerpt(text, pos, self.end)
        message = f"{label} at line {self.line}, column {self.column}\n{self.excerpt}"
        if hint:
            message += f"\nhint: {hint}"
        super().__init__(message)


class NonFiniteWeightError(ParseError):
    """A weight that is ``nan``, ``inf`` or overflows to infinity (``x :1e999``)."""


class OptionError(ParseError):
    """A keyword option list that cannot be read (docs/language.md, "Keyword options")."""


class MalformedOptionsError(OptionError):
    """An option list that is not ``name=number`` pairs separated by commas: ``AND_TOPK(k=0.1,,)``."""


class UnclosedOptionsError(OptionError):
    """An option list with no ``)``: ``AND_TOPK(k=0.1 glasses``."""


class UnknownOptionError(OptionError):
    """An option the keyword does not take: ``AND_PERP(k=0.1)``."""


class DuplicateOptionError(OptionError):
    """An option given twice: ``AND_TOPK(k=0.1, k=0.2)``."""


class OptionRangeError(OptionError):
    """An option value outside its valid range: ``AND_TOPK(k=2)``."""


class UnbalancedBracketError(ParseError):
    """An unmatched ``[``, ``]``, ``(`` or ``)`` (only ``parse(text, strict=True)`` raises it)."""
