"""The keywords of the language and their options: the one table every stage reads.

A keyword joins a part to its siblings (docs/language.md, "Keywords"); a keyword may take options
in parentheses right after it (docs/language.md, "Keyword options"). This module says, once:

- which keywords exist (:data:`KEYWORDS`, and the :class:`Keyword` enum built from it), the
  IR operator each lowers to (``op``, a name of ``ir.Op``), and the regex that finds them;
- which options each keyword takes, their defaults, valid ranges and the canonical order the
  formatter writes them in (:data:`OPTION_ORDER`).

The parser, the formatter, lowering and the IR defaults, the linter's scanners, the hypothesis
strategies and the reference oracle read these rows; adding a keyword starts with a row here
(docs/architecture.md, "Add a keyword"). No torch, no Lark: imported by everything.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

__all__ = [
    "OptionSpec", "KeywordSpec", "KEYWORDS", "WINDOW_OPTIONS", "is_fraction", "Keyword", "SPECS", "OPTION_ORDER", "OPTION_DEFAULTS",
    "KEYWORD_PATTERN", "KEYWORD_RE", "spec",
]


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One keyword option: its name, default, valid range and how to describe the range to a user.

    A value ``v`` is valid when ``lo <= v <= hi`` (``<`` on a side marked open), it is finite, and
    it is a whole number when ``integer`` is set. ``window`` marks ``start``/``end``, whose spelling
    carries meaning: ``2`` is a step index, ``0.2`` a fraction of the steps (docs/language.md).
    """

    name: str
    default: float | None
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    window: bool = False
    describe: str = ""

    def accepts(self, value: float, text: str) -> bool:
        """Whether ``value`` (spelt ``text``) is a valid value of this option."""
        if not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        if not (above and below):
            return False
        if self.window:  # a fraction lies in [0, 1]; a step index is a whole number
            return value <= 1.0 if is_fraction(text) else value == int(value)
        return True


def is_fraction(text: str) -> bool:
    """Whether a ``start``/``end`` value is spelt as a fraction of the steps (``0.2``, ``1.``, ``2e-1``)
    rather than a step index (``2``)."""
    return "." in text or "e" in text.lower()


_WINDOW_DESCRIBE = "a step index (0, 1, 2, ...) or a fraction of the steps in [0, 1]"
_START = OptionSpec("start", None, 0.0, math.inf, window=True, describe=_WINDOW_DESCRIBE)
_END = OptionSpec("end", None, 0.0, math.inf, window=True, describe=_WINDOW_DESCRIBE)


@dataclass(frozen=True, slots=True)
class KeywordSpec:
    """One keyword: its spelling, the ``ir.Op`` it lowers to, and the options it takes (in the
    canonical order)."""

    name: str
    op: str
    options: tuple[OptionSpec, ...]
    summary: str

    def option(self, name: str) -> OptionSpec | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None

    @property
    def example(self) -> str:
        """An option list to show in hints, e.g. ``AND_TOPK(k=0.1, start=0.2)``."""
        extra = [f"{o.name}=0.1" for o in self.options if not o.window][:1]
        return f"{self.name}({', '.join(extra + ['start=0.2'])})"


#: Every keyword, ``AND`` first (it is the implicit keyword of a first part and of text after a group).
KEYWORDS: tuple[KeywordSpec, ...] = (
    KeywordSpec("AND", "AND", (_START, _END), "adds its guidance (composable diffusion)"),
    KeywordSpec("AND_PERP", "PERP", (_START, _END),
                "adds the part of its guidance orthogonal to its AND siblings (Perp-Neg)"),
    KeywordSpec("AND_SALT", "SALT", (_START, _END),
                "takes over the latent pixels where it is more salient than its AND siblings"),
    KeywordSpec("AND_TOPK", "TOPK", (
        _START, _END,
        OptionSpec("k", 0.05, 0.0, 1.0, lo_open=True, describe="a fraction in (0, 1], e.g. k=0.05"),
        OptionSpec("per_channel", 0.0, 0.0, 1.0, integer=True, describe="0 or 1"),
        OptionSpec("momentum", 0.0, 0.0, math.inf, hi_open=True, describe="a number >= 0"),
        OptionSpec("beta", 0.4, 0.0, 1.0, hi_open=True, describe="a number in [0, 1)"),
    ), "adds only the strongest k of its guidance by magnitude (SEGA-style)"),
)


class _KeywordEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


#: The keywords as an enum (``Keyword.AND_PERP``), one member per row of :data:`KEYWORDS`.
Keyword = _KeywordEnum("Keyword", [(k.name, k.name) for k in KEYWORDS], module=__name__, qualname="Keyword")
Keyword.__doc__ = "The part keywords. ``AND`` composes; the others conciliate with their siblings."

#: Each keyword's row, by name and by enum member.
SPECS: dict[str, KeywordSpec] = {k.name: k for k in KEYWORDS}


def spec(keyword: str | Keyword) -> KeywordSpec:
    """The row of ``keyword`` (a name or a :class:`Keyword`); ``KeyError`` for an unknown one."""
    return SPECS[keyword.value if isinstance(keyword, Keyword) else keyword]


#: The order the formatter writes options in (every option name of every keyword, first seen first).
OPTION_ORDER: tuple[str, ...] = tuple(dict.fromkeys(o.name for k in KEYWORDS for o in k.options))

#: Options whose spelling carries meaning: a step index (``2``) or a fraction of the steps (``0.2``).
WINDOW_OPTIONS: frozenset[str] = frozenset(o.name for k in KEYWORDS for o in k.options if o.window)

#: Default value of every option that has one (``start``/``end`` have none: the whole run).
OPTION_DEFAULTS: dict[str, float] = {
    o.name: o.default for k in KEYWORDS for o in k.options if o.default is not None
}

#: A keyword where the text splits: a whole word, case-sensitive (``\b`` is Python's Unicode word
#: boundary, as in the original extension). Longest spelling first.
KEYWORD_PATTERN = r"\b(" + "|".join(
    re.escape(k.name) for k in sorted(KEYWORDS, key=lambda k: -len(k.name))) + r")\b"
KEYWORD_RE = re.compile(KEYWORD_PATTERN)
