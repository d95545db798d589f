"""The syntax tree of a Neutral Prompt: frozen dataclasses, one per grammar rule, each with its span.

A prompt is a sequence of parts joined by keywords (``grammar/neutral_prompt.lark``)::

    Prompt(parts=(Part(AND, Leaf("a castle")), Part(AND_PERP, Leaf("monster"), weight=-1.0)))

Spans are half-open character offsets into the source text. Whitespace around a leaf's text is
not significant: ``Leaf.text`` is the trimmed text and ``Leaf.span`` covers exactly that text
(a zero-width span for an empty leaf).

Deeply nested prompts (10^4 levels parse fine) make deep trees, so the nodes that nest
(:class:`Prompt`, :class:`Part`, :class:`Group`) define ``==``, ``hash``, ``repr``, pickling and
copying without recursion (the dataclass-generated ones recurse, and fail near 100 levels): they
read the tree as a flat pre-order list of node records (:func:`_records`). ``repr`` prints what
the generated one would. Code that walks trees uses :func:`iter_parts`, which is iterative too.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Iterator, Union

from .keywords import WINDOW_OPTIONS, Keyword, is_fraction

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


class _Nested:
    """``==``, ``hash``, ``repr``, pickling and copying for nodes that nest, without recursion."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self is other or all(a == b for a, b in zip_longest(_records(self), _records(other), fillvalue=_END))

    def __hash__(self) -> int:
        return hash(tuple(_records(self)))

    def __repr__(self) -> str:
        out: list[str] = []
        stack: list[object] = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
            else:
                stack.extend(reversed(item._repr_pieces()))  # type: ignore[attr-defined]
        return "".join(out)

    def __reduce__(self):
        return _rebuild, (list(_records(self)),)

    def __copy__(self):
        return self  # immutable all the way down

    def __deepcopy__(self, memo):
        return self


_END = object()


@dataclass(frozen=True, slots=True)
class Leaf:
    """A part's text, passed to the text encoder as written (A1111 emphasis, editing and all)."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Group(_Nested):
    """``[ prompt ]``: a bracket holding a prompt of two or more parts."""

    prompt: "Prompt"
    span: Span

    def _repr_pieces(self) -> list:
        return ["Group(prompt=", self.prompt, f", span={self.span!r})"]


Body = Union[Leaf, Group]


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Part(_Nested):
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

    def _repr_pieces(self) -> list:
        body = self.body if isinstance(self.body, _Nested) else repr(self.body)
        return [
            f"Part(keyword={self.keyword!r}, body=", body,
            f", weight={self.weight!r}, span={self.span!r}, options={self.options!r}, "
            f"keyword_span={self.keyword_span!r}, weight_span={self.weight_span!r})",
        ]

    def option(self, name: str, default: float | None = None) -> float | None:
        for opt in self.options:
            if opt.name == name:
                return opt.value
        return default


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Prompt(_Nested):
    """A sequence of one or more parts. The root of every parse, and the inside of every group.

    ``source`` is the text a root was parsed from (``None`` inside groups and for trees built by
    hand); spans are offsets into it.
    """

    parts: tuple[Part, ...]
    span: Span
    source: str | None = None

    def _repr_pieces(self) -> list:
        pieces: list[object] = ["Prompt(parts=("]
        for i, part in enumerate(self.parts):
            pieces += [", " if i else "", part]
        pieces.append(",)" if len(self.parts) == 1 else ")")
        pieces.append(f", span={self.span!r}, source={self.source!r})")
        return pieces


def _records(node: object) -> Iterator[object]:
    """The tree under ``node`` as a flat pre-order sequence: one tuple per nesting node (its class
    and fields, a prompt's part count), leaves and other values as themselves."""
    stack = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, Prompt):
            yield (Prompt, x.span, x.source, len(x.parts))
            stack.extend(reversed(x.parts))
        elif isinstance(x, Part):
            yield (Part, x.keyword, x.weight, x.span, x.options, x.keyword_span, x.weight_span)
            stack.append(x.body)
        elif isinstance(x, Group):
            yield (Group, x.span)
            stack.append(x.prompt)
        else:
            yield x


def _rebuild(records: list) -> object:
    """The inverse of :func:`_records` (for unpickling), without recursion."""
    values: list = []
    for rec in reversed(records):
        if isinstance(rec, tuple) and rec and rec[0] is Prompt:
            _, span, source, count = rec
            parts = tuple(reversed(values[len(values) - count:]))  # the first part is on top
            del values[len(values) - count:]
            values.append(Prompt(parts, span, source))
        elif isinstance(rec, tuple) and rec and rec[0] is Part:
            _, keyword, weight, span, options, keyword_span, weight_span = rec
            values.append(Part(keyword, values.pop(), weight, span, options, keyword_span, weight_span))
        elif isinstance(rec, tuple) and rec and rec[0] is Group:
            values.append(Group(values.pop(), rec[1]))
        else:
            values.append(rec)
    return values[-1]


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
            tuple(sorted((o.name, o.value, o.is_fraction if o.name in WINDOW_OPTIONS else None)
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
