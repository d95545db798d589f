"""``lint(text)``: parse leniently (recovering from errors), run every selected rule, never raise.

The flow:

1. Parse. A ``ParseError`` (a ``nan`` weight, a bad option list) becomes an error diagnostic from
   the rule that claims its class; non-finite weights are all reported in one pass (the rule's
   ``replacement`` is read in their place); after any other error the offending characters are blanked out, offsets kept,
   and parsing is retried, so one run reports every error and still lints the rest of the prompt.
2. Run the rules: each rule module's ``check(ctx)`` yields diagnostics; ``ctx.prompt`` is the
   AST (``None`` when the prompt could not be read at all, and then only text rules run).
3. Withhold fixes that would break a bracket pair reaching outside their span, and contradicting fixes: a fix is dropped when a diagnostic of higher priority overlaps it
   (see :func:`_withhold_conflicts`), so the fixes of one result never overlap and never undo
   what another diagnostic asks for. The fix shows again once the other problem is fixed.
4. Filter by ``select``/``ignore``, sort by position, drop exact duplicates.

Every rule runs whatever ``select`` says, so that a fix does not depend on which codes are shown.

A rule that raises becomes an ``NP001`` internal-error diagnostic naming the rule; the others
still run.
"""

from __future__ import annotations

import bisect
import dataclasses
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
            if check is None:
                continue
            try:
                out.extend(check(ctx))
            except Exception as exc:  # a bug in one rule must not hide the others
                out.append(_internal(f"rule {code} ({RULES[code].name})", exc, text))
    except Exception as exc:
        out.append(_internal("the linter", exc, text))
    return _finish(out, wanted, text)


# Which fix wins where two diagnostics overlap: keywords first (they decide where parts split),
# then weights and options, then brackets, then parts; earlier in the text first within a family.
_FAMILY_RANK = {"3": 0, "4": 1, "2": 2, "1": 3}


def _priority(d: Diagnostic) -> tuple:
    return (_FAMILY_RANK.get(d.code[2:3], 4), d.span.start, d.span.end, d.code, d.message)


def _interval(span) -> tuple[int, int]:
    # Doubled offsets, so that an empty span (an insertion point) still overlaps the span around it.
    return 2 * span.start, max(2 * span.end, 2 * span.start + 1)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _hits(union: list[tuple[int, int]], lo: int, hi: int) -> bool:
    i = bisect.bisect_right(union, (lo, float("inf")))
    # The interval starting at or before `lo` may reach past it; the next one may start before `hi`.
    return (i > 0 and union[i - 1][1] > lo) or (i < len(union) and union[i][0] < hi)


def _withhold_conflicts(found: list[Diagnostic]) -> list[Diagnostic]:
    """Drop each fix that a higher-priority warning or error overlaps (:func:`_priority`).

    Two such diagnostics would ask for contradicting edits: ``[a AND b]] tail`` is an unmatched
    ``]`` (remove it, NP201) inside text after a group (make its ``AND`` explicit, keeping the
    ``]``, NP104); a zero-weight part (delete it, NP404) may hold a misspelt keyword that, once
    fixed, moves the weight to a different part (NP301). Info diagnostics (cost, nesting) block
    nothing. O(n log n): per family, a running maximum finds the earlier diagnostics of the
    family, and the merged spans of the families before it, searched by bisection, the others.
    """
    families: dict[int, list[Diagnostic]] = {}
    for d in found:
        if d.severity != "info":
            families.setdefault(_priority(d)[0], []).append(d)
    union: list[tuple[int, int]] = []
    withheld: set[int] = set()
    for rank in sorted(families):
        family = sorted(families[rank], key=_priority)
        reach = -1
        for d in family:
            lo, hi = _interval(d.span)
            if d.fix is not None and (reach > lo or _hits(union, lo, hi)):
                withheld.add(id(d))
            reach = max(reach, hi)
        union = _merge(union + [_interval(d.span) for d in family])
    if not withheld:
        return found
    return [dataclasses.replace(d, fix=None) if id(d) in withheld else d for d in found]


# A fix whose span holds more brackets than this is withheld rather than checked (stays linear).
_MAX_FIX_BRACKETS = 64


def _withhold_bracket_breakers(found: list[Diagnostic], text: str) -> list[Diagnostic]:
    """Drop each fix that deletes or rewrites a bracket paired with one outside its span: deleting
    the part ``AND]:0`` of ``0[AND]:0`` would leave its ``[`` unclosed (NP201)."""
    from .scan import scan_brackets

    fixes = [d for d in found if d.fix is not None]
    if not fixes:
        return found
    brackets = scan_brackets(text)
    partner: dict[int, int] = {}
    for open_, close, _ in brackets.pairs:
        partner[open_], partner[close] = close, open_
    positions = sorted(list(partner) + [pos for pos, _ in brackets.unmatched])
    withheld: set[int] = set()
    for d in fixes:
        lo = bisect.bisect_left(positions, d.span.start)
        hi = bisect.bisect_left(positions, d.span.end)
        if hi - lo > _MAX_FIX_BRACKETS:
            withheld.add(id(d))
            continue
        kept = [ch for ch in d.fix if ch in "[]()"]
        for pos in positions[lo:hi]:
            other = partner.get(pos, -1)
            if other >= 0 and not d.span.start <= other < d.span.end and text[pos] not in kept:
                withheld.add(id(d))
                break
    if not withheld:
        return found
    return [dataclasses.replace(d, fix=None) if id(d) in withheld else d for d in found]


def _finish(found: list[Diagnostic], wanted: frozenset[str], text: str = "") -> list[Diagnostic]:
    found = _withhold_conflicts(_withhold_bracket_breakers(found, text))
    seen: set[Diagnostic] = set()
    result = []
    for d in sorted(found, key=lambda d: (d.span.start, d.span.end, d.code, d.message)):
        if d.code in wanted and d not in seen:
            seen.add(d)
            result.append(d)
    return result
