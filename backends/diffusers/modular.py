"""A compiled program as a guider of diffusers' modular pipelines (``diffusers.guiders``).

Modular pipelines take their guidance from a ``guider`` component: at each step the denoise block
hands it the denoiser's inputs as ``(cond, uncond)`` pairs, calls the denoiser once per batch the
guider prepares, and asks the guider for the guided prediction. :class:`ProgramGuidance` prepares
*one* batch for the whole program: the pipeline's uncond rows (its negative prompt, or SDXL's
zeros), then one row per item for every conditioning the program shows at this step, encoded
A1111's way with the family's text encoder (:mod:`.text_encoding`, :mod:`.t5_encoding`). Every
other per-sample input (latents, SDXL's ``time_ids``) is repeated to that batch, so a step is one
denoiser call, and ``forward`` is ``program.guide(u, conds, guidance_scale)``::

    from diffusers.modular_pipelines.stable_diffusion_3 import StableDiffusion3AutoBlocks
    from neutral_lang.backends.diffusers.modular import ProgramGuidance

    pipe = StableDiffusion3AutoBlocks().init_pipeline()
    pipe.update_components(**{k: v for k, v in sd3.components.items() if v is not None})
    guider = ProgramGuidance(prompt="a castle AND_PERP glasses :-0.5", guidance_scale=7.0).bind(pipe)
    pipe.update_components(guider=guider)
    latents = pipe(prompt="a castle", negative_prompt="blurry", output="latents")

The pipeline's own ``prompt`` is still encoded by its text-encoder block (it must be given), but
only its shape and its negative side are used: the conditionings come from the program. With
``guidance_scale <= 1`` there is no CFG and the prediction is ``u + full(root)``, as in
``run(pipe)``; a one-part program is then the conditional prediction, computed without ``u``.

The families (:data:`FAMILIES`), each tested against its modular pipeline's stock
``ClassifierFreeGuidance``:

- ``StableDiffusionXLModularPipeline``: the loop passes the text as ``prompt_embeds`` and
  ``text_embeds`` (pooled) and the latents outside the guider, so ``prepare_models`` hooks the
  UNet to repeat them to the program's batch. Its text block makes the uncond (zeros without a
  negative prompt) whenever ``num_conditions > 1``. Its loop calls ``guider.enable()`` at every
  run (``disable()`` for an LCM UNet), so ``enabled=False`` has no effect there.
- ``StableDiffusion3ModularPipeline`` (txt2img, img2img): the loop passes ``hidden_states``
  (latents), ``encoder_hidden_states`` and ``text_embeds`` (pooled) through the guider, and makes
  an uncond *only* when ``negative_prompt`` is given; without one its stock guider's prediction is
  the conditional one (CFG of the cond against itself). A one-part program does the same; a
  multi-part program, which needs ``u``, is refused at the first step (pass
  ``negative_prompt=""``, what ``StableDiffusion3Pipeline`` uses by default).

Not supported: ``FluxModularPipeline`` (Flux.1: its denoise blocks call the transformer directly
and have no guider component, so :meth:`ProgramGuidance.bind` refuses it; use ``FluxPipeline`` with
``compile(prompt).run(pipe)``), the modular ControlNet loops (the ControlNet would see the
pipeline's batch, not the program's), one program with a list of prompts, and the other modular
families (Flux.2, Wan, Qwen-Image, ...: their loops call ``prepare_inputs_from_block_state``).
Conditionings with more 75-token chunks than the others are lengthened by repeating their last
vector (A1111's ``stack_conds``), the uncond included: the modular loops pass no attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from neutral_lang import emphasis as _emphasis

from .adapters import FamilyAdapter, TextOptions, UnsupportedFeatureError, UnsupportedPipelineError
from .text_encoding import COMMA_BACKTRACK, extend

__all__ = ["FAMILIES", "ModularFamily", "ProgramGuidance"]


@dataclass(frozen=True)
class ModularFamily:
    """How one family's modular denoise loop feeds its guider.

    ``pipeline``: the ``ModularPipeline`` class name; ``adapter``: the :class:`.FamilyAdapter`
    whose ``text_encoder`` encodes the program's texts; ``hidden`` / ``pooled``: the guider inputs
    holding the per-token text embeddings ``[B, L, D]`` and the pooled ones ``[B, P]``;
    ``attention_kwargs``: the denoiser argument whose ``"scale"`` is the LoRA scale, which the
    pipeline's text block also applies to the text encoders; ``hook_denoiser``: the loop passes
    per-sample inputs (the latents) to the denoiser outside the guider, so ``prepare_models`` must
    repeat them to the program's batch.
    """

    pipeline: str
    adapter: type[FamilyAdapter]
    hidden: str
    pooled: str
    attention_kwargs: str
    hook_denoiser: bool


def _families() -> tuple[ModularFamily, ...]:
    from .stable_diffusion import StableDiffusionXLAdapter
    from .stable_diffusion_3 import StableDiffusion3Adapter

    return (
        ModularFamily("StableDiffusionXLModularPipeline", StableDiffusionXLAdapter, "prompt_embeds", "text_embeds",
                      "cross_attention_kwargs", hook_denoiser=True),
        ModularFamily("StableDiffusion3ModularPipeline", StableDiffusion3Adapter, "encoder_hidden_states",
                      "text_embeds", "joint_attention_kwargs", hook_denoiser=False),
    )


FAMILIES: tuple[ModularFamily, ...] = _families()
_SUPPORTED = tuple(f.pipeline for f in FAMILIES)


class ProgramGuidance(BaseGuidance):
    """Guidance by a Neutral Prompt program, in one denoiser call per step.

    ``prompt`` is the program's source (one prompt; compiled with :func:`neutral_lang.compile`),
    ``guidance_scale`` the CFG scale ``s`` of ``u + s * full(root)``; ``emphasis``,
    ``clip_skip``, ``comma_backtrack``, ``max_sequence_length`` (T5's length for SD3; None:
    the modular pipeline's default, 256) and ``lora_scale`` (the text encoders' LoRA scale; None:
    as loaded) as in ``run(pipe)``: give them to the guider, since the pipeline's own prompt
    encoding is not used. ``start``/``stop``/``enabled`` are the base
    class's: outside ``[start, stop)`` of the steps, or when disabled, the prediction is
    ``u + full(root)`` (no CFG). Call :meth:`bind` with the pipeline before the first run.

    Raises ``ValueError`` for a list of prompts; :meth:`bind` raises ``UnsupportedPipelineError``
    (a ``TypeError``) for a pipeline not in :data:`FAMILIES`; the first step raises
    ``UnsupportedFeatureError`` (a ``ValueError``, before any denoiser call) when the pipeline
    gives no uncond to a program that needs one, or text embeddings of another length than the
    guider's (a ``max_sequence_length`` given to the pipeline only), and the first denoiser call
    raises it (before computing) when the pipeline's LoRA scale (``cross_attention_kwargs`` /
    ``joint_attention_kwargs`` ``"scale"``) is not the guider's ``lora_scale``.
    """

    _input_predictions = ["pred_program"]

    @register_to_config
    def __init__(
        self,
        prompt: str = "",
        guidance_scale: float = 7.5,
        emphasis: str = "original",
        clip_skip: int | None = None,
        comma_backtrack: int = COMMA_BACKTRACK,
        max_sequence_length: int | None = None,
        lora_scale: float | None = None,
        start: float = 0.0,
        stop: float = 1.0,
        enabled: bool = True,
    ):
        super().__init__(start, stop, enabled)
        from neutral_lang import compile

        if not isinstance(prompt, str):
            raise ValueError(
                f"ProgramGuidance takes one prompt (a str), but got {type(prompt).__name__}; "
                "run one guider per prompt."
            )
        self.program = compile(prompt)
        if emphasis != "none":  # as run() does: refuse text inside more than 480 brackets up front
            for text in self.program.prompts:
                error = _emphasis.depth_error(text)  # a scheduled text has no more brackets open
                if error is not None:
                    raise error
        self.guidance_scale = float(guidance_scale)
        self.options = TextOptions(
            emphasis,
            clip_skip,
            comma_backtrack,
            lora_scale=None if lora_scale is None else float(lora_scale),
            max_sequence_length=max_sequence_length,
        )
        self._encoder = None
        self._family: ModularFamily | None = None
        self._state: Any = None
        self._steps_encoded: set[int] = set()
        self._batch: dict[str, Any] | None = None  # this step's plan: rows, source, identity
        self._hook = None

    def bind(self, pipe) -> "ProgramGuidance":
        """Encode with ``pipe``'s text encoders (a modular pipeline of :data:`FAMILIES`); returns ``self``."""
        name = type(pipe).__name__
        family = next((f for f in FAMILIES if f.pipeline == name), None)
        if family is None:
            from diffusers.modular_pipelines import ModularPipeline

            why = "it is not one of the supported modular pipelines"
            if isinstance(pipe, ModularPipeline) and "guider" not in pipe.component_names:
                # modular Flux.1: its denoise block calls the transformer itself
                why = "its blocks take no guider component (the denoise loop calls the denoiser directly)"
            raise UnsupportedPipelineError(
                f"ProgramGuidance cannot guide {name}: {why}. It supports {', '.join(_SUPPORTED)}. "
                "For DiffusionPipeline classes (FluxPipeline, ...) use neutral_lang.compile(prompt).run(pipe)."
            )
        self._encoder = family.adapter().text_encoder(pipe, self.options)
        self._family = family
        self._steps_encoded.clear()
        return self

    # -- the diffusers guider interface -----------------------------------------------------

    @property
    def is_conditional(self) -> bool:
        return True  # the one batch holds the conditional rows (and the uncond ones)

    @property
    def num_conditions(self) -> int:
        """2 when the program reads an uncond: modular SDXL's text block then prepares the
        negative embeddings (it asks ``num_conditions > 1``). The batches are always one."""
        needs_uncond = not _one_part(self.program) or (self._enabled and self.guidance_scale > 1.0)
        return 2 if needs_uncond else 1

    def __call__(self, data: list) -> GuiderOutput:
        if len(data) != 1 or not hasattr(data[0], "noise_pred"):
            raise ValueError(f"Expected the one batch ProgramGuidance prepared, with its noise_pred; got {len(data)}.")
        return self.forward(data[0].noise_pred)

    def _cfg(self) -> bool:
        if not self._enabled or self.guidance_scale <= 1.0:
            return False
        if self._num_inference_steps is None:
            return True
        first = int(self._start * self._num_inference_steps)
        last = int(self._stop * self._num_inference_steps)
        return first <= self._step < last

    def prepare_inputs(self, data: dict[str, Any]) -> list:
        """One batch: ``B`` uncond rows (unless no CFG and a one-part program), then ``B`` rows per
        conditioning shown at this step. ``data`` maps each denoiser input to ``(cond, uncond)``,
        or to ``cond`` alone when the pipeline made no uncond (modular SD3 without a negative prompt).
        """
        from diffusers.modular_pipelines.modular_pipeline import BlockState

        family = self._family
        if family is None:
            raise UnsupportedFeatureError(
                "ProgramGuidance has no pipeline to encode with: call guider.bind(pipe) first."
            )
        pairs = {name: value if isinstance(value, tuple) else (value, None) for name, value in data.items()}
        cond_embeds, uncond_embeds = pairs[family.hidden]
        batch = cond_embeds.shape[0]
        step, steps = self._step or 0, self._num_inference_steps or 1
        if step == 0 or self._state is None:
            self._state = self.program.new_state()  # a new run
        if steps not in self._steps_encoded:
            for text in self.program.prompts:
                for variant in _emphasis.variants(text, steps):
                    self._encoder.encode(variant)
            self._steps_encoded.add(steps)
        self._check_length(cond_embeds)

        one_part = _one_part(self.program)
        # No uncond from the pipeline: its stock guider then returns the cond prediction (CFG of
        # the cond against itself), which is what a one-part program gives without CFG.
        cfg = self._cfg() and uncond_embeds is not None
        with_uncond = cfg or not one_part
        if with_uncond and uncond_embeds is None:
            raise UnsupportedFeatureError(
                f"{family.pipeline} gave the guider no negative prompt embeddings, and this multi-part program "
                "needs an uncond: pass negative_prompt (\"\" encodes the empty prompt; modular SD3 makes "
                "no uncond without one)."
            )
        texts = [_emphasis.text_at(_emphasis.schedule(t, steps), step) for t in self.program.prompts]
        distinct = list(dict.fromkeys(texts))
        conds = [self._encoder.encode(t) for t in distinct]
        device, dtype = cond_embeds.device, cond_embeds.dtype
        length = max([c.hidden.shape[0] for c in conds] + ([uncond_embeds.shape[1]] if with_uncond else []))
        hidden = [extend(c.hidden.to(device, dtype), length).expand(batch, -1, -1) for c in conds]
        pooled = [c.pooled.to(device, dtype).expand(batch, -1) for c in conds]
        if with_uncond:
            hidden.insert(0, torch.stack([extend(u, length) for u in uncond_embeds]))
            pooled.insert(0, pairs[family.pooled][1])

        fields = {}
        for name, (cond, uncond) in pairs.items():
            if not isinstance(cond, torch.Tensor):
                fields[name] = cond  # None: an input this pipeline does not use
                continue
            rows = [cond] * len(conds)
            if with_uncond:
                rows.insert(0, cond if uncond is None else uncond)
            fields[name] = torch.cat(rows)
        fields[family.hidden] = torch.cat(hidden)
        fields[family.pooled] = torch.cat(pooled)
        items = torch.arange(batch, device=device)
        self._batch = {
            "batch": batch,
            "source": items.repeat(len(conds) + with_uncond),
            "with_uncond": with_uncond,
            "cfg": cfg,
            "index": [distinct.index(t) for t in texts],  # the rows of each prompt part
        }
        return [BlockState(**fields, **{self._identifier_key: "pred_program"})]

    def _check_length(self, cond_embeds: torch.Tensor) -> None:
        """The pipeline's prompt embeddings ``[B, L, D]`` are one chunk of the guider's encoding
        (77 CLIP tokens, then T5's ``max_sequence_length`` for SD3); any other ``L`` means the
        pipeline and the guider were given different settings."""
        expected = self._encoder.encode("").hidden.shape[0]
        if cond_embeds.shape[1] != expected:
            raise UnsupportedFeatureError(
                f"The pipeline's prompt embeddings are {cond_embeds.shape[1]} tokens long, the guider's {expected}: "
                "give ProgramGuidance the max_sequence_length the pipeline runs with."
            )

    def prepare_inputs_from_block_state(self, data, input_fields) -> list:
        # The loops of other modular families (Wan, LTX, ...) call this; SDXL's and SD3's do not.
        raise UnsupportedFeatureError(
            f"ProgramGuidance guides {', '.join(_SUPPORTED)}, whose denoise loops call prepare_inputs; "
            "this pipeline's loop is not supported."
        )

    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        """Place a one-shot forward pre-hook on the denoiser for this step's call: it checks the
        call's LoRA scale against the guider's and, where the loop passes per-sample inputs outside
        the guider (SDXL's latents and timesteps), repeats them to the program's batch. The hook
        removes itself when it runs, so an error inside the denoiser leaves no hook behind."""
        super().prepare_models(denoiser)
        self.cleanup_models(denoiser)
        family, plan = self._family, self._batch
        source, batch = plan["source"], plan["batch"]

        def take(value):
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
                return value.index_select(0, source.to(value.device))
            return value

        def before(module, args, kwargs):
            self.cleanup_models(module)
            self._check_lora_scale(kwargs.get(family.attention_kwargs))
            if not family.hook_denoiser:
                return None
            return tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}

        self._hook = denoiser.register_forward_pre_hook(before, with_kwargs=True)

    def _check_lora_scale(self, attention_kwargs: dict | None) -> None:
        """The texts were encoded at ``lora_scale``; the pipeline's text block used the call's scale."""
        scale = (attention_kwargs or {}).get("scale")
        scale = None if scale is None else float(scale)
        if scale != self.options.lora_scale:
            raise UnsupportedFeatureError(
                f"The pipeline runs with {self._family.attention_kwargs}={{'scale': {scale}}}, which its text "
                f"block also applies to the text encoders' LoRA, but the guider encodes with "
                f"lora_scale={self.options.lora_scale}: give ProgramGuidance(lora_scale={scale})."
            )

    def cleanup_models(self, denoiser: torch.nn.Module) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def forward(self, pred_program: torch.Tensor) -> GuiderOutput:
        """``u + s * full(root)`` from the one batch's predictions ``[rows, C, H, W]``."""
        plan = self._batch
        batch = plan["batch"]
        offset = batch if plan["with_uncond"] else 0
        rows = pred_program[offset:].unflatten(0, (-1, batch))
        conds = [rows[i] for i in plan["index"]]
        if not plan["with_uncond"]:
            guided = conds[0]
        else:
            uncond = pred_program[:batch]
            scale = self.guidance_scale if plan["cfg"] else 1.0
            guided = self.program.guide(
                uncond, conds, scale, step=self._step or 0, num_steps=self._num_inference_steps or 1, state=self._state
            )
        return GuiderOutput(pred=guided, pred_cond=None, pred_uncond=pred_program[:batch] if offset else None)


def _one_part(program) -> bool:
    """A one-part program at weight 1, always on: without CFG its prediction is the conditional one."""
    from .runner import _is_identity

    return _is_identity(program)
