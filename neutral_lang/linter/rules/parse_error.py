"""NP002 parse-error: a ParseError no more specific rule claims (the catch-all).

The lenient parser only raises for weights and option lists (NP401, NP402), so this fires only
if the parser learns new errors before the linter does. There is no way past such an error:
only the rules that read the text alone run after it.
"""

from __future__ import annotations

from ...ast import Span
from ...errors import ParseError
from ..registry import rule

RULE = rule("parse-error")


def handles(err: ParseError) -> bool:
    return True


def from_parse_error(err: ParseError, text: str):
    return RULE.diagnostic(Span(err.pos, err.end), err.label, hint=err.hint)


def recover(text: str, err: ParseError) -> str | None:
    return None
