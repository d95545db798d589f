"""``run(program, pipe, **kwargs)``: a compiled program drives a diffusers pipeline's guidance.

The pipeline keeps its own loop (scheduler, latents, VAE, callbacks); the program takes over the
one thing it must: what the denoiser predicts for each batch item. Everything that depends on the
model family (which module is the denoiser, which side modules such as ControlNet share its batch,
how texts are encoded, what the uncond is) is asked of the pipeline's adapter
(:mod:`.adapters`), found -- or the pipeline refused -- before any work. The text is encoded up
front, A1111's way (:mod:`.text_encoding`), and the pipeline is called with ``prompt_embeds`` so
that it skips its own encoding. For the duration of the call two hooks sit on the denoiser
(``pipe.unet`` for SD/SDXL), and two on each side module (a ControlNet sees the same expanded
batch; its residuals go to the denoiser in place of the pipeline's):

- a forward **pre-hook** (with kwargs) replaces the pipeline's UNet batch (``[u, c]`` under CFG,
  ``[c]`` without) by one batch of ``B`` uncond samples followed by one sample per (item,
  conditioning) the program needs at this step: latents repeated, ``encoder_hidden_states`` the
  embeddings of this step's schedule variants (``[from:to:when]``, ``[a|b]``), and every other
  per-sample input (timestep, SDXL's ``text_embeds``/``time_ids``, inpainting channels, ControlNet
  residuals) gathered along;
- a forward **hook** splits the UNet output into ``uncond [B, C, H, W]`` and ``conds [P, B, C, H,
  W]`` and returns ``program.guide(...)`` in the shape the pipeline expects: ``cat([g, g])`` under
  CFG, so that the pipeline's ``u + s * (c - u)`` is ``g`` exactly, or ``g`` alone when the
  pipeline does no CFG (``guidance_scale <= 1``, LCM): then ``g = u + full(root)`` at scale 1, and
  a program of one conditioning per prompt runs no uncond rows at all (``g`` is ``c``).

So every step is exactly one denoiser call (``max_batch`` splits it into equal-result pieces).
The hooks are removed in a ``finally``; nothing else on the pipeline is touched. A hook acts only
on calls from the run's own thread, and runs on one denoiser take turns (``_exclusive``).

Steps: ``step`` is the number of UNet calls made so far in this run, and ``num_steps`` the number
of UNet calls the pipeline's loop makes (``pipe._num_timesteps``, which diffusers sets to
``len(timesteps)`` before its loop; ``len(pipe.scheduler.timesteps)`` if absent). For first-order
samplers (DDIM, Euler, DPM-Solver++) these are the sampling steps; second-order samplers that
call the model twice per step (Heun, DPM2) count each call, so fractions (``0.5``) mean the same
point of the trajectory while integer step numbers count calls. ``img2img`` with ``strength < 1``
counts only the steps it runs. Prompt-editing schedules and ``start``/``end`` windows both use
these two numbers. With ``denoising_end`` (an SDXL base) or ``denoising_start`` (a refiner) the
pipeline runs part of a trajectory: ``num_steps`` is then the whole trajectory's length
(``len(pipe.scheduler.timesteps)``) and the refiner's steps are numbered after the base's, so a
``[a:b:0.5]`` switches at the same point whether the trajectory runs in one pipeline or two.

Padding: conditionings with more 75-token chunks than others are lengthened by repeating their
last vector (A1111's ``stack_conds``). When the uncond and the conds still differ in length, the
shorter rows are zero-padded and masked out of cross-attention (``encoder_attention_mask``), which
equals A1111's default of running them as separate model calls.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from neutral_lang import emphasis as _emphasis
from neutral_lang import ir as _ir
from neutral_lang.backends.torch.executor import check_cfg_rescale

from .adapters import FamilyAdapter, TextOptions, _call_default as _default_of, adapter_for, unwrap_module
from .text_encoding import COMMA_BACKTRACK, Conditioning, extend

__all__ = ["run", "DenoiserBusyError"]


class DenoiserBusyError(RuntimeError):
    """``run()`` was called for a denoiser that a run on the same thread is already driving."""


def run(
    program,
    pipe,
    *,
    negative_prompt: str | Sequence[str] | None = None,
    emphasis: str = "original",
    clip_skip: int | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
    max_batch: int | None = None,
    trace: Any = None,
    **kwargs: Any,
):
    """Run ``pipe`` with ``program`` as its prompt and guidance; returns the pipeline's output.

    ``negative_prompt`` is one text, or one per prompt of a list program, in A1111's leaf syntax
    (emphasis and scheduling apply); ``None`` and ``""`` mean what they mean to the pipeline (SDXL:
    ``None`` is the all-zero uncond of ``force_zeros_for_empty_prompt``, ``""`` the encoded empty
    text). ``emphasis`` is ``"original"`` (A1111's default), ``"no_norm"``, ``"ignore"`` or
    ``"none"``; ``clip_skip`` is diffusers' (SD: 1 = penultimate layer); ``comma_backtrack`` is
    A1111's "prompt word wrap length limit" (0: off); ``max_batch`` splits every denoiser (and
    ControlNet) call into calls of at most that many samples, with identical results (for small
    GPUs and many-part prompts); ``trace`` (a ``neutral_lang.backends.torch.executor.Trace``)
    records the guidance of every step. ``guidance_rescale`` is the run's CFG rescale, passed to
    ``Program.guide`` as ``cfg_rescale`` at every guided step, never compiled in (docs/semantics.md:
    rescaled against ``u + full(root)``, in the original extension's form). Every
    other keyword goes to the pipeline unchanged: ``num_inference_steps``, ``guidance_scale``,
    ``num_images_per_prompt``, ``generator``, ``height``/``width``, ``output_type``,
    ``callback_on_step_end``, ``image``/``strength`` for img2img, ``cross_attention_kwargs`` (its
    ``scale`` also scales text-encoder LoRA, as in the pipeline), ``denoising_end`` /
    ``denoising_start``, and so on.

    When the pipeline does no classifier-free guidance (``guidance_scale <= 1``, or an
    LCM-distilled UNet with a guidance embedding), the guided prediction is ``u + full(root)``
    (scale 1): a one-part prompt is then the conditional prediction exactly, computed without any
    uncond sample, as diffusers does.

    Raises, before any text is encoded or the pipeline is touched: ``UnsupportedPipelineError`` (a
    ``TypeError``) for anything that is not a pipeline of a supported family (``pipe=None``
    included), ``UnsupportedFeatureError`` (a ``ValueError``) for a call argument the family
    cannot honour (``pag_scale > 0``), ``TypeError`` for prompt arguments (the prompt is the
    program), ``ValueError`` for bad options, ``emphasis.EmphasisTooDeepError`` (a ``ValueError``)
    for text inside more than 480 brackets (docs/emphasis.md). Runs on one denoiser from several threads take turns
    (the second waits); a run started from inside a run on the same denoiser and thread raises
    :class:`DenoiserBusyError`. Whatever happens, the pipeline is left as it was found.
    """
    family = adapter_for(pipe)
    for name in family.prompt_inputs:
        if kwargs.pop(name, None) is not None:
            raise TypeError(
                f"run() got {name}=..., but the prompt comes from the compiled program; "
                "pass the text to neutral_lang.compile() instead."
            )
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"Expected max_batch to be None or an integer >= 1, but got {max_batch!r}.")
    family.check(pipe, kwargs)
    rescale = check_cfg_rescale(kwargs.pop("guidance_rescale", None) or 0.0)
    options = TextOptions(
        emphasis, clip_skip, comma_backtrack, family.lora_scale(kwargs), kwargs.get("max_sequence_length")
    )
    denoiser = family.denoiser(pipe)
    with _exclusive(denoiser):
        encoder = family.text_encoder(pipe, options)
        guidance = _Guidance(program, pipe, family, encoder, negative_prompt, kwargs, max_batch, trace, rescale)
        steps = kwargs.get("num_inference_steps") or _call_default(pipe, "num_inference_steps", 50)
        if emphasis != "none":
            guidance.check_emphasis(int(steps))
        direct = None if trace is not None or max_batch is not None else guidance.direct_inputs()
        if direct is not None:
            # One conditioning per prompt, nothing scheduled: the pipeline's own step computes
            # exactly the program's guidance, so it runs untouched on our embeddings.
            return pipe(**kwargs, **direct)
        guidance.encode_variants(int(steps))  # the loop's real length is checked at its first call
        inputs = family.pipeline_inputs(guidance.carrier())
        if guidance.branches and not guidance.cfg_scale > 1:
            inputs = _without_negatives(inputs)
        kwargs.update(inputs)
        handles = []
        try:
            handles.append(denoiser.register_forward_pre_hook(guidance.before_denoiser, with_kwargs=True))
            handles.append(denoiser.register_forward_hook(guidance.after_denoiser, with_kwargs=True))
            for module in family.side_modules(pipe):
                handles.append(module.register_forward_pre_hook(guidance.before_side, with_kwargs=True))
                handles.append(module.register_forward_hook(guidance.after_side, with_kwargs=True))
            return pipe(**kwargs)
        finally:
            for handle in handles:
                handle.remove()


_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, _Turn]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class _Turn:
    """Who is running on one denoiser: a lock and its holder's thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner: int | None = None


@contextmanager
def _exclusive(denoiser):
    """Hold ``denoiser`` for one run: other threads wait their turn; the same thread fails fast."""
    module = unwrap_module(denoiser)
    with _LOCKS_GUARD:
        turn = _LOCKS.get(module)
        if turn is None:
            turn = _LOCKS[module] = _Turn()
    me = threading.get_ident()
    if turn.owner == me:
        raise DenoiserBusyError(
            f"run() was called while a run on this thread already drives this {type(module).__name__} "
            "(from a callback?); start the second run after the first returns."
        )
    with turn.lock:
        turn.owner = me
        try:
            yield
        finally:
            turn.owner = None


def _call_default(pipe, name: str, fallback):
    """``adapters._call_default``, with ``fallback`` also for a parameter whose default is None."""
    value = _default_of(pipe, name, fallback)
    return fallback if value is None else value


def _without_negatives(inputs: dict) -> dict:
    """``inputs`` less the negative embeddings: a per-branch pipeline (Flux) runs its uncond
    branch whenever it is given them, so they go only to a call that runs CFG."""
    return {name: value for name, value in inputs.items() if not name.startswith("negative_")}


def _is_identity(program) -> bool:
    """Whether every prompt of ``program`` is one conditioning at weight 1, always on: its guided
    prediction at scale 1 is that conditioning's prediction, whatever the uncond is."""
    return all(
        len(root.parts) == 1
        and root.parts[0].op is _ir.AND
        and root.parts[0].weight == 1.0
        and isinstance(root.parts[0].body, _ir.Cond)
        and root.parts[0].window == _ir.ALWAYS
        for root in program.ir.roots
    )


def _signature(module) -> inspect.Signature:
    """The signature of ``module``'s class ``forward`` without ``self``: what its ``__call__`` takes,
    even when ``forward`` is wrapped on the instance (accelerate, a user's wrapper)."""
    signature = inspect.signature(type(unwrap_module(module)).forward)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def _rows(value, n: int, index: torch.Tensor | slice):
    """``value`` with its per-sample tensors (leading dimension ``n``) indexed by ``index``."""
    if isinstance(value, torch.Tensor):
        if value.ndim and value.shape[0] == n:
            return value[index] if isinstance(index, slice) else value.index_select(0, index)
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_rows(v, n, index) for v in value)
    if isinstance(value, dict):
        return {key: _rows(v, n, index) for key, v in value.items()}
    return value


