"""The one registry of lint codes: every rule's code, name, severity and whether it runs by default.

Codes are stable: a code is never reused for a different rule, and a retired rule keeps its row
(marked retired) so old ``--ignore`` lists keep meaning the same thing. Families:

- ``NP0xx`` the linter itself and prompts it cannot read
- ``NP1xx`` parts: empty parts, implicit parts, duplicates, nesting, cost
- ``NP2xx`` brackets: unbalanced, split by a keyword, single-part brackets with a weight
- ``NP3xx`` keywords: misspelt, wrong case, glued to a word, options after a space
- ``NP4xx`` weights and options: non-finite, invalid, weight-like text, zero weight, empty window

Each rule is implemented by the module ``neutral_lang/linter/rules/<name with underscores>.py``
and documented by ``docs/rules/<code>.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..ast import Span
from .diagnostic import Diagnostic

__all__ = ["Rule", "RULES", "FIX_KINDS", "rule", "resolve"]


#: How sure a rule's fix is (``Rule.fix``). ``safe``: the text evidently means the fixed spelling
#: (a typo, a case, a space, a full-width letter, an implicit keyword made explicit), so
#: ``neutral-lang lint --fix`` / :func:`~neutral_lang.linter.fix` apply it. ``unsafe``: a likely
#: reading among others (deleting a part, turning an inline weight into emphasis): shown, and
#: applied only on request (``--unsafe-fixes``, ``fix(text, unsafe=True)``). ``""``: no fix.
FIX_KINDS = ("safe", "unsafe", "")


@dataclass(frozen=True, slots=True)
class Rule:
    """A kind of diagnostic: its stable code, its name, its severity, a one-line summary and how
    sure its fixes are (``fix``, one of :data:`FIX_KINDS`).

    ``default`` rules run when no ``select`` is given; the others (opt-in) run only when a
    ``select`` entry names them (by code or by prefix).
    """

    code: str
    name: str
    severity: str
    summary: str
    default: bool = True
    fix: str = ""

    @property
    def module(self) -> str:
        return f"{__package__}.rules.{self.name.replace('-', '_')}"

    def diagnostic(self, span: Span, message: str, *, hint: str = "", fix: str | None = None) -> Diagnostic:
        return Diagnostic(self.code, self.severity, message, span, hint, fix)


_TABLE = (
    Rule("NP001", "internal-error", "error", "the linter itself failed (a bug: please report it)"),
    Rule("NP002", "parse-error", "error", "a prompt the parser cannot read, for a reason no other rule covers"),
    Rule("NP101", "leading-keyword", "warning", "a keyword is the first word: an empty base part comes before it",
         fix="unsafe"),
    Rule("NP102", "empty-part", "warning", "a doubled or trailing keyword makes an empty part", fix="unsafe"),
    Rule("NP103", "group-leading-keyword", "warning", "a group starts with a keyword: its base part is empty"),
    Rule("NP104", "text-after-group", "warning", "text after a group is a separate AND part", fix="safe"),
    Rule("NP105", "duplicate-part", "warning", "the same part (keyword, options, text) twice among siblings"),
    Rule("NP106", "deep-nesting", "info", "groups nested more than two levels deep"),
    Rule("NP107", "cost", "info", "model evaluations per step (opt-in)", default=False),
    Rule("NP201", "unbalanced-bracket", "warning", "an unmatched ']' or ')', or an unclosed '[' or '('"),
    Rule("NP202", "keyword-in-brackets", "warning", "a keyword inside A1111 brackets splits them between two parts",
         fix="unsafe"),
    Rule("NP203", "weighted-single-part-brackets", "warning",
         "brackets holding one part, with a weight: A1111 text, not a group"),
    Rule("NP204", "emphasis-too-deep", "error",
         "text inside more than 480 brackets at once, which A1111 emphasis is not read to"),
    Rule("NP301", "misspelt-keyword", "warning", "a word that is nearly a keyword (AND_PREP, ANDPERP, AND PERP)",
         fix="safe"),
    Rule("NP302", "keyword-case", "warning", "a keyword in the wrong case (and_perp, AND_TOPk) is plain text",
         fix="safe"),
    Rule("NP303", "glued-keyword", "warning", "a keyword glued to a word (AND_PERPmonster) is plain text", fix="safe"),
    Rule("NP304", "spaced-options", "warning", "an option list after a space (AND_TOPK (k=0.1)) is plain text",
         fix="safe"),
    Rule("NP305", "full-width-keyword", "warning", "a keyword in full-width letters (ＡＮＤ＿ＰＥＲＰ) is plain text",
         fix="safe"),
    Rule("NP401", "non-finite-weight", "error", "a nan or inf weight"),
    Rule("NP402", "invalid-options", "error", "a malformed keyword option list, an unknown option or a value out of range"),
    Rule("NP403", "weight-like-text", "warning", "text that looks like a weight but is not read as one", fix="safe"),
    Rule("NP404", "zero-weight", "warning", "a part whose weight is 0", fix="unsafe"),
    Rule("NP405", "empty-window", "warning", "a start/end window that contains no step"),
    Rule("NP406", "weight-overflow", "warning", "weights whose product down the tree overflows float32 guidance"),
    Rule("NP407", "text-read-as-weight", "warning",
         "a number at the end of a part that was meant as text (16:9, 12:30) is read as its weight", fix="safe"),
    Rule("NP408", "inline-weight", "warning",
         "a phrase weight glued into the text (swing:1.2 green grass), as other UIs write it, is plain text",
         fix="unsafe"),
)

#: Every rule by code, in code order.
RULES: dict[str, Rule] = {r.code: r for r in _TABLE}
_BY_NAME: dict[str, Rule] = {r.name: r for r in _TABLE}


def rule(name: str) -> Rule:
    """The registry entry of the rule called ``name`` (how rule modules learn their code)."""
    return _BY_NAME[name]


def _selectors(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        out.extend(s.strip().upper() for s in str(item).split(",") if s.strip())
    return ["NP" if s == "ALL" else s for s in out]


def _matching(selector: str) -> list[str]:
    codes = [code for code in RULES if code.startswith(selector)]
    if not codes:
        raise ValueError(f"no lint rule matches {selector!r} (codes are NP001...NP405; see docs/rules/README.md)")
    return codes


def resolve(select: str | Iterable[str] | None = None, ignore: str | Iterable[str] | None = None) -> frozenset[str]:
    """The codes to report. ``select``: codes or prefixes (``NP3``, ``NP301``; ``ALL``), comma-separated
    strings or an iterable; ``None`` means every default rule. A selector enables opt-in rules too.
    ``ignore`` removes codes or prefixes from that set. ``NP001`` (internal error) is always reported.
    Raises ``ValueError`` for a selector that matches no rule.
    """
    selectors = _selectors(select)
    if selectors:
        chosen = {code for s in selectors for code in _matching(s)}
    else:
        chosen = {code for code, r in RULES.items() if r.default}
    for s in _selectors(ignore):
        chosen.difference_update(_matching(s))
    chosen.add("NP001")
    return frozenset(chosen)
