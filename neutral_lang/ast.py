"""The syntax tree of a Neutral Prompt: frozen dataclasses, one per grammar rule, each with its span.

A prompt is a sequence of parts joined by keywords (``grammar/neutral_prompt.lark``)::

    Prompt(parts=(Part(AND, Leaf("a castle")), Part(AND_PERP, Leaf("monster"), weight=-1.0)))

Spans are half-open character offsets into the source text. Whitespace around a leaf's text is
not significant: ``Leaf.text`` is the trimmed text and ``Leaf.span`` covers exactly that text
(a zero-width span for an empty leaf).

Deeply nested prompts (10^4 levels parse fine) make deep trees: the generated ``==`` and ``repr``
of these dataclasses recurse, so code that must handle any depth walks trees with
:func:`iter_parts` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from .keywords import Keyword, is_fraction

__all__ = ["Keyword", "Span", "Option", "Leaf", "Group", "Body", "Part", "Prompt", "iter_parts", "meaning", "leaves"]


@dataclass(frozen=True, slots=True)
class Span:
    """Half-open range ``[start, end)`` of character offsets into the source text."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Option:
    """One ``name=value`` of a keyword's option list, e.g. ``k=0.1`` in ``AND_TOPK(k=0.1)``.

    ``text`` is the value as written: ``start``/``end`` read ``2`` as a step index and ``0.2`` as a
    fraction of the steps, so the spelling carries meaning.
    """

    name: str
    value: float
    text: str
    span: Span

    @property
    def is_fraction(self) -> bool:
        return is_fraction(self.text)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A part's text, passed to the text encoder as written (A1111 emphasis, editing and all)."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Group:
    """``[ prompt ]``: a bracket holding a prompt of two or more parts."""

    prompt: "Prompt"
    span: Span


Body = Union[Leaf, Group]


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a prompt: its keyword, options, body and weight.

    ``keyword_span`` is ``None`` when the keyword is implicit: the first part of a prompt, or text
    that follows a group (``[a AND b] tail`` reads ``tail`` as an ``AND`` part). ``weight_span`` is
    ``None`` when no weight was written (weight 1).
    """

    keyword: Keyword
    body: Body
    weight: float
    span: Span
    options: tuple[Option, ...] = ()
    keyword_span: Span | None = None
    weight_span: Span | None = None

    def option(self, name: str, default: float | None = None) -> float | None:
        for opt in self.options:
            if opt.name == name:
                return opt.value
        return default


@dataclass(frozen=True, slots=True)
class Prompt:
    """A sequence of one or more parts. The root of every parse, and the inside of every group.

    ``source`` is the text a root was parsed from (``None`` inside groups and for trees built by
    hand); spans are offsets into it.
    """

    parts: tuple[Part, ...]
    span: Span
    source: str | None = None


def iter_parts(prompt: Prompt, *, depth: int = 0) -> Iterator[tuple[int, Part]]:
    """Yield ``(depth, part)`` for every part in the tree, pre-order, without recursion."""
    stack: list[tuple[int, Part]] = [(depth, p) for p in reversed(prompt.parts)]
    while stack:
        d, part = stack.pop()
        yield d, part
        if isinstance(part.body, Group):
            stack.extend((d + 1, p) for p in reversed(part.body.prompt.parts))


def meaning(prompt: Prompt) -> list[tuple]:
    """What a tree means, without its spelling: per part, in pre-order, its depth, keyword,
    options, weight and leaf text (``None`` for a group). Two trees mean the same exactly when
    these lists are equal. Iterative, like :func:`iter_parts`."""
    return [
        (
            depth,
            part.keyword,
            # only window bounds read the spelling (a step index or a fraction of the steps)
            tuple(sorted((o.name, o.value, o.is_fraction if o.name in ("start", "end") else None)
                         for o in part.options)),
            part.weight,
            part.body.text if isinstance(part.body, Leaf) else None,
        )
        for depth, part in iter_parts(prompt)
    ]


def leaves(prompt: Prompt) -> Iterator[Leaf]:
    """Every leaf of the tree, in source order."""
    for _, part in iter_parts(prompt):
        if isinstance(part.body, Leaf):
            yield part.body
