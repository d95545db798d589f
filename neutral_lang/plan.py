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
  the model predicts ``u``; no cancellation with large weights). Every other linear piece of
  docs/semantics.md (bases, weighted sums, ``base + aux``) is folded at plan time into one Lin over
  registers, materialised only where a strategy or the output needs it;
- :class:`Perp`, :class:`TopK`, :class:`Salt`: the non-linear strategies;
- :class:`Out`: ``u + s * sum c * x`` (then CFG rescale, ``r`` given at run time like ``s``)
  written to the block's batch items.

Windows (``start``/``end``) become guards: a step runs only when every window in its ``guard``
contains the current step; a term of a :class:`Lin` likewise. A register that was not computed, or
whose terms were all inactive, holds *zero* (``None`` in the executor), and every step reads it as
such. A TOPK part with momentum runs at every step, whatever its ancestors' windows (its state is
updated at every step, docs/language.md, "Keyword options"); its own window only decides whether its ``E`` is applied.

A list of prompts compiles to one *block* of steps per prompt; block ``j`` works on the batch
items of prompt ``j``. No torch here: plans are data, built and printed without a GPU stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence, Union

from . import ast, ir
from .ast import Span
from .ir import ALWAYS, AND, PERP, SALT, TOPK

__all__ = [
    "Ref", "U", "Term", "Origin", "Step", "Lin", "Perp", "TopK", "Sega", "Salt", "Out", "Plan", "build",
    "liveness", "OPERATORS", "READS_BASE", "STEP_KINDS", "UnknownOperatorError", "WEIGHT_LIMITS", "HEADROOM",
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
# prompt's batch items it works on) and ``reads()`` (the registers it reads: liveness is derived
# from it). Steps are named tuples: immutable, cheap to build, printable one per line.


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
    """``out[block items] = u + s * sum c * x``; then CFG rescale when the run asks for it
    (``r`` is a run-time argument, like ``s``: docs/semantics.md, "CFG rescale")."""

    dst: None
    origin: Origin
    terms: tuple[Term, ...]
    guard: tuple[int, ...] = ()
    block: int = 0

    def reads(self) -> tuple[int, ...]:
        return tuple(t.ref.index for t in self.terms if t.ref.kind == "reg")

    def expr(self) -> str:
        return f"u + s * ({_terms(self.terms)})" if self.terms else "u"

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


#: How much larger than the product of weights down the tree a value may grow before it is written:
#: the guidance scale (up to 32) times a prediction delta ``|eps - u|`` (up to 32; unit-variance
#: noise predictions differ by far less).
HEADROOM = 2.0**10

#: The largest product of weights, per dtype name, that guidance can carry without overflow:
#: the dtype's largest finite value over :data:`HEADROOM`. float16/bfloat16 runs compute in float32
#: but write their result in their own dtype, so their limit is their own. Lint (rule NP406) checks
#: prompts against float32's; the executor raises for whatever actually overflows at run time.
WEIGHT_LIMITS = {
    "float16": 65504.0 / HEADROOM,
    "bfloat16": 3.3895313892515355e38 / HEADROOM,
    "float32": 3.4028234663852886e38 / HEADROOM,
    "float64": 1.7976931348623157e308 / HEADROOM,
}


class UnknownOperatorError(NotImplementedError):
    """An IR operator the plan builder has no rule for (a keyword added to the language but not
    to :data:`OPERATORS`). Raised rather than guessed: a new operator must never silently run
    as another one."""


def build(module: ir.Module, *, texts: Sequence[str] = ()) -> Plan:
    """Lower an IR module to a plan (one block per root). No recursion; any depth works.

    ``texts`` are the source prompts (only for origins in messages and ``__str__``).
    Conditionings keep the IR table's numbering: the compiler's :data:`~neutral_lang.passes.PASSES`
    end with ``drop_unused_conditionings``, which leaves only the texts some part uses. CFG rescale is
    not part of the plan: it is a run-time argument of the executor, like the guidance scale.

    Raises :class:`UnknownOperatorError` for an operator without a rule in :data:`OPERATORS`.
    """
    builder = _Builder(module)
    for block, root in enumerate(module.roots):
        builder.root(root, block)
    return builder.finish(tuple(texts))


def liveness(steps: Sequence[Step]) -> tuple[tuple[int, ...], ...]:
    """``frees[n]``: the registers whose last reader is step ``n``, derived from ``Step.reads()``."""
    last: dict[int, int] = {}
    for n, step in enumerate(steps):
        for r in step.reads():
            last[r] = n
    frees: list[list[int]] = [[] for _ in steps]
    for r, n in last.items():
        frees[n].append(r)
    return tuple(tuple(sorted(f)) for f in frees)


class _Builder:
    def __init__(self, module: ir.Module):
        self.module = module
        self.steps: list[Step] = []
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
        terms = (Term(1.0, Ref("cond", cond)), Term(-1.0, U))
        self.steps.append(Lin(reg, Origin(block, span), terms, guard, block))
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
        self.steps.append(Lin(reg, origin, _terms_of(lin), guard, block))
        return reg

    # -- one rule per operator: what a part adds to its group's value --------------------------
    # Each takes (part, value of its body, the part's own window guard, the group's context) and
    # returns (register, coefficient) of the term it adds to ``full(group)``, or None when the
    # part is collected for a step that covers several parts (SALT).

    def op_perp(self, group: _GroupState, part: ir.Part, value: _Lin, own: tuple[int, ...]):
        guard = _join(group.ctx, own)
        origin = Origin(group.block, part.span)
        v = self.materialize(value, guard, group.block, origin)
        r = self.register()
        self.steps.append(Perp(r, origin, group.d, v, guard, group.block))
        return r, part.weight

    def op_topk(self, group: _GroupState, part: ir.Part, value: _Lin, own: tuple[int, ...]):
        guard = () if part.has_momentum else _join(group.ctx, own)  # momentum: runs every step
        origin = Origin(group.block, part.span)
        v = self.materialize(value, guard, group.block, origin)
        o = part.options
        r, w, sega = self.register(), part.weight, None
        if part.has_momentum:
            sega, w = Sega(part.weight, o.momentum, o.beta, self.slots, own), 1.0
            self.slots += 1
        self.steps.append(TopK(r, origin, v, o.k, o.per_channel, sega, guard, group.block))
        return r, w

    def op_salt(self, group: _GroupState, part: ir.Part, value: _Lin, own: tuple[int, ...]):
        origin = Origin(group.block, part.span)
        v = self.materialize(value, _join(group.ctx, own), group.block, origin)
        group.salt.append((v, part.weight, own))
        return None

    def group(self, group: ir.Group, values: list[_Lin], ctx: tuple[int, ...], block: int) -> _Lin:
        """``full(group)`` as a linear value, emitting the steps of its non-linear parts.

        ``values[i]`` is ``full`` of part ``i``'s body; ``ctx`` the guard under which the group's
        value is needed. AND parts sum into the base; every other operator goes through its rule
        in :data:`OPERATORS`. Without parts that read the base (:data:`READS_BASE`) the base stays
        symbolic (fused into whatever uses the group). With them it is materialised once, under
        ``ctx``, and the group's value refers to that register rather than repeating its terms:
        each nesting level then adds a constant number of terms, and a 10^4-deep prompt plans in
        linear time.
        """
        base: _Lin = {}
        others = []
        for part, value in zip(group.parts, values):
            if part.op is AND:
                _add(base, value, part.weight, () if part.window is ALWAYS else self.window(part.window))
            elif part.op in OPERATORS:
                others.append((part, value))
            else:
                raise UnknownOperatorError(
                    f"The plan builder has no rule for the operator {part.op!s} "
                    f"(known: {', '.join(str(op) for op in (AND, *OPERATORS))}); add one to OPERATORS."
                )
        if not others:
            return base
        state = _GroupState(ctx, block)
        if any(p.op in READS_BASE for p, _ in others):
            state.d = self.materialize(base, ctx, block, Origin(block, group.span))
            total = {} if state.d is None else {(Ref("reg", state.d), ()): 1.0}
        else:
            total = dict(base)
        for part, value in others:
            own = () if part.window is ALWAYS else self.window(part.window)
            term = OPERATORS[part.op](self, state, part, value, own)
            if term is not None:
                r, w = term
                total[(Ref("reg", r), ())] = w
        if state.salt:
            vs, ws, gs = zip(*state.salt)
            r = self.register()
            self.steps.append(Salt(r, Origin(block, group.span), state.d, vs, ws, gs, ctx, block))
            total[(Ref("reg", r), ())] = 1.0
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
                values.append({(Ref("reg", reg), ()): 1.0})
                n += 1
            if n < len(parts):
                frames.append((part.body, inner, []))
                continue
            frames.pop()
            done = self.group(group, values, ctx, block)
            if not frames:
                break
        self.steps.append(Out(None, Origin(block, root.span), _terms_of(done), (), block))

    def finish(self, texts: tuple[str, ...]) -> Plan:
        steps = tuple(self.steps)
        return Plan(
            steps=steps,
            conds=self.module.conds,
            windows=tuple(self.windows),
            blocks=len(self.module.roots),
            uses=tuple(tuple(sorted(u)) for u in self.uses),
            registers=self.registers,
            slots=self.slots,
            frees=liveness(steps),
            texts=texts,
        )


class _GroupState:
    """What the operator rules of one group share: its context guard, its block, the register
    of its base (``d``, None while zero or not needed) and the SALT candidates collected so far."""

    __slots__ = ("ctx", "block", "d", "salt")

    def __init__(self, ctx: tuple[int, ...], block: int):
        self.ctx = ctx
        self.block = block
        self.d: int | None = None
        self.salt: list[tuple[int | None, float, tuple[int, ...]]] = []


#: The plan builder's rule for every operator but AND (which sums into the group's base). A new
#: operator needs a row here, a step kind in this module and a handler in the torch executor;
#: ``build`` raises :class:`UnknownOperatorError` for an operator without a row.
OPERATORS = {PERP: _Builder.op_perp, TOPK: _Builder.op_topk, SALT: _Builder.op_salt}

#: Operators whose step reads the group's base ``d`` (docs/semantics.md: ``perp(d, v)``, ``salt(d, ...)``).
READS_BASE = frozenset({PERP, SALT})

#: The step kind each operator's rule emits (AND parts become :class:`Lin` terms).
STEP_KINDS = {AND: Lin, PERP: Perp, TOPK: TopK, SALT: Salt}


def _terms_of(lin: _Lin) -> tuple[Term, ...]:
    """``lin``'s non-zero terms in operand order."""
    return tuple(Term(c, ref, g) for (ref, g), c in sorted(lin.items()) if c != 0)


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
