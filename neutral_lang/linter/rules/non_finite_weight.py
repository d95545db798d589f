"""NP401 non-finite-weight: ``x :nan``, ``x :inf``, ``x :1e999``.

The original extension read any ``float()`` as a weight, so ``nan`` and ``inf`` went through and
turned the whole image into NaN. Here they are a parse error; the linter reports it and goes on
as if the weight were 1.
"""

from __future__ import annotations

from ...ast import Span
from ...errors import NonFiniteWeightError, ParseError
from ..registry import rule

RULE = rule("non-finite-weight")


def handles(err: ParseError) -> bool:
    return isinstance(err, NonFiniteWeightError)


def from_parse_error(err: ParseError, text: str):
    bad = text[err.pos:err.end]
    return RULE.diagnostic(
        Span(err.pos, err.end),
        f"non-finite weight '{bad}': the original would turn the whole image into NaN",
        hint=err.hint,
    )


def replacement(err: ParseError) -> str:
    """What to read in place of the weight: the weight 1 written with as many characters, which
    keeps every offset: "nan" -> "001". (Not "111...": 400 ones overflow to infinity too.)"""
    return "1".rjust(err.end - err.pos, "0")


def recover(text: str, err: ParseError) -> str:
    return text[:err.pos] + replacement(err) + text[err.end:]
