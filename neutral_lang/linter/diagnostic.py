"""A diagnostic is data: a code from the registry, a severity, a message, a span, a hint and an
optional fix (the text to put in place of the span)."""

from __future__ import annotations

from dataclasses import dataclass

from ..ast import Span

__all__ = ["Diagnostic", "SEVERITIES"]

#: Severities, most severe first. ``error`` and ``warning`` make ``neutral-lang lint`` exit 1;
#: ``info`` never does.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of the linter.

    ``span`` is a half-open range of character offsets into the linted text. ``fix``, when not
    ``None``, is the replacement text for exactly that span (``""`` deletes it); applying it
    changes the prompt into what its author most likely meant (see each rule's page under
    ``docs/rules/``). The fixes of one ``lint`` result never overlap, so they can all be applied
    together (:func:`~neutral_lang.linter.fix.apply_fixes`).
    """

    code: str
    severity: str
    message: str
    span: Span
    hint: str = ""
    fix: str | None = None

    @property
    def applicability(self) -> str:
        """How sure the fix is: ``"safe"`` or ``"unsafe"`` as the registry marks the rule
        (``registry.FIX_KINDS``); ``""`` when there is no fix."""
        from .registry import RULES

        rule = RULES.get(self.code)
        return rule.fix if rule is not None and self.fix is not None else ""

    @property
    def name(self) -> str:
        """The rule's kebab-case name (``misspelt-keyword`` for ``NP301``)."""
        from .registry import RULES

        rule = RULES.get(self.code)
        return rule.name if rule is not None else ""

    def apply_fix(self, text: str) -> str:
        """``text`` with this diagnostic's fix applied (unchanged when it has none)."""
        if self.fix is None:
            return text
        return text[: self.span.start] + self.fix + text[self.span.end :]
