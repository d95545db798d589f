"""NP402 invalid-options: ``AND_TOPK(k=2)``, ``AND_PERP(k=0.1)``, ``AND_TOPK(k=0.1,,)``.

A parenthesis right after a keyword is an option list when it holds ``=`` (docs/language.md, "Keyword options"); a
malformed list, an unknown name, a repeated name or a value out of range is an error, in lenient
mode too. The linter reports it and goes on with the option list blanked out.
"""

from __future__ import annotations

from ...ast import Span
from ...errors import OptionError, ParseError, UnclosedOptionsError
from ..registry import rule
from ..scan import option_lists

RULE = rule("invalid-options")


def handles(err: ParseError) -> bool:
    return isinstance(err, OptionError)


def from_parse_error(err: ParseError, text: str):
    # Show the whole `name=value` item around the error (the error's span may be just the value).
    lo = max(text.rfind("(", 0, err.pos + 1), text.rfind(",", 0, err.pos)) + 1
    stops = [i for i in (text.find(",", err.pos), text.find(")", err.pos), text.find("\n", err.pos)) if i >= 0]
    item = text[lo:min(stops) if stops else len(text)].strip() or text[err.pos:err.end]
    if len(item) > 40:
        item = item[:40] + "..."
    return RULE.diagnostic(Span(err.pos, err.end), f"{err.label}: '{item}'", hint=err.hint)


def recover(text: str, err: ParseError) -> str | None:
    """Blank the option list holding the error. An unclosed list loses only its ``(``: the text
    after it is read as the part's text rather than swallowed."""
    lists = [(a, b) for a, b in option_lists(text) if a <= err.pos]
    if not lists:
        return None
    open_, end = lists[-1]
    if isinstance(err, UnclosedOptionsError):
        end = open_ + 1
    return text[:open_] + "".join("\n" if c == "\n" else " " for c in text[open_:end]) + text[end:]
