"""``fix(text)``: the prompt with the linter's fixes applied, as ``neutral-lang lint --fix`` writes it.

    >>> import neutral_lang as nl
    >>> nl.fix("a castle AND_PREP monster :−1")
    'a castle AND_PERP monster :-1'

Only ``safe`` fixes by default (the registry marks each rule's fixes ``safe`` or ``unsafe``,
``registry.FIX_KINDS``); ``unsafe=True`` adds the others. One ``lint`` result never holds two
overlapping fixes (the engine withholds the one that would contradict another diagnostic), so a
round applies all of them at once; then the text is linted again, because one fix can reveal the
next (``AND_PREPP`` -> ``AND_PERP`` may make a weight, or a duplicate, appear). At most
:data:`MAX_ROUNDS` rounds, each linear in the text: what a round leaves is reported by ``lint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .diagnostic import Diagnostic
from .engine import lint

__all__ = ["fix", "fix_all", "apply_fixes", "Fixed", "MAX_ROUNDS"]

#: Lint-and-fix rounds before ``fix`` stops. Each round applies every non-overlapping fix; a
#: fix revealing another is rare, a chain of more than a few rarer still.
MAX_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class Fixed:
    """The result of :func:`fix_all`: the fixed ``text`` and the diagnostics whose fixes were
    applied, round by round (their spans are offsets into the text of their round)."""

    text: str
    applied: tuple[Diagnostic, ...]


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic]) -> str:
    """``text`` with the fixes of ``diagnostics`` applied together. Raises ``ValueError`` if two
    fixes overlap (they come from different ``lint`` runs: lint again instead)."""
    edits = sorted((d.span.start, d.span.end, d.fix) for d in diagnostics if d.fix is not None)
    out: list[str] = []
    pos = 0
    for start, end, replacement in edits:
        if start < pos:
            raise ValueError(f"overlapping fixes at offset {start}: apply them from one lint() result")
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def fix_all(text: str, *, unsafe: bool = False, select: str | Iterable[str] | None = None,
            ignore: str | Iterable[str] | None = None) -> Fixed:
    """Apply the fixes of ``lint(text, select=..., ignore=...)`` until none is left (or
    :data:`MAX_ROUNDS`): ``safe`` ones, and with ``unsafe=True`` also the ``unsafe`` ones.
    Raises what :func:`~neutral_lang.linter.lint` raises (``TypeError``, ``ValueError``)."""
    kinds = ("safe", "unsafe") if unsafe else ("safe",)
    applied: list[Diagnostic] = []
    for _ in range(MAX_ROUNDS):
        todo = [d for d in lint(text, select=select, ignore=ignore) if d.applicability in kinds]
        if not todo:
            break
        fixed = apply_fixes(text, todo)
        if fixed == text:
            break
        applied.extend(todo)
        text = fixed
    return Fixed(text, tuple(applied))


def fix(text: str, *, unsafe: bool = False, select: str | Iterable[str] | None = None,
        ignore: str | Iterable[str] | None = None) -> str:
    """The prompt with the linter's ``safe`` fixes applied (``unsafe=True``: all fixes); the text
    unchanged when nothing is fixable. ``select``/``ignore`` as for ``lint``."""
    return fix_all(text, unsafe=unsafe, select=select, ignore=ignore).text
