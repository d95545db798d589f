"""Family adapter for Stable Diffusion 3 and 3.5: an MMDiT transformer, CLIP-L + CLIP-G + T5.

The pipeline calls ``pipe.transformer`` once per step with ``[uncond, cond]`` under CFG
(``guidance_scale > 1``) or ``[cond]`` without, so the runner's joint batching applies unchanged.
The text reaches the transformer as ``encoder_hidden_states`` (CLIP hidden states then T5's, one
sequence, see :class:`.t5_encoding.SD3TextEncoder`) and ``pooled_projections`` (the two CLIP
projections). The transformer takes no text attention mask.

ControlNet (``StableDiffusion3ControlNetPipeline``, ``StableDiffusion3ControlNetInpaintingPipeline``;
an ``SD3ControlNetModel`` or ``SD3MultiControlNetModel``) is a side module: the pipeline calls it
once per step on the transformer's batch, and its block samples reach the transformer as
``block_controlnet_hidden_states``, one residual per sample. It sees the program's expanded batch
with each row's text, as the transformer does, except where the pipeline gives it no text (see
:meth:`StableDiffusion3Adapter.side_text`): those inputs stay as the pipeline made them, gathered
per row. ``controlnet_pooled_projections`` (one pooled text input for the ControlNet's every row)
is refused.

Refused before any work: skip-layer guidance (``skip_guidance_layers``: a third transformer call
per step on the cond batch alone, which the program's one batch cannot stand in for), and a
``callback_on_step_end`` that asks for the prompt embeddings (placeholders under a program).
"""

from __future__ import annotations

from typing import Any

from .adapters import (
    FamilyAdapter,
    TextOptions,
    UnsupportedFeatureError,
    _call_default,
    pooled_embedding_inputs,
    register,
    unwrap_module,
)

__all__ = ["JointTransformerAdapter", "StableDiffusion3Adapter", "refuse_prompt_callbacks"]


def _controlnet(pipe: Any) -> tuple[Any, ...]:
    """``(pipe.controlnet,)`` where the pipeline has one, else ``()``."""
    controlnet = getattr(pipe, "controlnet", None)
    return () if controlnet is None else (controlnet,)


def refuse_prompt_callbacks(kwargs: dict, names: set[str]) -> None:
    """Refuse a ``callback_on_step_end`` that asks for any of the prompt tensors ``names``."""
    asked = set(kwargs.get("callback_on_step_end_tensor_inputs") or ())
    if kwargs.get("callback_on_step_end") is not None and asked & names:
        raise UnsupportedFeatureError(
            f"callback_on_step_end_tensor_inputs asks for {sorted(asked & names)}: under a compiled "
            "program those are placeholders (the program sets the text inputs at every step), so a "
            "callback cannot read or change the prompt through them. Ask for 'latents' only."
        )


class JointTransformerAdapter(FamilyAdapter):
    """What SD3 and Flux share: a transformer denoiser taking ``encoder_hidden_states`` and
    ``pooled_projections``, the LoRA scale in ``joint_attention_kwargs``, and pooled prompt
    embeddings beside the per-token ones. Not registered: a base for the two families.

    Given embeddings, their ``encode_prompt`` does not repeat them per image
    (``repeats_given_embeddings = False``), so the runner takes the direct path only for one
    image per prompt."""

    repeats_given_embeddings = False

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def side_modules(self, pipe: Any) -> tuple[Any, ...]:
        return _controlnet(pipe)

    def lora_scale(self, kwargs: dict) -> float | None:
        scale = (kwargs.get("joint_attention_kwargs") or {}).get("scale")
        return None if scale is None else float(scale)

    def pipeline_inputs(self, carrier: Any) -> dict:
        return self.direct_inputs(carrier, carrier)

    def direct_inputs(self, cond: Any, uncond: Any) -> dict:
        return pooled_embedding_inputs(cond, uncond)

    def set_text(self, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        kwargs["encoder_hidden_states"] = hidden
        kwargs["pooled_projections"] = pooled


@register
class StableDiffusion3Adapter(JointTransformerAdapter):
    """SD3 / SD3.5 (Medium, Large, Large Turbo): txt2img, img2img, inpaint."""

    name = "Stable Diffusion 3/3.5"
    pipelines = (
        "StableDiffusion3Pipeline",
        "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline",
        "StableDiffusion3ControlNetPipeline",
        "StableDiffusion3ControlNetInpaintingPipeline",
    )
    sample_input = "hidden_states"
    residual_inputs = ("block_controlnet_hidden_states",)
    supports_mask = False
    prompt_inputs = (
        "prompt",
        "prompt_2",
        "prompt_3",
        "negative_prompt_2",
        "negative_prompt_3",
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )

    def check(self, pipe: Any, kwargs: dict) -> None:
        if kwargs.get("skip_guidance_layers"):
            raise UnsupportedFeatureError(
                "skip_guidance_layers (skip-layer guidance) adds a third transformer call per step that "
                "a compiled program cannot stand in for; leave it unset (None)."
            )
        if kwargs.get("controlnet_pooled_projections") is not None:
            raise UnsupportedFeatureError(
                "controlnet_pooled_projections replaces the ControlNet's pooled text embedding for "
                "every row; under a compiled program each row reads its own conditioning's. Leave it "
                "unset (None)."
            )
        refuse_prompt_callbacks(kwargs, {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                         "negative_pooled_prompt_embeds"})

    def side_text(self, pipe: Any, module: Any, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        """As the pipeline: a ControlNet given no text (SD3.5's: ``encoder_hidden_states=None``)
        keeps none, and one the pipeline gives zeros as its pooled projection keeps them: a
        ControlNet with ``force_zeros_for_pooled_projection`` (InstantX), and every ControlNet of
        ``StableDiffusion3ControlNetInpaintingPipeline``."""
        from diffusers import StableDiffusion3ControlNetInpaintingPipeline as Inpainting

        module = unwrap_module(module)
        config = (module.nets[0] if hasattr(module, "nets") else module).config
        if kwargs.get("encoder_hidden_states") is not None:
            kwargs["encoder_hidden_states"] = hidden
        if not (isinstance(pipe, Inpainting) or getattr(config, "force_zeros_for_pooled_projection", False)):
            kwargs["pooled_projections"] = pooled

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        from .t5_encoding import SD3TextEncoder

        length = options.max_sequence_length or _call_default(pipe, "max_sequence_length", 256)
        return SD3TextEncoder(pipe, options, length)
