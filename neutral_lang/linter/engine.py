"""``lint(text)``: parse leniently (recovering from errors), run every selected rule, never raise.

The flow:

1. Parse. A ``ParseError`` (a ``nan`` weight, a bad option list) becomes an error diagnostic from
   the rule that claims its class; non-finite weights are all reported in one pass (the rule's
   ``replacement`` is read in their place); after any other error the offending characters are blanked out, offsets kept,
   and parsing is retried, so one run reports every error and still lints the rest of the prompt.
2. Run the rules: each rule module's ``check(ctx)`` yields diagnostics; ``ctx.prompt`` is the
   AST (``None`` when the prompt could not be read at all, and then only text rules run).
3. Filter by ``select``/``ignore``, sort by position, drop exact duplicates.

A rule that raises becomes an ``NP001`` internal-error diagnostic naming the rule; the others
still run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Iterable

from ..ast import Prompt
from ..errors import ParseError
from ..parser import parse_recovering
from .diagnostic import Diagnostic
from .registry import RULES, resolve

__all__ = ["lint", "Context"]

# At most this many parse errors are recovered from in one prompt; the rest go unreported.
_MAX_RECOVERIES = 100


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule sees: the text as given, and its AST (``None`` if it could not be read).

    The AST comes from the text with unreadable characters blanked (same length), so its spans
    are offsets into ``text``.
    """

    text: str
    prompt: Prompt | None


def _modules():
    return {code: importlib.import_module(r.module) for code, r in RULES.items()}


def _internal(where: str, exc: BaseException, text: str) -> Diagnostic:
    from .rules import internal_error

    return internal_error.diagnostic(where, exc, text)


def _read(text: str, modules) -> tuple[Prompt | None, list[Diagnostic]]:
    """Parse leniently; turn each ParseError into a diagnostic and retry on repaired text."""
    # NP002 is the catch-all: every other handler gets the error first.
    fallback = modules["NP002"]
    handlers = [m for m in modules.values() if hasattr(m, "from_parse_error") and m is not fallback]
    found: list[Diagnostic] = []
    current = text

    def claim(err: ParseError):
        return next((handler for handler in handlers if handler.handles(err)), fallback)

    def on_nonfinite(err: ParseError) -> str:
        # Every non-finite weight of one reading is reported in the same pass (a re-parse per
        # weight made `"a:nan AND " * 10**5` take a minute): the rule says what to read instead.
        handler = claim(err)
        replacement = getattr(handler, "replacement", None)
        if replacement is None:
            raise err
        found.append(handler.from_parse_error(err, text))
        return replacement(err)

    for _ in range(_MAX_RECOVERIES):
        try:
            return parse_recovering(current, on_nonfinite), found
        except ParseError as err:
            handler = claim(err)
            # Report against the original text: recovery keeps every offset.
            found.append(handler.from_parse_error(err, text))
            repaired = handler.recover(current, err)
            if repaired is None or repaired == current or len(repaired) != len(current):
                return None, found
            current = repaired
    return None, found


def lint(text: str, *, select: str | Iterable[str] | None = None,
         ignore: str | Iterable[str] | None = None) -> list[Diagnostic]:
    """Diagnostics for a prompt, sorted by position.

    ``select``/``ignore``: codes or prefixes (``"NP3"``, ``"NP301,NP404"``, ``["NP1"]``, ``"ALL"``).
    With no ``select`` the default rules run (every rule but the opt-in ``NP107`` cost). Never
    raises on any ``str``: unreadable prompts give error diagnostics, a failing rule gives
    ``NP001``. Raises ``TypeError`` for a non-``str`` text and ``ValueError`` for a selector that
    matches no rule (programming errors, not prompt problems).
    """
    if not isinstance(text, str):
        raise TypeError(f"lint() takes a str, not {type(text).__name__}")
    wanted = resolve(select, ignore)
    out: list[Diagnostic] = []
    try:
        modules = _modules()
        prompt, out = _read(text, modules)
        ctx = Context(text, prompt)
        for code, module in modules.items():
            check = getattr(module, "check", None)
            if check is None or code not in wanted:
                continue
            try:
                out.extend(check(ctx))
            except Exception as exc:  # a bug in one rule must not hide the others
                out.append(_internal(f"rule {code} ({RULES[code].name})", exc, text))
    except Exception as exc:
        out.append(_internal("the linter", exc, text))
    return _finish(out, wanted)


def _finish(found: list[Diagnostic], wanted: frozenset[str]) -> list[Diagnostic]:
    seen: set[Diagnostic] = set()
    result = []
    for d in sorted(found, key=lambda d: (d.span.start, d.span.end, d.code, d.message)):
        if d.code in wanted and d not in seen:
            seen.add(d)
            result.append(d)
    return result