def _tensors(output) -> list[torch.Tensor]:
    """The tensors of a module output (a tensor, a tuple/list of tensors or lists, a BaseOutput)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if output is None:  # a Flux ControlNet without single blocks returns None for their samples
        return []
    if isinstance(output, dict):  # diffusers' BaseOutput is an OrderedDict
        output = tuple(output.values())
    found = []
    for value in output:
        found.extend(_tensors(value))
    return found


def _rebuild(output, tensors: list[torch.Tensor]):
    """``output`` with its tensors replaced, in :func:`_tensors` order."""
    it = iter(tensors)

    def walk(value):
        if isinstance(value, torch.Tensor):
            return next(it)
        if value is None:
            return None
        if isinstance(value, dict):
            return type(value)(**{k: walk(v) for k, v in value.items()})
        return type(value)(walk(v) for v in value)

    return walk(output)


@dataclass(frozen=True)
class _Plan:
    """One step's denoiser batch: rows ``0..U-1`` are the items' unconds (``U`` is ``B``, or 0 when
    no uncond is needed); row ``U + r`` is the (item, conditioning) pair ``r``."""

    n_uncond: int
    source: tuple[torch.Tensor, torch.Tensor]  # [rows] input row of each sample: (without CFG, with CFG)
    hidden: torch.Tensor  # [rows, L, D] encoder_hidden_states
    pooled: torch.Tensor | None  # [rows, D_pooled] pooled text embedding (SDXL's text_embeds)
    mask: torch.Tensor | None  # [rows, L] True = attend; None when all rows have the same length
    conds: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None  # per prompt: (items, rows); None: rows in order
    in_place: tuple[bool, bool] = (False, False)  # source is 0, 1, 2, ... (without CFG, with CFG)

    @property
    def rows(self) -> int:
        return self.hidden.shape[0]


@dataclass
class _Step:
    """What the hooks of one step share: the plan, whether the pipeline batches CFG, and the
    side modules' outputs waiting for the denoiser."""

    index: int
    plan: _Plan
    cfg: bool
    residuals: list[torch.Tensor] | None = None  # a side module's outputs, expanded
    side_in: tuple[int, bool] = (0, False)  # the side module's input batch, and guess mode
    rest: list[dict] | None = None  # the current module's remaining chunks under max_batch
    doubled: bool = False  # the pipeline sent [uncond, cond]: it gets cat([g, g]) back


