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

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from neutral_lang.plan import Lin, Out, Perp, Plan, Salt, TopK

from . import strategies

__all__ = [
    "execute", "RunState", "Trace", "TraceRecord", "GuidanceError", "NonFiniteInputError", "NonFiniteWarning",
    "NONFINITE_POLICIES", "check_arguments", "check_cfg_rescale",
]

_HALF = (torch.float16, torch.bfloat16)


class GuidanceError(RuntimeError):
    """A step of a plan failed. ``index`` is the step's position, ``step`` the step itself and
    ``origin`` the prompt span it came from; the message shows all three and the cause."""

    def __init__(self, plan: Plan, index: int, cause: BaseException):
        self.index = index
        self.step = plan.steps[index]
        self.origin = self.step.origin
        super().__init__(f"{plan.describe(index)} failed: {type(cause).__name__}: {cause}")


class NonFiniteInputError(ValueError):
    """A prediction handed to the executor holds NaN or infinite values (``nonfinite="raise"``).

    ``conditioning`` is its index into ``Plan.conds`` (``None`` for the unconditional prediction),
    ``text`` the conditioning's text and ``step`` the denoising step."""

    def __init__(self, message: str, conditioning: int | None, text: str | None, step: int):
        super().__init__(message)
        self.conditioning = conditioning
        self.text = text
        self.step = step


class NonFiniteWarning(RuntimeWarning):
    """A prediction holds NaN or infinite values (``nonfinite="warn"``, the default). The guided
    result is computed anyway, and usually carries the NaN on; some strategies (AND_SALT, per-channel
    AND_TOPK) can hide it, which is why it is reported here rather than left to the image."""


#: What :func:`execute` does with a non-finite prediction: warn (the default) or raise.
NONFINITE_POLICIES = ("warn", "raise")


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
    cfg_rescale: float = 0.0,
    step: int = 0,
    num_steps: int = 1,
    state: RunState | None = None,
    trace: Trace | None = None,
    nonfinite: str = "warn",
) -> torch.Tensor:
    """The guided noise prediction for one denoising step.

    ``uncond`` is ``[B, ...]`` (usually ``[B, C, H, W]``); ``conds`` holds one prediction per
    ``plan.conds`` entry, as one ``[P, B, ...]`` tensor or a sequence of ``[B, ...]`` tensors (no
    stacking needed). ``B`` must be a multiple of ``plan.blocks``; block ``j`` is items
    ``[j * B/blocks, (j + 1) * B/blocks)``. ``guidance_scale`` is ``s`` and ``cfg_rescale`` ``r``
    in [0, 1] (arXiv 2305.08891 section 3.4; 0: off), both finite real numbers (numpy scalars
    included). All arguments are checked here, before any work (:func:`check_arguments`).

    Numbers: a prediction holding NaN or inf is reported by conditioning and step, with a
    :class:`NonFiniteWarning` (``nonfinite="warn"``) or a :class:`NonFiniteInputError`
    (``"raise"``). Finite predictions give a finite result or a :class:`GuidanceError` naming the
    step and prompt span that overflowed the dtype (a weight, or a product of weights, too large).
    """
    check_arguments(plan, uncond, conds, guidance_scale, cfg_rescale, step, num_steps, state, nonfinite)
    if state is None:
        state = RunState(plan.slots)
    finite = _check_finite(plan, uncond, conds, step, nonfinite)
    saved = (list(state.momentum), state.last_step)
    try:
        out = _Run(plan, uncond, conds, float(guidance_scale), float(cfg_rescale), step, num_steps, state, trace).run()
    except BaseException:
        state.momentum, state.last_step = saved  # a failed step leaves the run state as it was
        raise
    if finite and not bool(torch.isfinite(out).all()):
        # Rare: finite inputs, non-finite result. Run again, checking every step, to name the part
        # that overflowed; the state goes back to what it was before this call.
        state.momentum, state.last_step = saved
        probe = RunState(plan.slots)
        probe.momentum, probe.last_step = list(saved[0]), saved[1]
        _Run(plan, uncond, conds, float(guidance_scale), float(cfg_rescale), step, num_steps, probe, None,
             check=True).run()
        raise FloatingPointError(  # the checked run found nothing: name the output after all
            f"The guided result holds non-finite values though every prediction is finite ({out.dtype})."
        )
    return out


