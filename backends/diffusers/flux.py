"""Family adapter for Flux.1 (dev, schnell, and their img2img/inpaint pipelines): CLIP + T5.

Flux calls ``pipe.transformer`` once per step with the cond batch ``[c]``. With *true CFG*
(``true_cfg_scale > 1`` and a negative prompt) it calls it a second time, on the uncond batch,
and combines ``u + true_cfg_scale * (c - u)``: classifier-free guidance batched per branch. The
runner follows (``cfg_batching = "per_branch"``): the cond call evaluates every conditioning the
program needs, the uncond call the negative prompt, and the uncond call returns the program's
guided prediction ``g``, which is also written into the tensor the cond call returned, so that
the pipeline's ``g + s * (g - g)`` is ``g`` exactly.

Composition on a guidance-distilled model. FLUX.1-dev and schnell are distilled: the embedded
``guidance_scale`` (dev) steers each prediction, and there is no uncond branch unless true CFG is
asked for. Without true CFG, a program's prediction is ``u + full(root)`` at scale 1 (as for any
pipeline that runs no CFG): ``u`` is the distilled prediction for the negative prompt (``""``
when none is given), and each part adds its weighted difference ``c_i - u``. A one-part prompt is
the plain prediction exactly and needs no ``u`` at all; ``a AND b :0.5`` moves the plain
``a`` prediction halfway towards ``b``'s, measured from the empty prompt's. Each ``c_i`` is already
a guided prediction, so the parts compose guided images, not raw conditionals; with true CFG,
the program's scale is ``true_cfg_scale`` and the composition is the one of every other family.

Text: ``encoder_hidden_states`` is T5's sequence (``max_sequence_length`` tokens, 512 by
default; emphasis as in :mod:`.t5_encoding`), ``pooled_projections`` CLIP's pooled output.
``txt_ids`` depends only on the sequence length, which every text shares.

ControlNet (``FluxControlNet{,Img2Img,Inpaint}Pipeline``; a ``FluxControlNetModel``, union
models with ``control_mode`` included, or a ``FluxMultiControlNetModel``) is a side module: the
pipeline calls it once per step, before the cond call, with the prompt's text, and hands its
``controlnet_block_samples`` / ``controlnet_single_block_samples`` to the transformer -- to both
calls under true CFG. Under a program it runs once per step on every conditioning row (and, when
CFG does not run, on the uncond rows a multi-part program needs), each row with its own text,
and the transformer reads each row's residuals. Under true CFG the uncond call reuses, for each
item, the residuals of that item's first conditioning, as the pipeline reuses the prompt's: a
one-part prompt is then the plain pipeline exactly.
"""

from __future__ import annotations

from typing import Any

from .adapters import TextOptions, _call_default, register
from .stable_diffusion_3 import JointTransformerAdapter, refuse_prompt_callbacks

__all__ = ["FluxAdapter"]


@register
class FluxAdapter(JointTransformerAdapter):
    """Flux.1: true CFG per branch, or the distilled prediction alone."""

    name = "Flux.1"
    pipelines = (
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxControlNetPipeline",
        "FluxControlNetImg2ImgPipeline",
        "FluxControlNetInpaintPipeline",
    )
    sample_input = "hidden_states"
    residual_inputs = ("controlnet_block_samples", "controlnet_single_block_samples")
    cfg_batching = "per_branch"
    supports_mask = False
    prompt_inputs = (
        "prompt",
        "prompt_2",
        "negative_prompt_2",
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )

    def check(self, pipe: Any, kwargs: dict) -> None:
        # IP-Adapter images need nothing here: the pipeline puts each branch's image embeddings
        # into that call's joint_attention_kwargs, and the pre-hook gathers them row by row.
        refuse_prompt_callbacks(kwargs, {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                         "negative_pooled_prompt_embeds"})

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        from .t5_encoding import FluxTextEncoder

        length = options.max_sequence_length or _call_default(pipe, "max_sequence_length", 512)
        return FluxTextEncoder(pipe, options, length)

    def cfg_scale(self, pipe: Any, kwargs: dict, negative_prompt: Any) -> float:
        """``true_cfg_scale`` when the pipeline runs true CFG (a negative prompt and a scale > 1), else 1."""
        scale = float(kwargs.get("true_cfg_scale", _call_default(pipe, "true_cfg_scale", 1.0)))
        return scale if scale > 1 and negative_prompt is not None else 1.0