class _Guidance:
    """One run: the encodings, the step counter, the program's state, and the hooks."""

    def __init__(self, program, pipe, family: FamilyAdapter, encoder, negative_prompt, kwargs, max_batch, trace,
                 rescale: float = 0.0):
        self.program = program
        self.rescale = rescale  # CFG rescale, a run-time argument of every guide call
        self.trace = trace
        self.pipe = pipe
        self.family = family
        self.encoder = encoder
        # A pipeline may read its negative prompt differently (SD3 ignores clip_skip there).
        self.encode_negative = getattr(encoder, "encode_negative", encoder.encode)
        self.max_batch = max_batch
        self.thread = threading.get_ident()
        self.prompts: tuple[str, ...] = tuple(program.prompts)
        n_texts = len(program.texts)
        self.per_prompt = max(1, int(kwargs.get("num_images_per_prompt") or 1))
        self.batch = n_texts * self.per_prompt
        self.uses = [set(program.uses(b, self.batch)) for b in range(self.batch)]
        if negative_prompt is None or isinstance(negative_prompt, str):
            negatives = [negative_prompt or ""] * n_texts
        else:
            negatives = list(negative_prompt)
            if len(negatives) != n_texts:
                raise ValueError(
                    f"Expected one negative prompt or {n_texts} (one per prompt), but got {len(negatives)}."
                )
        self.negatives = negatives
        self.zero_uncond = family.zero_uncond(pipe, negative_prompt)
        self.cfg_scale = family.cfg_scale(pipe, kwargs, negative_prompt)
        self.branches = family.cfg_batching == "per_branch"
        self.cond_branch: tuple[torch.Tensor, torch.Tensor] | None = None  # per branch: (cond rows' eps, placeholder)
        self.identity = _is_identity(program)
        # an identity program's guidance is the pipeline's own CFG step (unless traced or rescaled)
        self.passthrough = (
            self.identity and not rescale and trace is None and family.cfg_batching == "joint"
        )
        # Prompt editing counts steps on the whole trajectory when the pipeline runs part of it
        # (an SDXL base with denoising_end, a refiner with denoising_start).
        self.split = kwargs.get("denoising_end") is not None or kwargs.get("denoising_start") is not None
        self.starts_late = kwargs.get("denoising_start") is not None
        self.state = program.new_state()
        self.calls = 0
        self.offset = 0
        self.num_steps: int | None = None
        self.encoded_for: set[int] = set()  # step counts whose schedule variants are encoded
        self.schedules: dict[str, list[tuple[int, str]]] = {}
        self.plans: dict[tuple, _Plan] = {}
        self.step: _Step | None = None
        self.denoiser_signature = _signature(family.denoiser(pipe))
        self.side_signatures = {id(m): _signature(m) for m in family.side_modules(pipe)}

    # -- text -------------------------------------------------------------------------------

    def check_emphasis(self, steps: int) -> None:
        """Raise ``EmphasisTooDeepError`` before any text is encoded when a text of the program or
        the negative prompt, as written or as its schedule shows it in ``steps``, has text inside
        more than 480 brackets (docs/emphasis.md). As written includes the brackets of edits and
        alternations, which the scheduled texts drop: lint's NP204 reads the text as written too."""
        for text in dict.fromkeys((*self.prompts, *self.negatives)):
            if not isinstance(text, str):
                continue  # not a text: refused where it is encoded
            for variant in (text, *_emphasis.variants(text, steps)):
                error = _emphasis.depth_error(variant)
                if error is not None:
                    raise error

    def encode_variants(self, steps: int) -> None:
        """Encode every text a schedule of the program or the negative prompt shows in ``steps``."""
        if steps in self.encoded_for:
            return
        self.encoded_for.add(steps)
        negatives = () if self.zero_uncond else self.negatives
        for texts, encode in ((self.prompts, self.encoder.encode), (negatives, self.encode_negative)):
            for text in dict.fromkeys(texts):
                for variant in _emphasis.variants(text, steps):
                    encode(variant)

    def _at(self, text: str, step: int, encode=None) -> Conditioning:
        """``text``'s conditioning at step ``step`` of the trajectory."""
        entries = self.schedules.get(text)
        if entries is None:
            entries = self.schedules[text] = _emphasis.schedule(text, self.num_steps)
        return (encode or self.encoder.encode)(_emphasis.text_at(entries, step))

    def _uncond(self, item: int, step: int) -> Conditioning:
        if self.zero_uncond:
            return self.encoder.zeros()
        return self._at(self.negatives[item // self.per_prompt], step, self.encode_negative)

    def carrier(self) -> Conditioning:
        """The prompt embeddings handed to the pipeline: one uncond row per prompt.

        The hooks replace them at every denoiser call; the pipeline only reads their batch size,
        dtype and device (and a ``callback_on_step_end`` sees them).
        """
        if self.zero_uncond:
            rows = [self.encoder.zeros()] * len(self.negatives)
        else:
            rows = [self.encode_negative(n) for n in self.negatives]
        return _stack(rows)

    def direct_inputs(self) -> dict | None:
        """The pipeline's embedding arguments when it can run the program without hooks: every
        prompt one conditioning at weight 1 (no CFG rescale of the program's own), no schedule
        in any text, conds and unconds of one length, and a family that can take them
        (``direct_inputs``). None otherwise."""
        if not self.identity or self.rescale:
            return None
        if self.per_prompt > 1 and not self.family.repeats_given_embeddings:
            return None
        if any("[" in text for text in (*self.prompts, *self.negatives)):
            return None
        ir = self.program.ir
        texts = [ir.conds[root.parts[0].body.id] for root in ir.roots]
        if len(texts) == 1:
            texts *= len(self.negatives)
        conds = [self.encoder.encode(t) for t in texts]
        unconds = [self.encoder.zeros() if self.zero_uncond else self.encode_negative(n) for n in self.negatives]
        if len({r.hidden.shape[0] for r in (*conds, *unconds)}) != 1:
            return None
        inputs = self.family.direct_inputs(_stack(conds), _stack(unconds))
        if inputs is not None and self.branches and not self.cfg_scale > 1:
            inputs = _without_negatives(inputs)
        return inputs

    # -- steps ------------------------------------------------------------------------------

    def _mine(self) -> bool:
        """Whether the current call belongs to this run (a call from another thread never does)."""
        return threading.get_ident() == self.thread

    def _cfg(self, n_in: int) -> bool:
        if self.branches:
            return self.cfg_scale > 1
        cfg = getattr(self.pipe, "do_classifier_free_guidance", None)
        return n_in == 2 * self.batch if cfg is None else bool(cfg)

    def _begin(self, n_in: int, reference: torch.Tensor) -> _Step:
        """The current step, planned at its first hook call (a ControlNet's or the denoiser's)."""
        if self.step is not None:
            return self.step
        if n_in not in (self.batch, 2 * self.batch):
            raise RuntimeError(
                f"The denoiser received {n_in} samples for {self.batch} images; this pipeline's loop "
                "is not one neutral_lang can guide (it expects [uncond, cond] or [cond] batches)."
            )
        if self.num_steps is None:
            calls = _num_model_calls(self.pipe)
            if self.split:
                self.num_steps = max(len(self.pipe.scheduler.timesteps), calls)
                self.offset = self.num_steps - calls if self.starts_late else 0
            else:
                self.num_steps = calls
            self.encode_variants(self.num_steps)
        cfg = self._cfg(n_in)
        index = self.offset + self.calls
        plan = self._plan(index, cfg, reference.device, reference.dtype)
        self.step = _Step(index, plan, cfg)
        return self.step

    def _expand(self, signature, args, kwargs, side: Any = None):
        """The call's bound arguments for the step's expanded batch: ``(step, arguments, n_in,
        guess, text)``, ``text`` being the ``(hidden, pooled, mask)`` rows it was given.

        A side module called with the cond half alone under CFG (ControlNet's guess mode) gets the
        cond rows only; its residuals for the uncond rows are zeros, as in the pipeline (per-branch
        CFG: the item's first conditioning's, see ``after_side``). ``side``: the side module
        called, None for the denoiser.
        """
        bound = signature.bind(*args, **kwargs).arguments
        sample = bound[self.family.sample_input]
        n_in = sample.shape[0]
        step = self._begin(n_in, sample)
        plan = step.plan
        guess = side is not None and step.cfg and n_in == self.batch
        rows = slice(plan.n_uncond, None) if guess else None
        if self.branches and step.cfg:
            # CFG per branch (the cond call first): the cond call evaluates the conditionings,
            # the uncond call the unconds.
            rows = slice(0, plan.n_uncond) if self.cond_branch is not None else slice(plan.n_uncond, None)
        if bound.get("encoder_attention_mask") is not None and plan.mask is None:
            raise RuntimeError("This pipeline passes an encoder_attention_mask; neutral_lang cannot guide it.")
        source = plan.source[n_in == 2 * self.batch]
        hidden, pooled, mask = plan.hidden, plan.pooled, plan.mask
        if rows is not None:
            source = plan.source[False][rows]
            hidden = hidden[rows]
            pooled = None if pooled is None else pooled[rows]
            mask = None if mask is None else mask[rows]
        if rows is None and len(source) == n_in and plan.in_place[n_in == 2 * self.batch]:
            new = dict(bound)  # the pipeline's own rows, in its order: nothing to gather
        else:
            new = {name: _rows(value, n_in, source) for name, value in bound.items()}
        takes_mask = "encoder_attention_mask" in signature.parameters
        if side is None:
            self.family.set_text(new, hidden, pooled, mask if takes_mask else None)
        else:
            self.family.side_text(self.pipe, side, new, hidden, pooled, mask if takes_mask else None)
        return step, new, n_in, guess, (hidden, pooled, None if takes_mask else mask)

    def _chunks(self, kwargs: dict, text, n_uncond: int) -> list[dict]:
        """``kwargs`` as the calls to make: one, or calls of at most ``max_batch`` samples, and
        separate uncond and cond calls for a module that cannot mask rows of different text
        lengths (``text``'s mask is then not None; each call gets its rows' own length)."""
        hidden, pooled, mask = text
        total = hidden.shape[0]
        pieces = [(0, total, None)]
        if mask is not None:
            lengths = mask.sum(dim=1)
            pieces = [
                (a, b, int(lengths[a])) for a, b in ((0, n_uncond), (n_uncond, total)) if a < b
            ]
        size = self.max_batch
        if size is None and len(pieces) == 1 and pieces[0][2] is None:
            return [kwargs]
        chunks = []
        for a, b, length in pieces:
            for start in range(a, b, size or b - a):
                rows = slice(start, min(b, start + (size or b - a)))
                chunk = _rows(kwargs, total, rows)
                if length is not None:
                    self.family.set_text(
                        chunk, hidden[rows, :length], None if pooled is None else pooled[rows], None
                    )
                chunks.append(chunk)
        return chunks

    # -- hooks ------------------------------------------------------------------------------

    def before_side(self, module, args, kwargs):
        """A ControlNet's pre-hook: the step's expanded batch (guess mode: the cond rows only)."""
        if not self._mine():
            return None
        step, new, n_in, guess, text = self._expand(self.side_signatures[id(module)], args, kwargs, side=module)
        chunks = self._chunks(new, text, 0 if guess else step.plan.n_uncond)
        step.rest = chunks[1:]
        step.side_in = (n_in, guess)
        return (), chunks[0]

    def after_side(self, module, args, kwargs, output):
        if not self._mine():
            return None
        step = self.step
        outputs = [output] + [module.forward(**chunk) for chunk in step.rest]
        step.rest = None
        parts = [_tensors(o) for o in outputs]
        tensors = [torch.cat(ts) for ts in zip(*parts)] if len(parts) > 1 else parts[0]
        n_in, guess = step.side_in
        if guess and step.plan.n_uncond and self.branches:
            # Flux's true CFG runs the ControlNet once, on the prompt, and gives both branches its
            # residuals: each item's uncond row reuses those of the item's first conditioning.
            tensors = [torch.cat([t.index_select(0, self._first_conds(step.plan)), t]) for t in tensors]
        elif guess and step.plan.n_uncond:
            tensors = [torch.cat([t.new_zeros((step.plan.n_uncond, *t.shape[1:])), t]) for t in tensors]
        step.residuals = tensors
        # The pipeline passes these on to the denoiser, whose pre-hook puts the expanded ones back.
        return _rebuild(output, [t[:n_in] for t in tensors])

    def before_denoiser(self, module, args, kwargs):
        if not self._mine():
            return None
        step, new, n_in, _, text = self._expand(self.denoiser_signature, args, kwargs)
        if step.residuals is not None:
            residuals = iter(step.residuals)
            if self.branches and step.cfg:  # this branch's rows: the uncond call comes second
                n_uncond = step.plan.n_uncond
                rows = slice(0, n_uncond) if self.cond_branch is not None else slice(n_uncond, None)
                residuals = iter([t[rows] for t in step.residuals])
            for name in self.family.residual_inputs:
                value = new.get(name)
                if isinstance(value, (list, tuple)):
                    new[name] = type(value)(next(residuals) for _ in value)
                elif value is not None:
                    new[name] = next(residuals)
        chunks = self._chunks(new, text, 0 if self.branches and step.cfg else step.plan.n_uncond)
        step.rest = chunks[1:]
        step.doubled = n_in == 2 * self.batch
        return (), chunks[0]

    def after_denoiser(self, module, args, kwargs, output):
        if not self._mine():
            return None
        step = self.step
        eps = self.family.unwrap(output)
        if step.rest:
            eps = torch.cat([eps, *(self.family.unwrap(module.forward(**chunk)) for chunk in step.rest)])
        placeholder = None
        if self.branches and step.cfg:
            if self.cond_branch is None:
                # The cond branch: its rows wait for the uncond branch, which fills the tensor
                # returned here with g, so that the pipeline's g + s * (g - g) is g exactly.
                placeholder = eps.new_empty((self.batch, *eps.shape[1:]))
                self.cond_branch = (eps, placeholder)
                return self.family.rewrap(output, placeholder)
            cond_eps, placeholder = self.cond_branch
            self.cond_branch = None
            eps = torch.cat([eps, cond_eps])
        self.step = None
        self.calls += 1
        plan, batch = step.plan, self.batch
        if self.passthrough and step.doubled and plan.in_place[True] and plan.rows == 2 * batch:
            # [u, c] in the pipeline's own order, and the program is its own u + s * (c - u):
            # the pipeline's combination is the program's guidance exactly.
            return output if not step.rest else self.family.rewrap(output, eps)
        if plan.n_uncond == 0:
            guided = eps if plan.conds is None else eps.index_select(0, plan.conds[0][1])
        else:
            if plan.conds is None:
                conds = eps[batch:].unflatten(0, (len(self.prompts), batch))
            else:
                conds = []
                for items, rows in plan.conds:
                    c = eps.new_zeros(eps[:batch].shape)  # items that do not use it: never read
                    c[items] = eps[rows]
                    conds.append(c)
            scale = 1.0
            if step.cfg:
                scale = self.cfg_scale if self.cfg_scale is not None else float(self.pipe.guidance_scale)
            guided = self.program.guide(
                eps[:batch],
                conds,
                scale,
                cfg_rescale=self.rescale if step.cfg else 0.0,
                step=step.index,
                num_steps=self.num_steps,
                state=self.state,
                trace=self.trace,
            )
        if placeholder is not None:
            placeholder.copy_(guided)
        if step.doubled:
            guided = torch.cat([guided, guided])
        return self.family.rewrap(output, guided)

    def _first_conds(self, plan: _Plan) -> torch.Tensor:
        """``[B]``: for each item, the index (among the cond rows) of its first conditioning."""
        items = plan.source[False][plan.n_uncond :].tolist()
        if any(b not in items for b in range(self.batch)):
            raise RuntimeError("An item of this program has no conditioning for the ControlNet to read.")
        return torch.tensor([items.index(b) for b in range(self.batch)], device=plan.source[False].device)

    # -- the batch --------------------------------------------------------------------------

    def _plan(self, step: int, cfg: bool, device, dtype) -> _Plan:
        """The denoiser batch for ``step``; it changes only where a schedule switches texts."""
        # Without CFG a program that is one conditioning per prompt needs no uncond at all.
        skip_uncond = self.identity and not cfg
        unconds = [] if skip_uncond else [self._uncond(b, step) for b in range(self.batch)]
        conds = [self._at(text, step) for text in self.prompts]
        key = (skip_uncond, *map(id, unconds + conds))
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._build(unconds, conds, device, dtype)
        return plan

    def _build(self, unconds: list[Conditioning], conds: list[Conditioning], device, dtype) -> _Plan:
        batch = self.batch
        n_uncond = len(unconds)
        # One row per (item, distinct conditioning it needs): prompts that show the same text at
        # this step share a row, and items skip the prompts their block does not read.
        row_of: dict[tuple[int, int], int] = {}
        rows: list[tuple[int, Conditioning]] = []
        for p, c in enumerate(conds):
            for b in range(batch):
                if p in self.uses[b] and (id(c), b) not in row_of:
                    row_of[id(c), b] = n_uncond + len(rows)
                    rows.append((b, c))
        gathers = None
        if n_uncond == 0:
            # identity program: item b reads the one conditioning of its prompt
            order = [row_of[id(conds[next(iter(self.uses[b]))]), b] for b in range(batch)]
            if order != list(range(batch)) or len(rows) != batch:
                gathers = ((torch.arange(batch, device=device), torch.tensor(order, device=device)),)
        else:
            in_order = all(
                p in self.uses[b] and row_of[id(c), b] == batch * (p + 1) + b
                for p, c in enumerate(conds)
                for b in range(batch)
            )
            if not in_order:
                gathers = []
                for p, c in enumerate(conds):
                    items = [b for b in range(batch) if p in self.uses[b]]
                    gathers.append(
                        (
                            torch.tensor(items, device=device),
                            torch.tensor([row_of[id(c), b] for b in items], device=device),
                        )
                    )
                gathers = tuple(gathers)

        # Conds are lengthened among themselves as A1111 stacks them; if the uncond still differs
        # in length, the shorter rows are zero-padded and masked (A1111 runs them separately).
        cond_len = max((c.hidden.shape[0] for _, c in rows), default=0)
        uncond_len = max((u.hidden.shape[0] for u in unconds), default=cond_len)
        hidden = [extend(u.hidden, uncond_len) for u in unconds] + [extend(c.hidden, cond_len) for _, c in rows]
        mask = None
        if rows and cond_len != uncond_len:
            if not self.family.supports_mask:
                length = max(cond_len, uncond_len)
                hidden = [extend(h, length) for h in hidden]
            else:
                length = max(cond_len, uncond_len)
                lengths = torch.tensor([h.shape[0] for h in hidden])
                hidden = [torch.cat([h, h.new_zeros(length - h.shape[0], h.shape[1])]) for h in hidden]
                mask = (torch.arange(length)[None, :] < lengths[:, None]).to(device)
        first = (unconds or [c for _, c in rows])[0]
        if first.mask is not None:  # the texts' own attention masks (T5 padding), all of one length
            mask = torch.stack([u.mask for u in unconds] + [c.mask for _, c in rows]).to(device)
        pooled = None
        if first.pooled is not None:
            pooled = torch.stack([u.pooled for u in unconds] + [c.pooled for _, c in rows]).to(device, dtype)
        # The input row each sample reads: an uncond from the pipeline's uncond half (rows
        # 0..B-1), a cond from its cond half (rows B..2B-1 under CFG, the only half otherwise).
        items = [b for b, _ in rows]
        plain = [*range(n_uncond), *items]
        doubled = [*range(n_uncond), *(batch + b for b in items)]
        return _Plan(
            n_uncond=n_uncond,
            source=(torch.tensor(plain, device=device), torch.tensor(doubled, device=device)),
            in_place=(plain == list(range(len(plain))), doubled == list(range(len(doubled)))),
            hidden=torch.stack(hidden).to(device, dtype),
            pooled=pooled,
            mask=mask,
            conds=gathers,
        )


def _stack(rows: list[Conditioning]) -> Conditioning:
    """Conditionings as one batch ``[N, L, D]`` (shorter ones lengthened, A1111's ``stack_conds``)."""
    length = max(r.hidden.shape[0] for r in rows)
    hidden = torch.stack([extend(r.hidden, length) for r in rows])
    pooled = None if rows[0].pooled is None else torch.stack([r.pooled for r in rows])
    mask = None if rows[0].mask is None else torch.stack([r.mask for r in rows])
    return Conditioning(hidden, pooled, mask)


def _num_model_calls(pipe) -> int:
    """How many times the pipeline's loop calls the denoiser (known once its timesteps are set)."""
    n = getattr(pipe, "_num_timesteps", None)
    if isinstance(n, int) and n > 0:
        return n
    return len(pipe.scheduler.timesteps)
