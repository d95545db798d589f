"""The intermediate representation: what a prompt means, with the syntax gone.

The AST says how a prompt was written; the IR says what it computes (docs/semantics.md)::

    Module(roots=(Group(...),), conds=("a castle", "monster"))       one root per source prompt
    Group(parts=(Part(AND, 1.0, Cond(0)), Part(PERP, -1.0, Cond(1))))

- A :class:`Part` carries its operator (:class:`Op`), its weight, its body (a :class:`Cond` or a
  nested :class:`Group`), its resolved options (:class:`Options`: ``k``, ``per_channel``,
  ``momentum``, ``beta``; defaults everywhere but on ``TOPK``), its :class:`Window` of steps, and
  the source :class:`~neutral_lang.ast.Span` it came from (offsets into its root's prompt text).
- A :class:`Cond` is a leaf conditioning: an integer id into ``Module.conds``, the table of
  trimmed leaf texts. Each entry is one model evaluation per step.
- A root :class:`Group` means ``full(root)``; the guided prediction is ``u + s * full(root)``.
  An empty group means zero (what pruning leaves when nothing in it contributes).

All nodes are frozen; passes (:mod:`neutral_lang.passes`) build new trees and share every subtree
they do not change. Trees can be 10^4 levels deep and more, so everything here walks them with
explicit stacks: :func:`walk`, :func:`rewrite`, :func:`dump`, and ``==``, ``hash``, ``repr``,
``pickle`` and ``copy.deepcopy`` of groups and parts (no recursion at any depth).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Union

from .ast import Span
from .keywords import OPTION_DEFAULTS
from .lexical import format_number

__all__ = [
    "Op", "AND", "PERP", "SALT", "TOPK", "Bound", "Window", "ALWAYS", "Options", "DEFAULT_OPTIONS", "Cond", "Group", "Part",
    "Module", "walk", "rewrite", "dump", "describe", "num", "indent", "MAX_INDENT",
]


class Op(str, enum.Enum):
    """What a part does with its delta in its group (docs/semantics.md); one per row of
    ``keywords.KEYWORDS`` (its ``op``)."""

    AND = "AND"    # adds w * full to the group's base
    PERP = "PERP"  # adds w * perp(base, full)
    SALT = "SALT"  # competes with the base for salient elements
    TOPK = "TOPK"  # adds w * topk(full, k) (SEGA edit, optionally with momentum)

    def __str__(self) -> str:
        return self.value


# The operators as module constants: `part.op is AND` skips the enum class lookup of `Op.AND`,
# which costs more than the comparison in the passes' inner loops.
AND, PERP, SALT, TOPK = Op.AND, Op.PERP, Op.SALT, Op.TOPK


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a window as written: a step index (``10``) or a fraction of the steps (``0.2``).

    A fraction ``f`` means step ``int(f * num_steps)`` (docs/language.md, "Keyword options"), so the kind is kept until
    the number of steps is known.
    """

    value: float
    fraction: bool

    def step(self, num_steps: int) -> int:
        return int(self.value * num_steps) if self.fraction else int(self.value)

    def __str__(self) -> str:
        if self.fraction:
            return repr(float(self.value))
        return str(int(self.value))


@dataclass(frozen=True, slots=True)
class Window:
    """The half-open range of steps ``[start, end)`` in which a part acts; ``None`` is unbounded."""

    start: Bound | None = None
    end: Bound | None = None

    @property
    def always(self) -> bool:
        return self.start is None and self.end is None

    def contains(self, step: int, num_steps: int) -> bool:
        if self.start is not None and step < self.start.step(num_steps):
            return False
        return self.end is None or step < self.end.step(num_steps)

    def is_empty(self) -> bool:
        """True when no step of any run lies in the window, whatever ``num_steps`` is.

        Provable cases: ``end`` is step 0 or fraction 0; or both bounds are of one kind with
        ``start >= end`` (``int(f * n)`` is monotone in ``f``). Mixed kinds depend on ``num_steps``.
        """
        if self.end is None:
            return False
        if self.end.value <= 0:
            return True
        if self.start is None or self.start.fraction != self.end.fraction:
            return False
        if self.start.fraction:
            return self.start.value >= self.end.value
        return int(self.start.value) >= int(self.end.value)

    def __str__(self) -> str:
        start = "0" if self.start is None else str(self.start)
        end = "inf" if self.end is None else str(self.end)
        return f"[{start}, {end})"


ALWAYS = Window()


