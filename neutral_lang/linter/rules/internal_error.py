"""NP001 internal-error: the linter itself failed. Not a check: the engine reports through it."""

from __future__ import annotations

from ...ast import Span
from ..registry import rule

RULE = rule("internal-error")


def diagnostic(where: str, exc: BaseException, text: str):
    return RULE.diagnostic(
        Span(0, len(text)),
        f"internal error in {where}: {type(exc).__name__}: {exc}",
        hint="this is a bug in neutral-lang, not in the prompt; please report it with the prompt",
    )
