"""Runs a guidance plan (``neutral_lang.plan``) on torch tensors: a small interpreter.

Like torch.fx's Interpreter: one loop over the flat steps, a handler per step kind, a register
file whose entries are dropped after their last use (``Plan.frees``), and every error names the
failing step and the prompt text it came from. No recursion, so any nesting depth runs.

- **Memory.** A linear step (``Lin``, ``Out``) writes into the buffer of a register that dies at
  that step, when the run allocated it itself, instead of allocating: ``u + s * (d0 + d1)`` costs
  no tensor beyond the two deltas. (On CPU a fresh large tensor also costs page faults.)

- **Batching.** All batch items of a block (one prompt's items, or the whole batch for a single
  prompt) go through each step together; the strategies reduce per item.
- **Dtypes and devices.** Whatever device the inputs are on; float16/bfloat16 inputs are upcast
  to float32 once (each conditioning on first use) and the result is cast back. float32 and
  float64 are computed in themselves.
- **Inputs are never modified.** Only tensors the executor allocated are written in place, and
  the result never aliases an input.
- **Run state** (SEGA momentum of TOPK parts, step bookkeeping) lives in a :class:`RunState` the
  caller passes at every step of a run; none is kept in this module. Without one, each call starts
  from zero momentum (a fresh state per call).
- **Tracing.** With a :class:`Trace`, per-step intermediates are recorded for visualisation (SALT
  winner maps, TOPK masks, PERP components). Without one nothing extra is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from neutral_lang.plan import Lin, Out, Perp, Plan, Salt, TopK

from . import strategies

__all__ = ["execute", "RunState", "Trace", "TraceRecord", "GuidanceError"]

_HALF = (torch.float16, torch.bfloat16)


class GuidanceError(RuntimeError):
    """A step of a plan failed. ``index`` is the step's position, ``step`` the step itself and
    ``origin`` the prompt span it came from; the message shows all three and the cause."""

    def __init__(self, plan: Plan, index: int, cause: BaseException):
        self.index = index
        self.step = plan.steps[index]
        self.origin = self.step.origin
        super().__init__(f"{plan.describe(index)} failed: {type(cause).__name__}: {cause}")


class RunState:
    """What a run carries from step to step: SEGA momentum ``m`` per TOPK part with momentum.

    Make one per run (``Program.new_state()``) and pass it at every step. A state that sees step 0
    again after having run starts over (a new run), so reusing one across runs is safe; call one
    step once (a second call at the same step would update the momentum twice).
    """

    def __init__(self, slots: int):
        self.momentum: list[torch.Tensor | None] = [None] * slots
        self.last_step: int | None = None

    def reset(self) -> None:
        self.momentum = [None] * len(self.momentum)
        self.last_step = None

    def __repr__(self) -> str:
        held = sum(m is not None for m in self.momentum)
        return f"RunState(slots={len(self.momentum)}, held={held}, last_step={self.last_step})"


@dataclass
class TraceRecord:
    """Intermediates of one plan step at one denoising step. ``data`` by kind:

    - PERP: ``perp`` (the perpendicular component added) and ``parallel`` (``v - perp``, removed);
    - TOPK: ``kept`` (bool mask of the elements ``topk`` kept; an element that is exactly zero reads
      as not kept) and, with momentum, ``edit`` (``E``) and ``applied`` (a bool);
    - SALT: ``winners`` (int64 map: 0 where the base wins, ``i`` where the i-th *active* candidate
      wins) and ``candidates`` (indices into the step's candidate list that were active).
    """

    index: int
    step: int
    kind: str
    prompt: int
    span: tuple[int, int]
    text: str
    data: dict[str, Any] = field(default_factory=dict)


class Trace:
    """Collects :class:`TraceRecord` s across calls; pass the same one at every step."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def of(self, kind: str) -> list[TraceRecord]:
        return [r for r in self.records if r.kind == kind]


def execute(
    plan: Plan,
    uncond: torch.Tensor,
    conds: torch.Tensor | Sequence[torch.Tensor] | None,
    guidance_scale: float,
    *,
    step: int = 0,
    num_steps: int = 1,
    state: RunState | None = None,
    trace: Trace | None = None,
) -> torch.Tensor:
    """The guided noise prediction for one denoising step.

    ``uncond`` is ``[B, ...]`` (usually ``[B, C, H, W]``); ``conds`` holds one prediction per
    ``plan.conds`` entry, as one ``[P, B, ...]`` tensor or a sequence of ``[B, ...]`` tensors (no
    stacking needed). ``B`` must be a multiple of ``plan.blocks``; block ``j`` is items
    ``[j * B/blocks, (j + 1) * B/blocks)``.
    """
    return _Run(plan, uncond, conds, step, num_steps, state, trace).run(float(guidance_scale))


class _Run:
    def __init__(self, plan, uncond, conds, step, num_steps, state, trace):
        _check_inputs(plan, uncond, conds)
        if state is None:
            state = RunState(plan.slots)
        elif len(state.momentum) != plan.slots:
            raise ValueError(
                f"This run state holds {len(state.momentum)} momentum slots but the program has "
                f"{plan.slots}: make it with this program's new_state()."
            )
        if step == 0 and state.last_step is not None:
            state.reset()
        self.plan = plan
        self.dtype = uncond.dtype
        self.compute = torch.float32 if uncond.dtype in _HALF else uncond.dtype
        self.u = uncond if uncond.dtype == self.compute else uncond.to(self.compute)
        self.conds = conds
        self.cache: list[torch.Tensor | None] = [None] * len(plan.conds)
        self.step = step
        self.state = state
        self.trace = trace
        self.active = [w.contains(step, num_steps) for w in plan.windows]
        self.batch = uncond.shape[0]
        self.size = self.batch // plan.blocks
        self.block = -1
        self.out: torch.Tensor | None = None
        self.regs: list[torch.Tensor | None] = [None] * plan.registers
        self.owned: set[int] = set()  # registers holding tensors this run allocated (Lin sums)
        self.dying: tuple[int, ...] = ()  # registers whose last use is the current step

    # -- operands -------------------------------------------------------------------------------

    def cond(self, i: int) -> torch.Tensor:
        x = self.cache[i]
        if x is None:
            x = self.conds[i]
            if x.dtype != self.compute:
                x = x.to(self.compute)
            self.cache[i] = x
        return x

    def enter(self, block: int) -> None:
        self.block = block
        if self.plan.blocks == 1:
            self.ub, self.items = self.u, slice(None)
        else:
            self.items = slice(block * self.size, (block + 1) * self.size)
            self.ub = self.u[self.items]

    def load(self, ref) -> torch.Tensor | None:
        kind = ref.kind
        if kind == "reg":
            return self.regs[ref.index]
        if kind == "cond":
            x = self.cond(ref.index)
            return x if self.plan.blocks == 1 else x[self.items]
        return self.ub

    def holds(self, guard: tuple[int, ...]) -> bool:
        active = self.active
        for g in guard:
            if not active[g]:
                return False
        return True

    def pairs(self, terms, scale: float = 1.0) -> list:
        """``(coefficient, tensor, register or None)`` for the active, non-zero terms."""
        pairs = []
        for t in terms:
            if t.guard and not self.holds(t.guard):
                continue
            x = self.load(t.ref)
            if x is not None:
                pairs.append((scale * t.coef, x, t.ref.index if t.ref.kind == "reg" else None))
        return pairs

    def combine(self, pairs: list, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """``sum c * x`` over ``pairs``, into ``out``, or into the buffer of a register that dies
        here (one this run allocated, read by no other term), or else into a fresh tensor.

        Writing into a dying register's buffer is the executor's memory planning: a sum of leaf
        deltas allocates nothing beyond the deltas themselves, which on CPU also saves the page
        faults of fresh large allocations.
        """
        if not pairs:
            return None
        if out is None:
            for i, (c, x, r) in enumerate(pairs):
                if r in self.dying and r in self.owned and sum(y is x for _, y, _ in pairs) == 1:
                    rest = pairs[:i] + pairs[i + 1 :]
                    if c != 1:
                        x.mul_(c)
                    for c2, y, _ in rest:
                        x.add_(y, alpha=c2)
                    return x
        # Start from a term of coefficient 1 when there is one: x + c * y is one kernel.
        first = next((i for i, (c, _, _) in enumerate(pairs) if c == 1), 0)
        if first:
            pairs = [pairs[first], *pairs[:first], *pairs[first + 1 :]]
        (c, x, _), rest = pairs[0], pairs[1:]
        if c == 1 and rest:
            (c2, y, _), rest = rest[0], rest[1:]
            acc = torch.add(x, y, alpha=c2) if out is None else torch.add(x, y, alpha=c2, out=out)
        else:
            acc = torch.mul(x, c) if out is None else torch.mul(x, c, out=out)
        for c, x, _ in rest:
            acc.add_(x, alpha=c)
        return acc

    # -- the loop -------------------------------------------------------------------------------

    def run(self, scale: float) -> torch.Tensor:
        plan, regs = self.plan, self.regs
        for index, (step, frees) in enumerate(zip(plan.steps, plan.frees)):
            if step.block != self.block:
                self.enter(step.block)
            self.dying = frees
            try:
                if step.guard and not self.holds(step.guard):
                    pass
                elif type(step) is Out:
                    self.do_out(step, scale)
                else:
                    regs[step.dst] = _HANDLERS[type(step)](self, step, index)
            except GuidanceError:
                raise
            except Exception as error:
                raise GuidanceError(plan, index, error) from error
            for r in frees:
                regs[r] = None
        self.state.last_step = self.step
        out = self.out  # every block ends with its Out step
        return out if out.dtype == self.dtype else out.to(self.dtype)

    def do_lin(self, step: Lin, index: int):
        self.owned.add(step.dst)  # a sum is always a tensor of this run's own
        return self.combine(self.pairs(step.terms))

    def do_perp(self, step: Perp, index: int):
        v = self.regs[step.v] if step.v is not None else None
        if v is None:
            return None
        d = self.regs[step.d] if step.d is not None else None
        # perp(0, v) = v; a copy, so that no two registers share a buffer (see combine)
        result = v.clone() if d is None else strategies.perpendicular(d, v)
        if self.trace is not None:
            self.record(index, "PERP", perp=result, parallel=v - result)
        return result

    def do_topk(self, step: TopK, index: int):
        v = self.regs[step.v] if step.v is not None else None
        if v is None:
            if step.sega is None:
                return None
            v = torch.zeros_like(self.ub)
        keep = strategies.topk_per_channel if step.per_channel else strategies.topk
        kept = keep(v, step.k)
        sega = step.sega
        if sega is None:
            if self.trace is not None:
                self.record(index, "TOPK", kept=kept != 0)
            return kept
        edit, self.state.momentum[sega.slot] = strategies.sega_momentum(
            sega.weight * kept, self.state.momentum[sega.slot], sega.momentum, sega.beta
        )
        applied = self.holds(sega.apply)
        if self.trace is not None:
            self.record(index, "TOPK", kept=kept != 0, edit=edit, applied=applied)
        return edit if applied else None

    def do_salt(self, step: Salt, index: int):
        vs, ws, which = [], [], []
        for n, (v, w, g) in enumerate(zip(step.vs, step.weights, step.windows)):
            if g and not self.holds(g):
                continue
            x = self.regs[v] if v is not None else None
            vs.append(torch.zeros_like(self.ub) if x is None else x)
            ws.append(w)
            which.append(n)
        if not vs:
            return None
        d = self.regs[step.d] if step.d is not None else None
        if d is None:
            d = torch.zeros_like(self.ub)
        if self.trace is not None:
            self.record(index, "SALT", winners=strategies.salt_winners(d, vs), candidates=tuple(which))
        return strategies.salt(d, vs, ws)

    def do_out(self, step: Out, scale: float) -> None:
        if self.out is None and self.plan.blocks > 1:
            self.out = torch.empty_like(self.u)
        target = None if self.plan.blocks == 1 else self.out[self.items]
        u = self.ub
        if step.rescale:
            delta = self.combine(self.pairs(step.terms))
            if delta is None:
                result = u.clone()
            else:
                guided = torch.add(u, delta, alpha=scale)
                result = strategies.cfg_rescale(guided, delta.add_(u), step.rescale)
            if target is not None:
                target.copy_(result)
                return
            self.out = result
            return
        pairs = self.pairs(step.terms, scale)
        if target is not None:  # one prompt's items of a list program
            self.combine([(1.0, u, None), *pairs], target)
        elif pairs:
            # s * sum(c * x) first, into a fresh tensor or a dying one of ours, then + u
            self.out = self.combine(pairs).add_(u)
        else:
            self.out = u.clone()

    def record(self, index: int, kind: str, **data) -> None:
        o = self.plan.steps[index].origin
        text = self.plan.texts[o.prompt][o.span.start : o.span.end] if o.prompt < len(self.plan.texts) else ""
        self.trace.records.append(
            TraceRecord(index, self.step, kind, o.prompt, (o.span.start, o.span.end), text, data)
        )


_HANDLERS = {Lin: _Run.do_lin, Perp: _Run.do_perp, TopK: _Run.do_topk, Salt: _Run.do_salt}


def _check_inputs(plan: Plan, uncond: Any, conds: Any) -> None:
    if not isinstance(uncond, torch.Tensor) or not uncond.is_floating_point():
        kind = uncond.dtype if isinstance(uncond, torch.Tensor) else type(uncond).__name__
        raise TypeError(f"Expected uncond to be a floating point tensor [B, C, H, W], but got {kind}.")
    if uncond.ndim < 1:
        raise ValueError("Expected uncond to have a batch dimension [B, C, H, W], but got a 0-d tensor.")
    batch = uncond.shape[0]
    if batch % plan.blocks:
        raise ValueError(
            f"The batch of {batch} items does not split evenly over {plan.blocks} prompts: "
            f"give a multiple of {plan.blocks} items (item b uses prompt b // (B // {plan.blocks}))."
        )
    count = 0 if conds is None else len(conds)
    if count != len(plan.conds):
        raise ValueError(
            f"Expected {len(plan.conds)} conditionings (one per entry of Program.prompts: "
            f"{list(plan.conds)!r}), but got {count}."
        )
    for i in range(count):
        c = conds[i]
        if not isinstance(c, torch.Tensor) or not c.is_floating_point():
            raise TypeError(f"Expected conds[{i}] ({plan.conds[i]!r}) to be a floating point tensor.")
        if c.shape != uncond.shape:
            raise ValueError(
                f"conds[{i}] ({plan.conds[i]!r}) has shape {tuple(c.shape)}, but uncond has shape "
                f"{tuple(uncond.shape)}; conds is [P, B, C, H, W] in Program.prompts order."
            )
        if c.device != uncond.device:
            raise ValueError(f"conds[{i}] is on {c.device} but uncond is on {uncond.device}.")
