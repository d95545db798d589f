"""Family adapters for the T5-only transformers: PixArt-Sigma (and PixArt-Alpha) and AuraFlow.

Both call ``pipe.transformer`` once per step with ``[uncond, cond]`` under CFG
(``guidance_scale > 1``) or ``[cond]`` without: the runner's joint batching. Their text is one T5
sequence (:mod:`.t5_encoding`; no chunks, emphasis as token weights).

- **PixArt** passes the T5 attention mask to the encoder and to the transformer
  (``encoder_attention_mask``), so every row of the program's batch carries its own text's mask.
  It lower-cases and strips the text first (its ``clean_caption=False`` preprocessing). With
  ``clean_caption=True`` (the pipeline's default) *and* ``beautifulsoup4`` and ``ftfy`` installed,
  the pipeline rewrites captions with a long list of regular expressions that no emphasis
  weight could follow through; such a call is refused up front (pass ``clean_caption=False``).
  Without those two packages the pipeline itself falls back to ``clean_caption=False``, and so
  does this adapter. The transformer predicts noise and a learned variance (8 channels for 4);
  the pipeline keeps only the noise half after CFG, so the program guides the noise channels
  and the variance channels it hands back are zeros, never read.
- **AuraFlow** runs its UMT5 with the attention mask and zeroes the padding positions of the
  output; the transformer takes no mask.
"""

from __future__ import annotations

from typing import Any

import torch

from .adapters import FamilyAdapter, TextOptions, UnsupportedFeatureError, _call_default, register
from .stable_diffusion_3 import refuse_prompt_callbacks

__all__ = ["AuraFlowAdapter", "PixArtAdapter", "T5OnlyTransformerAdapter"]


def _t5_encoder(pipe, options: TextOptions, default_length: int, *, keep_mask: bool = True, **reading):
    from .t5_encoding import T5OnlyTextEncoder, T5TextEncoder

    length = options.max_sequence_length or _call_default(pipe, "max_sequence_length", default_length)
    t5 = T5TextEncoder(
        pipe.tokenizer,
        pipe.text_encoder,
        max_length=length,
        device=pipe._execution_device,
        emphasis=options.emphasis,
        lora_scale=options.lora_scale,
        pass_mask=True,
        **reading,
    )
    return T5OnlyTextEncoder(t5, keep_mask=keep_mask)


class T5OnlyTransformerAdapter(FamilyAdapter):
    """What PixArt and AuraFlow share: ``pipe.transformer`` as the denoiser (latents in
    ``hidden_states``), T5 embeddings with attention masks as the pipeline's prompt arguments, and
    callbacks kept away from the prompt embeddings. Not registered: a base for the two families."""

    sample_input = "hidden_states"
    prompt_inputs = (
        "prompt",
        "prompt_embeds",
        "negative_prompt_embeds",
        "prompt_attention_mask",
        "negative_prompt_attention_mask",
    )

    def check(self, pipe: Any, kwargs: dict) -> None:
        refuse_prompt_callbacks(kwargs, {"prompt_embeds", "negative_prompt_embeds"})

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer


@register
class PixArtAdapter(T5OnlyTransformerAdapter):
    """PixArt-Sigma and PixArt-Alpha: T5 with its attention mask, learned variance."""

    name = "PixArt-Sigma/Alpha"
    pipelines = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    supports_mask = True

    def check(self, pipe: Any, kwargs: dict) -> None:
        if _cleans_captions(pipe, kwargs):
            raise UnsupportedFeatureError(
                f"{type(pipe).__name__} with clean_caption=True rewrites the prompt with beautifulsoup4 and "
                "ftfy (both installed here) in ways emphasis weights cannot follow; pass clean_caption=False."
            )
        super().check(pipe, kwargs)

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        default = 120 if type(pipe).__name__.startswith("PixArtAlpha") else 300
        return _t5_encoder(pipe, options, default, lower_strip=True)

    def cfg_scale(self, pipe: Any, kwargs: dict, negative_prompt: Any) -> float:
        """The pipeline keeps ``guidance_scale`` in a local variable; the runner reads it here."""
        return float(kwargs.get("guidance_scale", _call_default(pipe, "guidance_scale", 4.5)))

    def pipeline_inputs(self, carrier: Any) -> dict:
        return {
            "negative_prompt": None,  # its default, "", would contradict negative_prompt_embeds
            "prompt_embeds": carrier.hidden,
            "negative_prompt_embeds": carrier.hidden,
            "prompt_attention_mask": carrier.mask,
            "negative_prompt_attention_mask": carrier.mask,
        }

    def direct_inputs(self, cond: Any, uncond: Any) -> dict:
        return {
            "negative_prompt": None,
            "prompt_embeds": cond.hidden,
            "negative_prompt_embeds": uncond.hidden,
            "prompt_attention_mask": cond.mask,
            "negative_prompt_attention_mask": uncond.mask,
        }

    def set_text(self, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        kwargs["encoder_hidden_states"] = hidden
        kwargs["encoder_attention_mask"] = mask

    def unwrap(self, output: Any) -> Any:
        prediction = super().unwrap(output)
        return prediction[:, : self._noise_channels(prediction)]

    def rewrap(self, output: Any, tensor: Any) -> Any:
        full = super().unwrap(output)
        if full.shape[1] != tensor.shape[1]:  # learned variance: never read by the pipeline
            variance = tensor.new_zeros((tensor.shape[0], full.shape[1] - tensor.shape[1], *tensor.shape[2:]))
            tensor = torch.cat([tensor, variance], dim=1)
        return super().rewrap(output, tensor)

    @staticmethod
    def _noise_channels(prediction: torch.Tensor) -> int:
        # PixArt's checkpoints predict [noise, variance] with out_channels = 2 * in_channels
        channels = prediction.shape[1]
        return channels // 2 if channels % 2 == 0 and channels >= 8 else channels


def _cleans_captions(pipe: Any, kwargs: dict) -> bool:
    if not kwargs.get("clean_caption", _call_default(pipe, "clean_caption", False)):
        return False
    from diffusers.utils import is_bs4_available, is_ftfy_available

    return is_bs4_available() and is_ftfy_available()


@register
class AuraFlowAdapter(T5OnlyTransformerAdapter):
    """AuraFlow: UMT5 with its padding zeroed, no text mask on the transformer."""

    name = "AuraFlow"
    pipelines = ("AuraFlowPipeline",)
    supports_mask = False

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        return _t5_encoder(pipe, options, 256, keep_mask=False, zero_padding=True)

    def lora_scale(self, kwargs: dict) -> float | None:
        scale = (kwargs.get("attention_kwargs") or {}).get("scale")
        return None if scale is None else float(scale)

    def pipeline_inputs(self, carrier: Any) -> dict:
        # The pipeline insists on masks beside embeddings; it reads nothing but their presence.
        mask = torch.ones(carrier.hidden.shape[:2], dtype=torch.long, device=carrier.hidden.device)
        return {
            "prompt_embeds": carrier.hidden,
            "negative_prompt_embeds": carrier.hidden,
            "prompt_attention_mask": mask,
            "negative_prompt_attention_mask": mask,
        }

    def direct_inputs(self, cond: Any, uncond: Any) -> dict:
        return {**self.pipeline_inputs(uncond), "prompt_embeds": cond.hidden}

    def set_text(self, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        kwargs["encoder_hidden_states"] = hidden
