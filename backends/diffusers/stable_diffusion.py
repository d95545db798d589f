"""Family adapters for Stable Diffusion 1.x/2.x and SDXL (base and refiner): UNet, CLIP text encoders.

Both families batch classifier-free guidance jointly (``[uncond, cond]`` in one UNet call), take
their text through ``encoder_hidden_states`` (SDXL adds the pooled embedding as
``added_cond_kwargs["text_embeds"]``), and accept an ``encoder_attention_mask``. ControlNet and
MultiControlNet (``pipe.controlnet``) are side modules: they see the same expanded batch, and
their residuals reach the UNet through ``down_block_additional_residuals`` /
``mid_block_additional_residual``. T2I-Adapter residuals and IP-Adapter image embeddings are
per-sample inputs of the UNet and are gathered with the latents (the uncond rows read the
pipeline's negative image embeddings).
"""

from __future__ import annotations

from typing import Any

from .adapters import FamilyAdapter, TextOptions, UnsupportedFeatureError, pooled_embedding_inputs, refuse_pag, register

__all__ = ["StableDiffusionAdapter", "StableDiffusionXLAdapter"]

_RESIDUALS = ("down_block_additional_residuals", "mid_block_additional_residual")


class _UNetFamily(FamilyAdapter):
    sample_input = "sample"
    residual_inputs = _RESIDUALS
    supports_mask = True

    def check(self, pipe: Any, kwargs: dict) -> None:
        refuse_pag(pipe, kwargs)
        edited = {"prompt_embeds", "negative_prompt_embeds", "add_text_embeds", "negative_pooled_prompt_embeds"}
        asked = set(kwargs.get("callback_on_step_end_tensor_inputs") or ())
        if kwargs.get("callback_on_step_end") is not None and asked & edited:
            raise UnsupportedFeatureError(
                f"callback_on_step_end_tensor_inputs asks for {sorted(asked & edited)}: under a compiled "
                "program those are placeholders (the program sets the text inputs at every step), so a "
                "callback cannot read or change the prompt through them. Ask for 'latents' only."
            )

    def denoiser(self, pipe: Any) -> Any:
        return pipe.unet

    def side_modules(self, pipe: Any) -> tuple[Any, ...]:
        controlnet = getattr(pipe, "controlnet", None)
        return () if controlnet is None else (controlnet,)

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        from .text_encoding import PromptEncoder

        return PromptEncoder(
            pipe,
            family=self,
            emphasis=options.emphasis,
            clip_skip=options.clip_skip,
            comma_backtrack=options.comma_backtrack,
            lora_scale=options.lora_scale,
        )

    def lora_scale(self, kwargs: dict) -> float | None:
        scale = (kwargs.get("cross_attention_kwargs") or {}).get("scale")
        return None if scale is None else float(scale)

    def set_text(self, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        kwargs["encoder_hidden_states"] = hidden
        added = kwargs.get("added_cond_kwargs")
        if pooled is not None and added is not None and "text_embeds" in added:
            kwargs["added_cond_kwargs"] = {**added, "text_embeds": pooled}
        if mask is not None:
            kwargs["encoder_attention_mask"] = mask

    # -- CLIP text encoding (text_encoding.PromptEncoder asks these) -------------------------

    def clip_pairs(self, pipe: Any) -> list[tuple[Any, Any]]:
        """``(tokenizer, text encoder)`` pairs, in the order their hidden states are concatenated."""
        raise NotImplementedError

    def hidden_layer(self, encoder: Any, out: Any, clip_skip: int | None) -> Any:
        """The hidden states ``[chunks, L, D]`` the UNet reads, as the pipeline's ``encode_prompt``."""
        raise NotImplementedError

    def pooled_output(self, out: Any) -> Any:
        """The pooled text embedding ``[chunks, D]`` of an encoder output, or None."""
        return None


@register
class StableDiffusionAdapter(_UNetFamily):
    """SD 1.x/2.x (epsilon and v-prediction): one CLIP encoder, last layer (after the final norm)."""

    name = "Stable Diffusion 1.x/2.x"
    pipelines = (
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "StableDiffusionControlNetPipeline",
        "StableDiffusionControlNetImg2ImgPipeline",
        "StableDiffusionControlNetInpaintPipeline",
        "StableDiffusionAdapterPipeline",
        "StableDiffusionPAGPipeline",
    )

    def clip_pairs(self, pipe: Any) -> list[tuple[Any, Any]]:
        return [(pipe.tokenizer, pipe.text_encoder)]

    def hidden_layer(self, encoder: Any, out: Any, clip_skip: int | None) -> Any:
        if clip_skip is None:
            return out.last_hidden_state
        # transformers 5 puts the norm on CLIPTextModel itself; 4.x on its .text_model
        norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
        return norm(out.hidden_states[-(clip_skip + 1)])

    def pipeline_inputs(self, carrier: Any) -> dict:
        return self.direct_inputs(carrier, carrier)

    def direct_inputs(self, cond: Any, uncond: Any) -> dict:
        return {"prompt_embeds": cond.hidden, "negative_prompt_embeds": uncond.hidden}


@register
class StableDiffusionXLAdapter(_UNetFamily):
    """SDXL base and refiner: CLIP ViT-L and OpenCLIP bigG (the refiner has the second only),
    penultimate layers concatenated, pooled embedding from the second encoder."""

    name = "Stable Diffusion XL"
    pipelines = (
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
        "StableDiffusionXLControlNetPipeline",
        "StableDiffusionXLControlNetImg2ImgPipeline",
        "StableDiffusionXLControlNetInpaintPipeline",
        "StableDiffusionXLAdapterPipeline",
        "StableDiffusionXLPAGPipeline",
    )
    prompt_inputs = (
        "prompt",
        "prompt_2",
        "prompt_embeds",
        "pooled_prompt_embeds",
        "negative_prompt_2",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )

    def clip_pairs(self, pipe: Any) -> list[tuple[Any, Any]]:
        return [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]

    def hidden_layer(self, encoder: Any, out: Any, clip_skip: int | None) -> Any:
        return out.hidden_states[-((clip_skip or 0) + 2)]

    def pooled_output(self, out: Any) -> Any:
        return getattr(out, "text_embeds", None)

    def zero_uncond(self, pipe: Any, negative_prompt: Any) -> bool:
        # diffusers' SDXL (like A1111's) uses zeros, not the encoded "", for an absent negative prompt
        return negative_prompt is None and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))

    def pipeline_inputs(self, carrier: Any) -> dict:
        return self.direct_inputs(carrier, carrier)

    def direct_inputs(self, cond: Any, uncond: Any) -> dict:
        return pooled_embedding_inputs(cond, uncond)
