"""Display cells: how wide text is on a terminal, so that a caret sits under its character.

East Asian wide and full-width characters (``城``, ``Ａ``) take two cells, combining marks and
zero-width characters none, everything else one (Unicode Standard Annex #11, "East Asian Width",
as terminals apply it; the same rule as ``wcwidth`` for the characters prompts hold). Used by the
caret excerpts of parse errors and lint diagnostics (``errors.caret_excerpt``) and by the columns
the command line prints (``file:line:column``, in cells, like GCC's default
``-fdiagnostics-column-unit=display``).
"""

from __future__ import annotations

import unicodedata

__all__ = ["char_width", "cell_width", "display_column"]

_ZERO_WIDTH_CATEGORIES = frozenset({"Mn", "Me", "Cf"})


def char_width(ch: str) -> int:
    """Cells one character takes: 2 for East Asian wide or full-width (``W``, ``F``), 0 for a
    combining mark, an enclosing mark or a format character (zero-width joiner), else 1."""
    if ch.isascii():
        return 1
    if unicodedata.category(ch) in _ZERO_WIDTH_CATEGORIES:
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Cells ``text`` takes on one line (tabs count 1: excerpts show them as a space)."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def display_column(text: str, pos: int) -> int:
    """1-based display column of character offset ``pos``: one more than the cells taken by the
    characters before it on its line."""
    pos = max(0, min(pos, len(text)))
    return cell_width(text[text.rfind("\n", 0, pos) + 1:pos]) + 1
