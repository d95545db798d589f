"""``run(program, pipe, **kwargs)``: a compiled program drives a diffusers pipeline's guidance.

The pipeline keeps its own loop (scheduler, latents, VAE, callbacks); the program takes over the
one thing it must: what the UNet predicts for each batch item. The text is encoded up front, A1111's
way (:mod:`.text_encoding`), and the pipeline is called with ``prompt_embeds`` so that it skips its
own encoding. For the duration of the call two hooks sit on ``pipe.unet``:

- a forward **pre-hook** (with kwargs) replaces the pipeline's UNet batch (``[u, c]`` under CFG,
  ``[c]`` without) by one batch of ``B`` uncond samples followed by one sample per (item,
  conditioning) the program needs at this step: latents repeated, ``encoder_hidden_states`` the
  embeddings of this step's schedule variants (``[from:to:when]``, ``[a|b]``), and every other
  per-sample input (timestep, SDXL's ``text_embeds``/``time_ids``, inpainting channels, ControlNet
  residuals) gathered along;
- a forward **hook** splits the UNet output into ``uncond [B, C, H, W]`` and ``conds [P, B, C, H,
  W]`` and returns ``program.guide(...)`` in the shape the pipeline expects: ``cat([g, g])`` under
  CFG, so that the pipeline's ``u + s * (c - u)`` is ``g`` exactly, or ``g`` alone when
  ``guidance_scale <= 1`` (the uncond is still evaluated: the program needs it).

So every step is exactly one UNet call. The hooks are removed in a ``finally``; nothing else on
the pipeline is touched.

Steps: ``step`` is the number of UNet calls made so far in this run, and ``num_steps`` the number
of UNet calls the pipeline's loop makes (``pipe._num_timesteps``, which diffusers sets to
``len(timesteps)`` before its loop; ``len(pipe.scheduler.timesteps)`` if absent). For first-order
samplers (DDIM, Euler, DPM-Solver++) these are the sampling steps; second-order samplers that
call the model twice per step (Heun, DPM2) count each call, so fractions (``0.5``) mean the same
point of the trajectory while integer step numbers count calls. ``img2img`` with ``strength < 1``
counts only the steps it runs. Prompt-editing schedules and ``start``/``end`` windows both use
these two numbers.

Padding: conditionings with more 75-token chunks than others are lengthened by repeating their
last vector (A1111's ``stack_conds``). When the uncond and the conds still differ in length, the
shorter rows are zero-padded and masked out of cross-attention (``encoder_attention_mask``), which
equals A1111's default of running them as separate model calls.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from neutral_lang import emphasis as _emphasis

from .text_encoding import COMMA_BACKTRACK, Conditioning, PromptEncoder, extend

__all__ = ["run"]

# Inputs that name the prompt: the program is the prompt, so these would contradict it.
_PROMPT_KWARGS = (
    "prompt",
    "prompt_2",
    "prompt_embeds",
    "pooled_prompt_embeds",
    "negative_prompt_2",
    "negative_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


def run(
    program,
    pipe,
    *,
    negative_prompt: str | Sequence[str] | None = None,
    emphasis: str = "original",
    clip_skip: int | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
    trace: Any = None,
    **kwargs: Any,
):
    """Run ``pipe`` with ``program`` as its prompt and guidance; returns the pipeline's output.

    ``negative_prompt`` is one text, or one per prompt of a list program, in A1111's leaf syntax
    (emphasis and scheduling apply). ``emphasis`` is ``"original"`` (A1111's default),
    ``"no_norm"``, ``"ignore"`` or ``"none"``; ``clip_skip`` is diffusers' (SD: 1 = penultimate
    layer); ``comma_backtrack`` is A1111's "prompt word wrap length limit" (0: off); ``trace``
    (a ``neutral_lang.backends.torch.executor.Trace``) records the guidance of every step.
    ``guidance_rescale`` becomes the program's ``cfg_rescale`` (SPEC section 2: rescaled against
    ``u + full(root)``, in the original extension's form). Every other keyword goes to the
    pipeline unchanged: ``num_inference_steps``, ``guidance_scale``, ``num_images_per_prompt``,
    ``generator``, ``height``/``width``, ``output_type``, ``callback_on_step_end``,
    ``image``/``strength`` for img2img, and so on.
    """
    for name in _PROMPT_KWARGS:
        if kwargs.pop(name, None) is not None:
            raise TypeError(
                f"run() got {name}=..., but the prompt comes from the compiled program; "
                "pass the text to neutral_lang.compile() instead."
            )
    program = _with_rescale(program, kwargs.pop("guidance_rescale", 0.0))
    encoder = PromptEncoder(pipe, emphasis=emphasis, clip_skip=clip_skip, comma_backtrack=comma_backtrack)
    guidance = _Guidance(program, pipe, encoder, negative_prompt, kwargs.get("num_images_per_prompt"), trace)
    steps = kwargs.get("num_inference_steps") or _call_default(pipe, "num_inference_steps", 50)
    guidance.encode_variants(int(steps))  # the loop's real length is checked at its first call

    carrier = guidance.carrier()
    kwargs["prompt_embeds"] = kwargs["negative_prompt_embeds"] = carrier.hidden
    if carrier.pooled is not None:
        kwargs["pooled_prompt_embeds"] = kwargs["negative_pooled_prompt_embeds"] = carrier.pooled

    handles = [
        pipe.unet.register_forward_pre_hook(guidance.before_unet, with_kwargs=True),
        pipe.unet.register_forward_hook(guidance.after_unet, with_kwargs=True),
    ]
    try:
        return pipe(**kwargs)
    finally:
        for handle in handles:
            handle.remove()


def _with_rescale(program, rescale):
    """``program`` with CFG rescale ``rescale``: the pipeline's own would rescale ``g`` against ``g``."""
    rescale = float(rescale or 0.0)
    if rescale == 0.0 or rescale == program.cfg_rescale:
        return program
    if program.cfg_rescale:
        raise ValueError(
            f"guidance_rescale={rescale} contradicts the program's cfg_rescale={program.cfg_rescale}; "
            "give one of them."
        )
    from neutral_lang import compile

    texts = program.texts[0] if len(program.texts) == 1 else list(program.texts)
    return compile(texts, cfg_rescale=rescale, passes=program.passes)


