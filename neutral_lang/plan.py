"""The guidance plan: the IR as a flat program for a small register machine.

A plan is a tuple of steps, executed in order by ``neutral_lang.backends.torch.executor``
without recursion (torch.fx's Interpreter is the model). Each step writes one register (``%n``)
from inputs and earlier registers and names the prompt span it came from; ``Plan.frees`` lists
the registers that die after each step (liveness), so the executor drops them::

    cond[0] = 'a castle'
    cond[1] = 'monster'
    %0 = cond[0] - u                             # prompt 0 'a castle'
    %1 = cond[1] - u                             # prompt 0 'AND_PERP monster :-1'
    %2 = perp(%0, %1)                            # prompt 0 'AND_PERP monster :-1'
    out = u + s * (%0 - %2)                      # prompt 0 'a castle AND_PERP monster :-1'

Inputs are ``u`` (the unconditional prediction), ``cond[i]`` (the prediction for
``Plan.conds[i]``) and the guidance scale ``s``. The steps:

- :class:`Lin`: a linear combination ``sum c * x``. The leaf deltas ``cond[i] - u`` are Lin
  steps, one per conditioning and block, computed before any weight touches them (exact zero when
  the model predicts ``u``; no cancellation with large weights). Every other linear piece of SPEC
  section 2 (bases, weighted sums, ``base + aux``) is folded at plan time into one Lin over
  registers, materialised only where a strategy or the output needs it;
- :class:`Perp`, :class:`TopK`, :class:`Salt`: the non-linear strategies;
- :class:`Out`: ``u + s * sum c * x`` (then CFG rescale) written to the block's batch items.

Windows (``start``/``end``) become guards: a step runs only when every window in its ``guard``
contains the current step; a term of a :class:`Lin` likewise. A register that was not computed, or
whose terms were all inactive, holds *zero* (``None`` in the executor), and every step reads it as
such. A TOPK part with momentum runs at every step, whatever its ancestors' windows (its state is
updated at every step, SPEC section 4); its own window only decides whether its ``E`` is applied.

A list of prompts compiles to one *block* of steps per prompt; block ``j`` works on the batch
items of prompt ``j``. No torch here: plans are data, built and printed without a GPU stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence, Union

from . import ast, ir
from .ast import Span
from .ir import ALWAYS, AND, PERP, SALT

__all__ = [
    "Ref", "U", "Term", "Origin", "Step", "Lin", "Perp", "TopK", "Sega", "Salt", "Out", "Plan", "build",
]


class Ref(NamedTuple):
    """An operand: ``u``, ``cond[i]`` or register ``%i``."""

    kind: str  # "u" | "cond" | "reg"
    index: int = 0

    def __str__(self) -> str:
        if self.kind == "u":
            return "u"
        return f"cond[{self.index}]" if self.kind == "cond" else f"%{self.index}"


U = Ref("u")


class Term(NamedTuple):
    """``coef * ref``, counted only while every window in ``guard`` is active."""

    coef: float
    ref: Ref
    guard: tuple[int, ...] = ()


class Origin(NamedTuple):
    """Where a step came from: prompt ``prompt`` (an index into ``Plan.texts``), characters ``span``."""

    prompt: int
    span: Span


def _step_str(step) -> str:
    target = "out" if step.dst is None else f"%{step.dst}"
    when = f" if {_guard(step.guard)}" if step.guard else ""
    return f"{target} = {step.expr()}{when}"


# Every step has: ``dst`` (the register it writes; None for Out), ``origin`` (the prompt span it
# came from), ``guard`` (window ids that must all be active for it to run) and ``block`` (which
# prompt's batch items it works on). Steps are named tuples: immutable, cheap to build (compiling
# must take microseconds), printable one per line.


class Lin(NamedTuple):
    """``dst = sum c * x`` over the active terms (zero when none is)."""

    dst: int
    origin: Origin
    terms: tuple[Term, ...]
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return tuple(t.ref.index for t in self.terms if t.ref.kind == "reg")

    def expr(self) -> str:
        return _terms(self.terms)

    __str__ = _step_str


class Perp(NamedTuple):
    """``dst = perp(d, v) = v - d <d, v> / <d, d>`` (Perp-Neg); ``d`` None is zero: ``dst = v``."""

    dst: int
    origin: Origin
    d: int | None
    v: int | None
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return tuple(r for r in (self.d, self.v) if r is not None)

    def expr(self) -> str:
        return f"perp({_reg(self.d)}, {_reg(self.v)})"

    __str__ = _step_str


class Sega(NamedTuple):
    """SEGA momentum of a TOPK part: ``E = weight * topk(v) + momentum * m``, then
    ``m = beta * m + (1 - beta) * E``; ``m`` lives in run-state slot ``slot``. ``E`` is the step's
    result only while every window in ``apply`` is active; ``m`` is updated at every step."""

    weight: float
    momentum: float
    beta: float
    slot: int
    apply: tuple[int, ...] = ()


class TopK(NamedTuple):
    """``dst = topk(v, k)`` (per channel: SEGA's quantile threshold); with ``sega``, ``dst = E``."""

    dst: int
    origin: Origin
    v: int | None
    k: float
    per_channel: bool = False
    sega: Sega | None = None
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return () if self.v is None else (self.v,)

    def expr(self) -> str:
        args = f"k={ir.num(self.k)}" + (", per_channel" if self.per_channel else "")
        if self.sega is None:
            return f"topk({_reg(self.v)}, {args})"
        s = self.sega
        apply = f" applied if {_guard(s.apply)}" if s.apply else ""
        return (
            f"sega({_reg(self.v)}, {args}, w={ir.num(s.weight)}, momentum={ir.num(s.momentum)}, "
            f"beta={ir.num(s.beta)}, state={s.slot}){apply}"
        )

    __str__ = _step_str


class Salt(NamedTuple):
    """``dst = salt(d, [(v_i, w_i) for the candidates whose windows are active])`` (MagicFusion)."""

    dst: int
    origin: Origin
    d: int | None
    vs: tuple[int | None, ...]
    weights: tuple[float, ...]
    windows: tuple[tuple[int, ...], ...]
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return tuple(r for r in (self.d, *self.vs) if r is not None)

    def expr(self) -> str:
        items = []
        for v, w, g in zip(self.vs, self.weights, self.windows):
            items.append(f"{ir.num(w)}*{_reg(v)}" + (f" if {_guard(g)}" if g else ""))
        return f"salt({_reg(self.d)}; {', '.join(items)})"

    __str__ = _step_str


class Out(NamedTuple):
    """``out[block items] = u + s * sum c * x``; then CFG rescale by ``rescale`` when it is > 0."""

    dst: None
    origin: Origin
    terms: tuple[Term, ...]
    rescale: float = 0.0
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return tuple(t.ref.index for t in self.terms if t.ref.kind == "reg")

    def expr(self) -> str:
        text = f"u + s * ({_terms(self.terms)})" if self.terms else "u"
        return text + (f", cfg_rescale {ir.num(self.rescale)}" if self.rescale else "")

    __str__ = _step_str


Step = Union[Lin, Perp, TopK, Salt, Out]


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled guidance plan: steps plus the tables they index into.

    ``conds`` are the conditioning texts, one model evaluation each (``cond[i]``); ``windows``
    the step windows guards refer to (``w0``...); ``blocks`` how many item blocks the batch splits
    into (one per root of the IR); ``uses[j]`` the conditionings
    block ``j`` reads; ``registers`` and ``slots`` the sizes of the register file and of the
    momentum state; ``frees[n]`` the registers whose last use is step ``n`` (liveness: the
    executor drops them after it); ``texts`` the source prompts the origins point into.
    """

    steps: tuple[Step, ...]
    conds: tuple[str, ...]
    windows: tuple[ir.Window, ...]
    blocks: int
    uses: tuple[tuple[int, ...], ...]
    registers: int
    slots: int
    frees: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...] = field(default=(), compare=False)

    def excerpt(self, origin: Origin, width: int = 40) -> str:
        """The source text a step came from, shortened to ``width`` characters."""
        text = self.texts[origin.prompt] if origin.prompt < len(self.texts) else ""
        piece = " ".join(text[origin.span.start : origin.span.end].split())
        return repr(piece if len(piece) <= width else piece[: width - 3] + "...")

    def describe(self, index: int) -> str:
        """``step 3 (%3 = perp(%0, %2)) from prompt 0, characters 9-29 'AND_PERP monster :-1'``."""
        step = self.steps[index]
        o = step.origin
        return f"step {index} ({step}) from prompt {o.prompt}, characters {o.span.start}-{o.span.end} {self.excerpt(o)}"

    def __str__(self) -> str:
        lines = [f"cond[{i}] = {text!r}" for i, text in enumerate(self.conds)]
        lines += [f"w{i} = {w}" for i, w in enumerate(self.windows)]
        block = -1
        for step in self.steps:
            if self.blocks > 1 and step.block != block:
                block = step.block
                lines.append(f"block {block}: the batch items of prompt {block}")
            text = str(step)
            lines.append(f"{text:<44} # prompt {step.origin.prompt} {self.excerpt(step.origin)}")
        return "\n".join(lines)


def _reg(r: int | None) -> str:
    return "0" if r is None else f"%{r}"


def _guard(guard: tuple[int, ...]) -> str:
    return " and ".join(f"w{g}" for g in guard)


def _terms(terms: Sequence[Term]) -> str:
    out = ""
    for t in terms:
        c = t.coef
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        piece = str(t.ref) if mag == 1 else f"{ir.num(mag)}*{t.ref}"
        if t.guard:
            piece = f"({piece} if {_guard(t.guard)})"
        out = (("-" if sign == "-" else "") + piece) if not out else f"{out} {sign} {piece}"
    return out or "0"


# ---------------------------------------------------------------------------------------------
# Building a plan from the IR


# A linear value at plan time: {(operand, guard): coefficient}; a guard is a sorted tuple of
# window ids that must all be active for the term to count.
_Lin = dict


def build(module: ir.Module, *, texts: Sequence[str] = (), rescale: float = 0.0) -> Plan:
    """Lower an IR module to a plan (one block per root). No recursion; any depth works.

    ``rescale`` is the CFG-rescale factor the :class:`Out` steps apply; ``texts`` the source prompts
    (only for origins in messages and ``__str__``). Conditionings are numbered in IR table order,
    keeping only those the steps read.
    """
    builder = _Builder(module, rescale)
    for block, root in enumerate(module.roots):
        builder.root(root, block)
    return builder.finish(tuple(texts))


class _Builder:
    def __init__(self, module: ir.Module, rescale: float):
        self.module = module
        self.rescale = rescale
        self.steps: list = []
        self.last: dict[int, int] = {}  # register -> index of the last step that reads it
        self.uses: list[set[int]] = [set() for _ in module.roots]  # conditioning ids per block
        self.windows: dict[ir.Window, int] = {}
        self.memo: dict[tuple, int] = {}  # (block, lin terms) -> index of the step computing it
        self.deltas: dict[tuple[int, int], int] = {}  # (block, conditioning) -> step index
        self.registers = 0
        self.slots = 0

    def window(self, window: ir.Window) -> tuple[int, ...]:
        if window is ALWAYS or window.always:
            return ()
        return (self.windows.setdefault(window, len(self.windows)),)

    def register(self) -> int:
        self.registers += 1
        return self.registers - 1

    def push(self, step: Step, reads) -> None:
        n = len(self.steps)
        for r in reads:
            if r is not None:
                self.last[r] = n
        self.steps.append(step)

    def terms(self, lin: _Lin) -> tuple[Term, ...]:
        """``lin``'s non-zero terms (registers only) in register order; marks their use."""
        terms = []
        n = len(self.steps)
        for (ref, g), c in sorted(lin.items()):
            if c != 0:
                terms.append(_new(Term, (c, ref, g)))
                self.last[ref.index] = n
        return tuple(terms)

    def share(self, at: int, guard: tuple[int, ...]) -> int:
        """Reuse the register step ``at`` computes, now also needed under ``guard``: the step keeps
        only the windows both guards require, so it runs whenever either user needs it."""
        step = self.steps[at]
        if step.guard != guard:
            self.steps[at] = step._replace(guard=tuple(g for g in step.guard if g in guard))
        return step.dst

    def delta(self, cond: int, guard: tuple[int, ...], block: int, span: ast.Span) -> int:
        """The register holding ``full(leaf) = cond - u``, one per conditioning and block.

        The subtraction comes first, before any weight: ``w * (c - u)`` is exactly zero when the
        model predicts ``u``, and loses nothing to cancellation when ``w`` is large (``w*c - w*u``
        would leave rounding noise of the size of ``w*c`` for SALT and PERP to amplify).
        """
        at = self.deltas.get((block, cond))
        if at is not None:
            return self.share(at, guard)
        reg = self.register()
        self.deltas[(block, cond)] = len(self.steps)
        self.uses[block].add(cond)
        terms = (_new(Term, (1.0, _ref("cond", cond), ())), _new(Term, (-1.0, U, ())))
        self.steps.append(_new(Lin, (reg, _new(Origin, (block, span)), terms, guard, block)))
        return reg

    def materialize(self, lin: _Lin, guard: tuple[int, ...], block: int, origin: Origin) -> int | None:
        """A register holding ``lin`` whenever ``guard`` holds; ``None`` when ``lin`` is zero.

        Equal values in one block share a register, computed under what every user's guard implies.
        """
        items = [kc for kc in lin.items() if kc[1] != 0]
        if not items:
            return None
        if len(items) == 1:
            (ref, g), c = items[0]
            if not g and c == 1:  # the value is already that register
                return ref.index
        key = (block, frozenset(items))
        at = self.memo.get(key)
        if at is not None:
            return self.share(at, guard)
        reg = self.register()
        self.memo[key] = len(self.steps)
        self.steps.append(_new(Lin, (reg, origin, self.terms(lin), guard, block)))
        return reg

    def group(self, group: ir.Group, values: list[_Lin], ctx: tuple[int, ...], block: int) -> _Lin:
        """``full(group)`` as a linear value, emitting the steps of its non-linear parts.

        ``values[i]`` is ``full`` of part ``i``'s body; ``ctx`` the guard under which the group's
        value is needed. Without PERP or SALT parts the base stays symbolic (fused into whatever
        uses the group). With them it is materialised once, under ``ctx``, and the group's value
        refers to that register rather than repeating its terms: each nesting level then adds a
        constant number of terms, and a 10^4-deep prompt plans in linear time.
        """
        base: _Lin = {}
        others = []
        for part, value in zip(group.parts, values):
            if part.op is AND:
                _add(base, value, part.weight, () if part.window is ALWAYS else self.window(part.window))
            else:
                others.append((part, value))
        if not others:
            return base
        group_origin = _new(Origin, (block, group.span))
        d = None
        if any(p.op is PERP or p.op is SALT for p, _ in others):
            d = self.materialize(base, ctx, block, group_origin)
            total = {} if d is None else {(_ref("reg", d), ()): 1.0}
        else:
            total = dict(base)
        salt: list[tuple[int | None, float, tuple[int, ...]]] = []
        for part, value in others:
            own = () if part.window is ALWAYS else self.window(part.window)
            origin = _new(Origin, (block, part.span))
            if part.op is SALT:
                salt.append((self.materialize(value, _join(ctx, own), block, origin), part.weight, own))
                continue
            guard = () if part.has_momentum else _join(ctx, own)  # momentum: runs every step
            v = self.materialize(value, guard, block, origin)
            if part.op is PERP:
                r, w = self.register(), part.weight
                self.push(_new(Perp, (r, origin, d, v, guard, block)), (d, v))
            else:
                o = part.options
                r, w, sega = self.register(), part.weight, None
                if part.has_momentum:
                    sega, w = Sega(part.weight, o.momentum, o.beta, self.slots, own), 1.0
                    self.slots += 1
                self.push(_new(TopK, (r, origin, v, o.k, o.per_channel, sega, guard, block)), (v,))
            total[(_ref("reg", r), ())] = w
        if salt:
            vs, ws, gs = zip(*salt)
            r = self.register()
            self.push(_new(Salt, (r, group_origin, d, vs, ws, gs, ctx, block)), (d, *vs))
            total[(_ref("reg", r), ())] = 1.0
        return total

    def root(self, root: ir.Group, block: int) -> None:
        # Frame: (group, guard its value is needed under, values of the parts done so far)
        frames: list[tuple[ir.Group, tuple[int, ...], list[_Lin]]] = [(root, (), [])]
        done: _Lin | None = None
        while True:
            group, ctx, values = frames[-1]
            if done is not None:
                values.append(done)
                done = None
            parts = group.parts
            n = len(values)
            while n < len(parts):
                part = parts[n]
                # the guard under which the part's body is needed: the group's, and its own window
                if part.has_momentum:
                    inner = ()
                else:
                    inner = ctx if part.window is ALWAYS else _join(ctx, self.window(part.window))
                if type(part.body) is not ir.Cond:
                    break
                reg = self.delta(part.body.id, inner, block, part.span)
                values.append({(_ref("reg", reg), ()): 1.0})
                n += 1
            if n < len(parts):
                frames.append((part.body, inner, []))
                continue
            frames.pop()
            done = self.group(group, values, ctx, block)
            if not frames:
                break
        origin = _new(Origin, (block, root.span))
        self.steps.append(_new(Out, (None, origin, self.terms(done), self.rescale, (), block)))

    def finish(self, texts: tuple[str, ...]) -> Plan:
        frees: list[list[int]] = [[] for _ in self.steps]
        for r, n in self.last.items():
            frees[n].append(r)
        used = sorted(set().union(*self.uses))
        steps, uses = self.steps, self.uses
        if used != list(range(len(self.module.conds))):  # number the conditionings the plan reads
            slot = {c: i for i, c in enumerate(used)}
            steps = [
                s._replace(terms=tuple(t._replace(ref=Ref("cond", slot[t.ref.index])) if t.ref.kind == "cond" else t for t in s.terms))
                if type(s) in (Lin, Out) else s
                for s in steps
            ]
            uses = [{slot[c] for c in u} for u in uses]
        return Plan(
            steps=tuple(steps),
            conds=tuple(self.module.conds[c] for c in used),
            windows=tuple(self.windows),
            blocks=len(self.module.roots),
            uses=tuple(tuple(sorted(u)) for u in uses),
            registers=self.registers,
            slots=self.slots,
            frees=tuple(tuple(sorted(f)) if f else () for f in frees),
            texts=texts,
        )


# Named tuples built with tuple.__new__ skip their Python-level __new__ (every field given, in
# order): compiling takes microseconds, and a plan has a handful of these per part.
_new = tuple.__new__
# Interned operands %0..%1023 and cond[0..1023]: immutable values, built once, not state.
_REFS = {kind: [Ref(kind, i) for i in range(1024)] for kind in ("reg", "cond")}


def _ref(kind: str, index: int) -> Ref:
    return _REFS[kind][index] if index < 1024 else Ref(kind, index)


def _add(acc: _Lin, lin: _Lin, w: float, guard: tuple[int, ...]) -> None:
    """``acc += w * lin``, each term further guarded by ``guard``."""
    if guard:
        for (ref, g), c in lin.items():
            key = (ref, _join(g, guard))
            acc[key] = acc.get(key, 0.0) + w * c
    else:
        for key, c in lin.items():
            acc[key] = acc.get(key, 0.0) + w * c


def _join(guard: tuple[int, ...], more: tuple[int, ...]) -> tuple[int, ...]:
    if not more:
        return guard
    if not guard:
        return more
    return tuple(sorted(set(guard) | set(more)))