@dataclass(frozen=True, slots=True)
class Options:
    """Resolved keyword options of a ``TOPK`` part (docs/language.md, "Keyword options"); other
    parts keep the defaults, which come from the keyword table (``keywords.OPTION_DEFAULTS``)."""

    k: float = OPTION_DEFAULTS["k"]
    per_channel: bool = bool(OPTION_DEFAULTS["per_channel"])
    momentum: float = OPTION_DEFAULTS["momentum"]
    beta: float = OPTION_DEFAULTS["beta"]

    def __str__(self) -> str:
        items = []
        if self.k != OPTION_DEFAULTS["k"]:
            items.append(f"k={num(self.k)}")
        if self.per_channel:
            items.append("per_channel")
        if self.momentum:
            items.append(f"momentum={num(self.momentum)} beta={num(self.beta)}")
        return " ".join(items)


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True, slots=True)
class Cond:
    """A leaf conditioning: ``full = eps(conds[id]) - u``."""

    id: int


class _Tree:
    """Equality, hashing, repr, pickling and copying of a tree without recursion.

    The dataclass-generated methods recurse once per nesting level, and prompts nest 10^4 deep
    and more; these walk with explicit stacks instead. Trees are immutable, so a copy (shallow or
    deep) is the tree itself, and a pickle holds a group as a flat post-order list of its groups.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return _equal(self, other)

    def __ne__(self, other: object) -> bool:
        return not _equal(self, other)

    def __hash__(self) -> int:
        return _hash(self)

    def __repr__(self) -> str:
        return _repr(self)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Group(_Tree):
    """``full(group) = base + aux(base)`` over its parts (docs/semantics.md). Empty means zero."""

    parts: tuple["Part", ...]
    span: Span

    def __reduce__(self):
        return _unpack, (_pack(self),)


Body = Union[Cond, Group]


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Part(_Tree):
    """One operand of a group: ``op`` applied to ``weight * full(body)`` while ``window`` holds."""

    op: Op
    weight: float
    body: Body
    span: Span
    window: Window = ALWAYS
    options: Options = DEFAULT_OPTIONS

    @property
    def has_momentum(self) -> bool:
        return self.op is TOPK and self.options.momentum != 0

    def __reduce__(self):
        if type(self.body) is Group:
            return _unpack_part, (_pack(self.body), _fields(self, None))
        return Part, _fields(self, self.body)


@dataclass(frozen=True, slots=True)
class Module:
    """A compiled unit: one root group per source prompt, and the conditioning table they share."""

    roots: tuple[Group, ...]
    conds: tuple[str, ...]

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def rewrite(self, rule: Callable[[Group], Group]) -> "Module":
        """Apply :func:`rewrite` to every root; the same module back when no root changed."""
        roots = tuple(rewrite(root, rule) for root in self.roots)
        if all(new is old for new, old in zip(roots, self.roots)):
            return self
        return Module(roots, self.conds)


def walk(group: Group, depth: int = 0) -> Iterator[tuple[int, Part]]:
    """Every part under ``group`` as ``(depth, part)``, pre-order, without recursion."""
    stack = [(depth, p) for p in reversed(group.parts)]
    while stack:
        d, part = stack.pop()
        yield d, part
        if isinstance(part.body, Group):
            stack.extend((d + 1, p) for p in reversed(part.body.parts))


def rewrite(root: Group, rule: Callable[[Group], Group]) -> Group:
    """Rebuild ``root`` bottom-up: each group gets its rewritten children, then ``rule`` maps it.

    ``rule`` sees every group once, children first (so a rule that looks one level down sees
    children already in their final form). Unchanged subtrees are shared, and ``root`` itself comes
    back when nothing changed: passes can test ``new is old``. No recursion: any depth works.
    """
    order = [root]  # pre-order: every group after its parent, so reversed it is bottom-up
    for group in order:
        order.extend(p.body for p in group.parts if type(p.body) is Group)
    done: dict[int, Group] = {}  # id of an original group -> its rewritten form
    for group in reversed(order):
        parts = group.parts
        for i, part in enumerate(parts):
            if type(part.body) is Group and done[id(part.body)] is not part.body:
                rebuilt = list(parts[:i])
                for part in parts[i:]:
                    if type(part.body) is Group:
                        part = Part(part.op, part.weight, done[id(part.body)], part.span, part.window, part.options)
                    rebuilt.append(part)
                done[id(group)] = rule(Group(tuple(rebuilt), group.span))
                break
        else:
            done[id(group)] = rule(group)
    return done[id(root)]


def num(value: float) -> str:
    """A number as it reads best (``1``, ``-0.5``, ``1e-05``): the lexical module's one printer, so
    the IR, the plan, ``explain`` and the formatter print weights alike. A combined weight can
    overflow to ``inf`` (``[a AND b :1e200] :1e200``); the IR is no source text, so it prints that
    as ``inf`` rather than refusing (running such a program raises ``GuidanceError``)."""
    return format_number(value) if math.isfinite(value) else repr(float(value))


def describe(part: Part) -> str:
    """One line for a part: operator, weight, window, options, and its conditioning id."""
    words = [str(part.op), num(part.weight)]
    if not part.window.always:
        words.append(f"when {part.window}")
    options = str(part.options)
    if options:
        words.append(options)
    if isinstance(part.body, Cond):
        words.append(f"#{part.body.id}")
    return " ".join(words)


#: Levels of nesting shown by indentation; deeper lines keep this indentation and say their depth,
#: so that the text of a tree ``d`` levels deep grows linearly in ``d`` (not quadratically).
MAX_INDENT = 32


def indent(depth: int) -> str:
    """The indentation of a line at ``depth``: two spaces a level up to :data:`MAX_INDENT`, then
    ``[depth N]`` after them (``explain`` and :func:`dump` use it)."""
    if depth <= MAX_INDENT:
        return "  " * depth
    return "  " * MAX_INDENT + f"[depth {depth}] "


def dump(module: Module) -> str:
    """A readable, stable text of the IR (golden fixtures compare it; ``explain`` prints it)::

        #0 'a castle'
        #1 'monster'
        prompt 0
          AND 1 #0
          PERP -1 #1
    """
    lines = [f"#{i} {text!r}" for i, text in enumerate(module.conds)]
    for n, root in enumerate(module.roots):
        lines.append(f"prompt {n}" + ("" if root.parts else " (zero)"))
        for depth, part in walk(root, 1):
            lines.append(indent(depth) + describe(part))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Deep trees: the iterative methods of Group and Part (see _Tree)


def _groups_postorder(root: Group) -> list[Group]:
    """Every distinct group object under ``root`` (``root`` included), children before parents."""
    order: list[Group] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        group = stack.pop()
        if id(group) in seen:
            continue
        seen.add(id(group))
        order.append(group)
        stack.extend(p.body for p in group.parts if type(p.body) is Group)
    order.reverse()
    return order


def _fields(part: Part, body: object) -> tuple:
    return (part.op, part.weight, body, part.span, part.window, part.options)


def _equal(a: Group | Part, b: object) -> bool:
    if type(a) is Part:
        if type(b) is not Part or _fields(a, None) != _fields(b, None):
            return False
        if type(a.body) is not Group or type(b.body) is not Group:
            return a.body == b.body
        a, b = a.body, b.body
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        if type(y) is not Group or x.span != y.span or len(x.parts) != len(y.parts):
            return False
        for p, q in zip(x.parts, y.parts):
            if type(q) is not Part or _fields(p, None) != _fields(q, None):
                return False
            if type(p.body) is Group and type(q.body) is Group:
                stack.append((p.body, q.body))
            elif p.body != q.body:
                return False
    return True


def _hash(node: Group | Part) -> int:
    root = node.body if type(node) is Part else node
    if type(root) is not Group:
        return hash(_fields(node, root))
    hashes: dict[int, int] = {}
    for group in _groups_postorder(root):
        hashes[id(group)] = hash((group.span, tuple(
            _fields(p, hashes[id(p.body)] if type(p.body) is Group else p.body) for p in group.parts)))
    return hashes[id(root)] if type(node) is Group else hash(_fields(node, hashes[id(root)]))


def _repr(node: Group | Part) -> str:
    """The dataclass repr, written with an explicit stack: linear in the size of the tree."""
    out: list[str] = []
    stack: list = [node]
    while stack:
        item = stack.pop()
        if type(item) is str:
            out.append(item)
        elif type(item) is Part:
            stack += [f", span={item.span!r}, window={item.window!r}, options={item.options!r})", item.body,
                      f"Part(op={item.op!r}, weight={item.weight!r}, body="]
        elif type(item) is Group:
            n = len(item.parts)
            pieces: list = ["Group(parts=("]
            for i, part in enumerate(item.parts):
                pieces.append(part)
                pieces.append(", " if i < n - 1 else ("," if n == 1 else ""))
            pieces.append(f"), span={item.span!r})")
            stack += reversed(pieces)
        else:
            out.append(repr(item))
    return "".join(out)


def _pack(root: Group) -> tuple:
    """A group as flat data: post-order ``(span, parts)`` rows whose group bodies are row numbers."""
    order = _groups_postorder(root)
    row = {id(g): i for i, g in enumerate(order)}
    return tuple(
        (g.span, tuple(_fields(p, row[id(p.body)] if type(p.body) is Group else p.body) for p in g.parts))
        for g in order
    )


def _unpack(rows: tuple) -> Group:
    built: list[Group] = []
    for span, parts in rows:
        built.append(Group(tuple(
            Part(op, weight, built[body] if type(body) is int else body, pspan, window, options)
            for op, weight, body, pspan, window, options in parts
        ), span))
    return built[-1]


def _unpack_part(rows: tuple, fields: tuple) -> Part:
    op, weight, _, span, window, options = fields
    return Part(op, weight, _unpack(rows), span, window, options)