class _Run:
    def __init__(self, plan, uncond, conds, scale, rescale, step, num_steps, state, trace, check=False):
        if step == 0 and state.last_step is not None:
            state.reset()
        self.plan = plan
        self.scale = scale
        self.rescale = rescale
        self.check = check  # verify every step's result is finite (locating an overflow)
        self.dtype = uncond.dtype
        self.compute = torch.float32 if uncond.dtype in _HALF else uncond.dtype
        self.u = uncond if uncond.dtype == self.compute else uncond.to(self.compute)
        self.conds = conds
        self.limit = torch.finfo(self.compute).max
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
                c = scale * t.coef
                if not abs(c) <= self.limit:
                    raise OverflowError(
                        f"the coefficient {c:g} of {t.ref} (a weight, or a product of nested weights, times "
                        f"the guidance scale) does not fit {self.compute} (largest {self.limit:g})"
                    )
                pairs.append((c, x, t.ref.index if t.ref.kind == "reg" else None))
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

    def run(self) -> torch.Tensor:
        plan, regs = self.plan, self.regs
        for index, (step, frees) in enumerate(zip(plan.steps, plan.frees)):
            if step.block != self.block:
                self.enter(step.block)
            self.dying = frees
            try:
                if not step.guard or self.holds(step.guard):
                    value = _HANDLERS[type(step)](self, step, index)
                    if step.dst is not None:
                        regs[step.dst] = value
                    if self.check:
                        self.verify(step, value)
            except GuidanceError:
                raise
            except Exception as error:
                raise GuidanceError(plan, index, error) from error
            for r in frees:
                regs[r] = None
        self.state.last_step = self.step
        out = self.out  # every block ends with its Out step
        return out if out.dtype == self.dtype else out.to(self.dtype)

    def verify(self, step, value: torch.Tensor | None) -> None:
        """Raise when ``value`` (or, for an Out step, the block's result in the output dtype) is not
        finite: the first such step is where finite inputs overflowed."""
        if type(step) is Out:
            value = self.out if self.plan.blocks == 1 else self.out[self.items]
            if value.dtype != self.dtype:
                value = value.to(self.dtype)
            dtype = self.dtype
        else:
            dtype = self.compute
        if value is not None and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(
                f"finite predictions gave non-finite values in {dtype} (largest {torch.finfo(dtype).max:g}): "
                "a weight, or a product of nested weights and the guidance scale, is too large for this dtype"
            )

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

    def do_out(self, step: Out, index: int) -> None:
        if self.out is None and self.plan.blocks > 1:
            self.out = torch.empty_like(self.u)
        target = None if self.plan.blocks == 1 else self.out[self.items]
        u = self.ub
        scale = self.scale
        if self.rescale:
            delta = self.combine(self.pairs(step.terms))
            if delta is None:
                result = u.clone()
            else:
                guided = torch.add(u, delta, alpha=scale)
                result = strategies.cfg_rescale(guided, delta.add_(u), self.rescale)
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


#: One handler per step kind (``neutral_lang.plan.Step``); each returns the value of the step's
#: register (``Out`` writes the block's result and returns None).
_HANDLERS = {Lin: _Run.do_lin, Perp: _Run.do_perp, TopK: _Run.do_topk, Salt: _Run.do_salt, Out: _Run.do_out}


