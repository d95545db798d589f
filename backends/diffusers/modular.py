"""A compiled program as a guider of diffusers' modular pipelines (``diffusers.guiders``).

Modular pipelines take their guidance from a ``guider`` component: at each step the denoise block
hands it the model inputs as ``(cond, uncond)`` pairs, calls the UNet once per batch the guider
prepares, and asks the guider for the guided prediction. :class:`ProgramGuidance` prepares *one*
batch for the whole program: the pipeline's uncond rows (its negative prompt, or SDXL's zeros),
then one row per item for every conditioning the program shows at this step, encoded A1111's way
(:mod:`.text_encoding`). Its ``prepare_models`` hook repeats the latents (and any other per-sample
UNet input) to that batch, so a step is one UNet call, and its ``forward`` is
``program.guide(u, conds, guidance_scale)``::

    from diffusers.modular_pipelines.stable_diffusion_xl import StableDiffusionXLAutoBlocks
    from neutral_lang.backends.diffusers.modular import ProgramGuidance

    pipe = StableDiffusionXLAutoBlocks().init_pipeline()
    pipe.update_components(**{k: v for k, v in sdxl.components.items() if v is not None})
    guider = ProgramGuidance(prompt="a castle AND_PERP glasses :-0.5", guidance_scale=7.0).bind(pipe)
    pipe.update_components(guider=guider)
    latents = pipe(prompt="a castle", negative_prompt="blurry", output="latents")

The pipeline's own ``prompt`` is still encoded by its text-encoder block (it must be given), but
only its shape and its negative side are used: the conditionings come from the program. With
``guidance_scale <= 1`` there is no CFG and the prediction is ``u + full(root)``, as in
``run(pipe)``; a one-part program is then the conditional prediction, computed without ``u``.

Supported: ``StableDiffusionXLModularPipeline`` txt2img (the SDXL text encoders and pooled
embeddings; tested against the modular pipeline's own ``ClassifierFreeGuidance``). Not supported:
the ControlNet loop (the ControlNet would see the pipeline's batch, not the program's), one
program with a list of prompts, and SD3/Flux modular pipelines (their guiders see other inputs; not
adapted). Conditionings with more 75-token chunks than the others are lengthened by repeating
their last vector (A1111's ``stack_conds``), the uncond included: the modular loop passes no
attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from neutral_lang import emphasis as _emphasis

from .adapters import TextOptions, UnsupportedFeatureError, UnsupportedPipelineError
from .text_encoding import COMMA_BACKTRACK, extend

__all__ = ["ProgramGuidance"]

_SUPPORTED = ("StableDiffusionXLModularPipeline",)


class ProgramGuidance(BaseGuidance):
    """Guidance by a Neutral Prompt program, in one UNet call per step.

    ``prompt`` is the program's source (one prompt; compiled with :func:`neutral_lang.compile`),
    ``guidance_scale`` the CFG scale ``s`` of ``u + s * full(root)``; ``emphasis``,
    ``clip_skip`` and ``comma_backtrack`` as in ``run(pipe)``. ``start``/``stop``/``enabled``
    are the base class's: outside ``[start, stop)`` of the steps, or when disabled, the prediction
    is ``u + full(root)`` (no CFG). Call :meth:`bind` with the pipeline before the first run.

    Raises ``ValueError`` for a list of prompts; :meth:`bind` raises ``UnsupportedPipelineError``
    (a ``TypeError``) for a pipeline other than modular SDXL.
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
        self.guidance_scale = float(guidance_scale)
        self.options = TextOptions(emphasis, clip_skip, comma_backtrack)
        self._encoder = None
        self._pipe_name = ""
        self._state: Any = None
        self._steps_encoded: set[int] = set()
        self._batch: dict[str, Any] | None = None  # this step's plan: rows, source, identity
        self._hook = None

    def bind(self, pipe) -> "ProgramGuidance":
        """Encode with ``pipe``'s text encoders (a modular SDXL pipeline); returns ``self``."""
        if type(pipe).__name__ not in _SUPPORTED:
            raise UnsupportedPipelineError(
                f"ProgramGuidance cannot guide {type(pipe).__name__}; it supports {', '.join(_SUPPORTED)}. "
                "For DiffusionPipeline classes use neutral_lang.compile(prompt).run(pipe)."
            )
        from .stable_diffusion import StableDiffusionXLAdapter

        self._encoder = StableDiffusionXLAdapter().text_encoder(pipe, self.options)
        self._pipe_name = type(pipe).__name__
        self._steps_encoded.clear()
        return self

    # -- the diffusers guider interface -----------------------------------------------------

    @property
    def is_conditional(self) -> bool:
        return True  # the one batch holds the conditional rows (and the uncond ones)

    @property
    def num_conditions(self) -> int:
        """2 when the program reads an uncond: the pipeline's text block then prepares the
        negative embeddings (it asks ``num_conditions > 1``). The batches are always one."""
        needs_uncond = self._enabled and (self.guidance_scale > 1.0 or not _one_part(self.program))
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

    def prepare_inputs(self, data: dict[str, tuple[Any, Any]]) -> list:
        """One batch: ``B`` uncond rows (unless no CFG and a one-part program), then ``B`` rows per
        conditioning shown at this step. ``data`` maps each UNet input to ``(cond, uncond)``."""
        from diffusers.modular_pipelines.modular_pipeline import BlockState

        if self._encoder is None:
            raise UnsupportedFeatureError(
                "ProgramGuidance has no pipeline to encode with: call guider.bind(pipe) first."
            )
        cond_embeds, uncond_embeds = data["prompt_embeds"]
        batch = cond_embeds.shape[0]
        step, steps = self._step or 0, self._num_inference_steps or 1
        if step == 0 or self._state is None:
            self._state = self.program.new_state()  # a new run
        if steps not in self._steps_encoded:
            for text in self.program.prompts:
                for variant in _emphasis.variants(text, steps):
                    self._encoder.encode(variant)
            self._steps_encoded.add(steps)

        cfg = self._cfg()
        texts = [_emphasis.text_at(_emphasis.schedule(t, steps), step) for t in self.program.prompts]
        distinct = list(dict.fromkeys(texts))
        conds = [self._encoder.encode(t) for t in distinct]
        with_uncond = cfg or not _one_part(self.program)
        if with_uncond and uncond_embeds is None:
            raise UnsupportedFeatureError(
                "The modular pipeline gave the guider no negative prompt embeddings; ProgramGuidance needs them "
                "for multi-part programs (pass negative_prompt, or use its default)."
            )
        device, dtype = cond_embeds.device, cond_embeds.dtype
        length = max([c.hidden.shape[0] for c in conds] + ([uncond_embeds.shape[1]] if with_uncond else []))
        hidden = [extend(c.hidden.to(device, dtype), length).expand(batch, -1, -1) for c in conds]
        pooled = [c.pooled.to(device, dtype).expand(batch, -1) for c in conds]
        if with_uncond:
            hidden.insert(0, torch.stack([extend(u, length) for u in uncond_embeds]))
            pooled.insert(0, data["text_embeds"][1])

        fields = {}
        for name, (cond, uncond) in data.items():
            if not isinstance(cond, torch.Tensor):
                fields[name] = cond  # None: an input this pipeline does not use
                continue
            rows = [cond] * len(conds)
            if with_uncond:
                rows.insert(0, uncond)
            fields[name] = torch.cat(rows)
        fields["prompt_embeds"] = torch.cat(hidden)
        fields["text_embeds"] = torch.cat(pooled)
        items = torch.arange(batch, device=device)
        self._batch = {
            "batch": batch,
            "source": items.repeat(len(conds) + with_uncond),
            "with_uncond": with_uncond,
            "cfg": cfg,
            "index": [distinct.index(t) for t in texts],  # the rows of each prompt part
        }
        return [BlockState(**fields, **{self._identifier_key: "pred_program"})]

    def prepare_inputs_from_block_state(self, data, input_fields) -> list:
        # The loops of other modular families (Wan, LTX, ...) call this; modular SDXL does not.
        raise UnsupportedFeatureError(
            f"ProgramGuidance guides {', '.join(_SUPPORTED)}, whose denoise loop calls prepare_inputs; "
            "this pipeline's loop is not supported."
        )

    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        """Repeat the denoiser's per-sample inputs (latents, timesteps) to the program's batch."""
        super().prepare_models(denoiser)
        plan = self._batch
        source, batch = plan["source"], plan["batch"]

        def expand(module, args, kwargs):
            def take(value):
                if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
                    return value.index_select(0, source.to(value.device))
                return value

            return tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}

        self._hook = denoiser.register_forward_pre_hook(expand, with_kwargs=True)

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