def _call_default(pipe, name: str, fallback):
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    if parameter is None or parameter.default in (inspect.Parameter.empty, None):
        return fallback
    return parameter.default


def _num_model_calls(pipe) -> int:
    """How many times the pipeline's loop calls the UNet (known once its timesteps are set)."""
    n = getattr(pipe, "_num_timesteps", None)
    if isinstance(n, int) and n > 0:
        return n
    return len(pipe.scheduler.timesteps)


@dataclass(frozen=True)
class _Plan:
    """One step's UNet batch. Rows ``0..B-1`` are each item's uncond; row ``B + r`` is the
    (item, conditioning) pair ``r``."""

    source: tuple[torch.Tensor, torch.Tensor]  # [rows] input row of each sample: (without CFG, with CFG)
    hidden: torch.Tensor  # [rows, L, D] encoder_hidden_states
    pooled: torch.Tensor | None  # [rows, D_pooled] SDXL's text_embeds
    mask: torch.Tensor | None  # [rows, L] True = attend; None when all rows have the same length
    conds: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None  # per prompt: (items, rows); None: rows in order


class _Guidance:
    """One run: the encodings, the UNet-call counter, the program's state, and the two hooks."""

    def __init__(self, program, pipe, encoder: PromptEncoder, negative_prompt, per_prompt, trace):
        self.program = program
        self.trace = trace
        self.pipe = pipe
        self.encoder = encoder
        self.prompts: tuple[str, ...] = tuple(program.prompts)
        n_texts = len(program.texts)
        self.per_prompt = max(1, int(per_prompt or 1))
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
        # diffusers' SDXL (like A1111's) uses zeros, not the encoded "", for an absent negative prompt
        self.zero_uncond = (
            encoder.xl and negative_prompt is None and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        )
        self.state = program.new_state()
        self.calls = 0
        self.num_steps: int | None = None
        self.encoded_for: set[int] = set()  # step counts whose schedule variants are encoded
        self.schedules: dict[str, list[tuple[int, str]]] = {}
        self.plans: dict[tuple[int, ...], _Plan] = {}
        self.pending: tuple[_Plan, bool, int] | None = None
        unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # torch.compile wraps the module
        self.signature = inspect.signature(unet.forward)

    # -- text -------------------------------------------------------------------------------

    def encode_variants(self, steps: int) -> None:
        """Encode every text a schedule of the program or the negative prompt shows in ``steps``."""
        if steps in self.encoded_for:
            return
        self.encoded_for.add(steps)
        texts = self.prompts if self.zero_uncond else (*self.prompts, *self.negatives)
        for text in dict.fromkeys(texts):
            for variant in _emphasis.variants(text, steps):
                self.encoder.encode(variant)

    def _at(self, text: str, step: int) -> Conditioning:
        """``text``'s conditioning at UNet call ``step``."""
        entries = self.schedules.get(text)
        if entries is None:
            entries = self.schedules[text] = _emphasis.schedule(text, self.num_steps)
        return self.encoder.encode(_emphasis.text_at(entries, step))

    def _uncond(self, item: int, step: int) -> Conditioning:
        if self.zero_uncond:
            return self.encoder.zeros()
        return self._at(self.negatives[item // self.per_prompt], step)

    def carrier(self) -> Conditioning:
        """The prompt embeddings handed to the pipeline: one uncond row per prompt.

        The pre-hook replaces them at every UNet call; the pipeline only reads their batch size,
        dtype and device (and a ``callback_on_step_end`` sees them).
        """
        if self.zero_uncond:
            rows = [self.encoder.zeros()] * len(self.negatives)
        else:
            rows = [self.encoder.encode(n) for n in self.negatives]
        length = max(r.hidden.shape[0] for r in rows)
        hidden = torch.stack([extend(r.hidden, length) for r in rows])
        pooled = None if rows[0].pooled is None else torch.stack([r.pooled for r in rows])
        return Conditioning(hidden, pooled)

    # -- hooks ------------------------------------------------------------------------------

    def before_unet(self, unet, args, kwargs):
        bound = self.signature.bind(*args, **kwargs).arguments
        sample = bound["sample"]
        n_in = sample.shape[0]
        if n_in not in (self.batch, 2 * self.batch):
            raise RuntimeError(
                f"The UNet received {n_in} samples for {self.batch} images; this pipeline's loop "
                "is not one neutral_lang can guide (it expects [uncond, cond] or [cond] batches)."
            )
        if bound.get("encoder_attention_mask") is not None:
            raise RuntimeError("This pipeline passes an encoder_attention_mask; neutral_lang cannot guide it.")
        if self.num_steps is None:
            self.num_steps = _num_model_calls(self.pipe)
            self.encode_variants(self.num_steps)
        step = self.calls
        carrier = bound["encoder_hidden_states"]
        plan = self._plan(step, carrier.device, carrier.dtype)
        cfg = n_in == 2 * self.batch
        self.pending = (plan, cfg, step)

        source = plan.source[cfg]

        def take(value):
            if isinstance(value, torch.Tensor):
                return value.index_select(0, source) if value.ndim and value.shape[0] == n_in else value
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
                return type(value)(take(v) for v in value)
            return value

        new = {name: take(value) for name, value in bound.items() if name != "added_cond_kwargs"}
        added = bound.get("added_cond_kwargs")
        if added is not None:
            new["added_cond_kwargs"] = {key: take(value) for key, value in added.items()}
            if plan.pooled is not None and "text_embeds" in added:
                new["added_cond_kwargs"]["text_embeds"] = plan.pooled
        new["encoder_hidden_states"] = plan.hidden
        if plan.mask is not None:
            new["encoder_attention_mask"] = plan.mask
        return (), new

    def after_unet(self, unet, args, kwargs, output):
        plan, cfg, step = self.pending
        self.pending = None
        self.calls += 1
        eps = output[0] if isinstance(output, tuple) else output.sample
        batch = self.batch
        if plan.conds is None:
            conds = eps[batch:].unflatten(0, (len(self.prompts), batch))
        else:
            conds = []
            for items, rows in plan.conds:
                c = eps.new_zeros(eps[:batch].shape)  # items that do not use it: never read
                c[items] = eps[rows]
                conds.append(c)
        guided = self.program.guide(
            eps[:batch],
            conds,
            float(self.pipe.guidance_scale),
            step=step,
            num_steps=self.num_steps,
            state=self.state,
            trace=self.trace,
        )
        if cfg:
            guided = torch.cat([guided, guided])
        if isinstance(output, tuple):
            return (guided, *output[1:])
        return type(output)(sample=guided)

    # -- the batch --------------------------------------------------------------------------

    def _plan(self, step: int, device, dtype) -> _Plan:
        """The UNet batch for ``step``; it changes only where a schedule switches texts."""
        unconds = [self._uncond(b, step) for b in range(self.batch)]
        conds = [self._at(text, step) for text in self.prompts]
        key = tuple(map(id, unconds + conds))
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._build(unconds, conds, device, dtype)
        return plan

    def _build(self, unconds: list[Conditioning], conds: list[Conditioning], device, dtype) -> _Plan:
        batch = self.batch
        # One row per (item, distinct conditioning it needs): prompts that show the same text at
        # this step share a row, and items skip the prompts their block does not read.
        row_of: dict[tuple[int, int], int] = {}
        rows: list[tuple[int, Conditioning]] = []
        for p, c in enumerate(conds):
            for b in range(batch):
                if p in self.uses[b] and (id(c), b) not in row_of:
                    row_of[id(c), b] = batch + len(rows)
                    rows.append((b, c))
        in_order = all(
            p in self.uses[b] and row_of[id(c), b] == batch * (p + 1) + b
            for p, c in enumerate(conds)
            for b in range(batch)
        )
        gathers = None
        if not in_order:
            gathers = []
            for p, c in enumerate(conds):
                items = [b for b in range(batch) if p in self.uses[b]]
                gathers.append(
                    (torch.tensor(items, device=device), torch.tensor([row_of[id(c), b] for b in items], device=device))
                )

        # Conds are lengthened among themselves as A1111 stacks them; if the uncond still differs
        # in length, the shorter rows are zero-padded and masked (A1111 runs them separately).
        cond_len = max((c.hidden.shape[0] for _, c in rows), default=0)
        uncond_len = max(u.hidden.shape[0] for u in unconds)
        hidden = [extend(u.hidden, uncond_len) for u in unconds] + [extend(c.hidden, cond_len) for _, c in rows]
        mask = None
        if rows and cond_len != uncond_len:
            length = max(cond_len, uncond_len)
            lengths = torch.tensor([h.shape[0] for h in hidden])
            hidden = [torch.cat([h, h.new_zeros(length - h.shape[0], h.shape[1])]) for h in hidden]
            mask = (torch.arange(length)[None, :] < lengths[:, None]).to(device)
        pooled = None
        if unconds[0].pooled is not None:
            pooled = torch.stack([u.pooled for u in unconds] + [c.pooled for _, c in rows]).to(device, dtype)
        # The input row each sample reads: an uncond from the pipeline's uncond half (rows
        # 0..B-1), a cond from its cond half (rows B..2B-1 under CFG, the only half otherwise).
        items = [b for b, _ in rows]
        return _Plan(
            source=(
                torch.tensor([*range(batch), *items], device=device),
                torch.tensor([*range(batch), *(batch + b for b in items)], device=device),
            ),
            hidden=torch.stack(hidden).to(device, dtype),
            pooled=pooled,
            mask=mask,
            conds=None if gathers is None else tuple(gathers),
        )