def _real(name: str, value: Any) -> float:
    """``value`` as a float: Python and numpy real numbers (not bool, not text), finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Expected {name} to be a real number (float, int or numpy scalar), but got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Expected {name} to be finite, but got {value}.")
    return value


def check_cfg_rescale(value: Any) -> float:
    """``value`` as a CFG-rescale factor: a finite real number in [0, 1] (``TypeError``/``ValueError``
    otherwise). The diffusers runner checks ``guidance_rescale`` with it before a run starts."""
    r = _real("cfg_rescale", value)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"Expected cfg_rescale to be between 0.0 and 1.0, but got {value!r}.")
    return r


def _step_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected {name} to be an int, but got {type(value).__name__}.")
    if value < least:
        raise ValueError(f"Expected {name} >= {least}, but got {value}.")


def check_arguments(
    plan: Plan,
    uncond: Any,
    conds: Any,
    guidance_scale: Any,
    cfg_rescale: Any = 0.0,
    step: Any = 0,
    num_steps: Any = 1,
    state: Any = None,
    nonfinite: str = "warn",
) -> None:
    """Every check of :func:`execute`'s arguments, in one place, before any work.

    Raises ``TypeError`` for a value of the wrong type (naming the expected one) and ``ValueError``
    for one out of range: a non-finite scale, ``cfg_rescale`` outside [0, 1], a batch that does not
    split over the plan's prompts, conditionings of the wrong count, shape or device.
    """
    _real("guidance_scale", guidance_scale)
    check_cfg_rescale(cfg_rescale)
    _step_count("step", step, 0)
    _step_count("num_steps", num_steps, 1)
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"Expected nonfinite to be one of {NONFINITE_POLICIES}, but got {nonfinite!r}.")
    if state is not None:
        if not isinstance(state, RunState):
            raise TypeError(f"Expected state to be a RunState (Program.new_state()), but got {type(state).__name__}.")
        if len(state.momentum) != plan.slots:
            raise ValueError(
                f"This run state holds {len(state.momentum)} momentum slots but the program has "
                f"{plan.slots}: make it with this program's new_state()."
            )
    if not isinstance(uncond, torch.Tensor) or not uncond.is_floating_point():
        kind = uncond.dtype if isinstance(uncond, torch.Tensor) else type(uncond).__name__
        raise TypeError(f"Expected uncond to be a floating point tensor [B, C, H, W], but got {kind}.")
    if uncond.ndim < 1:
        raise ValueError("Expected uncond to have a batch dimension [B, C, H, W], but got a 0-d tensor.")
    batch = uncond.shape[0]
    if batch % plan.blocks:
        raise ValueError(
            f"This program has {plan.blocks} prompts, so the batch must be a multiple of {plan.blocks} "
            f"(item b uses prompt b // (B // {plan.blocks})); got a batch of {batch}."
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


def _check_finite(plan: Plan, uncond: torch.Tensor, conds: Any, step: int, nonfinite: str) -> bool:
    """True when every prediction is finite; otherwise warn or raise naming the first bad one.

    Only the batch items that read a conditioning count (items of a list program's other prompts
    may hold anything). One reduction per prediction and a single device synchronisation."""
    inputs = [uncond, *(conds[i] for i in range(len(plan.conds)))]
    if plan.blocks > 1:  # a conditioning's value matters only on the items of blocks that read it
        size = uncond.shape[0] // plan.blocks
        readers = [[j for j, uses in enumerate(plan.uses) if i in uses] for i in range(len(plan.conds))]
        inputs[1:] = [
            torch.cat([x[j * size : (j + 1) * size] for j in blocks]) if blocks else x[:0]
            for x, blocks in zip(inputs[1:], readers)
        ]
    flags = torch.stack([torch.isfinite(x).all() for x in inputs])
    if bool(flags.all()):
        return True
    bad = int((~flags).nonzero()[0, 0])
    if bad == 0:
        what, index, text = "the unconditional prediction (uncond)", None, None
    else:
        index, text = bad - 1, plan.conds[bad - 1]
        what = f"the prediction for conditioning {index} {text!r}"
    message = (
        f"Step {step}: {what} holds NaN or infinite values; the model or its inputs produced them "
        "(AND_SALT and per-channel AND_TOPK may hide them in the result)."
    )
    if nonfinite == "raise":
        raise NonFiniteInputError(message, index, text, step)
    warnings.warn(NonFiniteWarning(message), stacklevel=4)
    return False
