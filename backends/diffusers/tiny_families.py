"""Tiny random-weight transformer pipelines, built offline: SD3, Flux.1, PixArt-Sigma, AuraFlow.

The companions of :mod:`.tiny` for the families whose denoiser is a transformer and whose text
encoders include T5. Every component comes from a small config with a fixed seed, so two calls
build identical pipelines and nothing is downloaded; a pipeline builds in well under a second and
runs two steps at 32x32 pixels in tens of milliseconds on one CPU core. Random weights: they
exercise the machinery, they draw nothing.

The T5 tokenizer is a real `T5Tokenizer` (a sentencepiece-style Unigram model with the `"▁"`
word-start marker, `</s>` closing every sequence, `<pad>` = 0) over a small vocabulary: the
words of :data:`.tiny.WORDS` are whole pieces, everything else is spelled one character at a
time, so `"a castle, glasses"` is `▁a ▁castle , ▁glasses </s>`. The CLIP tokenizers are
:func:`.tiny.make_tokenizer`'s.
"""

from __future__ import annotations

import string

import torch
from diffusers import (
    AuraFlowPipeline,
    AuraFlowTransformer2DModel,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

from .tiny import IMAGE_SIZE, TEXT_HIDDEN, WORDS, clip_text_config, make_tokenizer, make_vae, quiet

__all__ = [
    "make_t5_tokenizer",
    "sd3_components",
    "sd3_pipeline",
    "load_sd3_ip_adapter",
    "load_flux_ip_adapter",
    "sd3_controlnet",
    "flux_controlnet",
    "flux_components",
    "flux_pipeline",
    "pixart_sigma_components",
    "pixart_sigma_pipeline",
    "auraflow_components",
    "auraflow_pipeline",
]

T5_HIDDEN = 32  # d_model of the tiny T5 encoders (SD3's is 2 * TEXT_HIDDEN, see sd3_components)
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation


def make_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer: ids 0-2 are `<pad>`, `</s>`, `<unk>`, then `"▁"`, `"▁" + word` for each of
    `WORDS`, then each character with and without the word-start marker.

    Unigram scores make a whole word (-1) beat its spelling (-5 per character), as in a trained
    sentencepiece model. No sentinel (`<extra_id_*>`) tokens.
    """
    pieces = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    for word in WORDS:
        pieces.setdefault("▁" + word, -1.0)
    for character in _CHARACTERS:
        pieces.setdefault("▁" + character, -5.0)
        pieces.setdefault(character, -5.0)
    tokenizer = T5Tokenizer(vocab=list(pieces.items()), extra_ids=0)
    tokenizer.model_max_length = 512
    return tokenizer


def _t5_config(tokenizer, d_model: int, config=T5Config):
    return config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def _flow_scheduler(**config) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**config)


def sd3_components(*, seed: int = 0, t5: bool = True, layers: int = 1) -> dict:
    """Components for `StableDiffusion3Pipeline`: two CLIP encoders with projections and a T5.

    `t5=False` leaves `text_encoder_3`/`tokenizer_3` out, as SD3 users do to save memory (the
    pipeline then uses zeros for T5's part of the sequence). `layers`: the transformer's blocks
    (the last one reads no ControlNet residual, so a ControlNet needs 2). The CLIP hidden states (2 x 32 wide)
    are padded to the joint attention width 64, which is T5's `d_model` here. 16 latent channels,
    as SD3's VAE has (`StableDiffusion3InpaintPipeline` insists on them).
    """
    torch.manual_seed(seed)
    joint = 2 * TEXT_HIDDEN
    transformer = SD3Transformer2DModel(
        sample_size=IMAGE_SIZE // 2,
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=joint,
        pooled_projection_dim=2 * TEXT_HIDDEN,
        out_channels=16,
        pos_embed_max_size=64,  # latents up to 64x64 (128 pixels)
    )
    tokenizer = make_tokenizer()
    tokenizer_2 = make_tokenizer(pad_token="!")
    text_encoder = CLIPTextModelWithProjection(clip_text_config(tokenizer, layers=2))
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2, layers=2))
    tokenizer_3 = text_encoder_3 = None
    if t5:
        tokenizer_3 = make_t5_tokenizer()
        text_encoder_3 = T5EncoderModel(_t5_config(tokenizer_3, joint)).eval()
    return dict(
        transformer=transformer.eval(),
        scheduler=_flow_scheduler(shift=3.0),
        vae=make_vae(latent_channels=16, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def flux_components(*, seed: int = 0, guidance_embeds: bool = True) -> dict:
    """Components for `FluxPipeline`: CLIP (pooled projection only) and T5 (the sequence).

    `guidance_embeds=True` is FLUX.1-dev's guidance-distilled transformer (the pipeline's
    `guidance_scale` is an input of the model); `False` is FLUX.1-schnell's. The 4 latent
    channels are packed in 2x2 patches into the transformer's 16 input channels.
    """
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    tokenizer = make_tokenizer()
    tokenizer_2 = make_t5_tokenizer()
    return dict(
        scheduler=_flow_scheduler(),
        vae=make_vae(shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=CLIPTextModel(clip_text_config(tokenizer, layers=2)).eval(),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(_t5_config(tokenizer_2, T5_HIDDEN)).eval(),
        tokenizer_2=tokenizer_2,
        transformer=transformer.eval(),
        image_encoder=None,
        feature_extractor=None,
    )


def pixart_sigma_components(*, seed: int = 0) -> dict:
    """Components for `PixArtSigmaPipeline`: T5 alone, with its attention mask.

    The transformer predicts noise and a learned variance (8 output channels for 4 latent
    channels), as PixArt's checkpoints do.
    """
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=IMAGE_SIZE // 2,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=T5_HIDDEN,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        norm_num_groups=2,
    )
    return _t5_only_components(transformer, DDIMScheduler())


def auraflow_components(*, seed: int = 0) -> dict:
    """Components for `AuraFlowPipeline`: UMT5 alone (padding zeroed by the pipeline)."""
    torch.manual_seed(seed)
    transformer = AuraFlowTransformer2DModel(
        sample_size=IMAGE_SIZE // 2,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        caption_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=256,  # 16x16 patches: up to 64x64 pixels
    )
    return _t5_only_components(transformer, _flow_scheduler(), umt5=True)


def _t5_only_components(transformer, scheduler, *, umt5: bool = False) -> dict:
    """The components of a pipeline whose only text encoder is a T5 (``umt5``: a UMT5), given
    its transformer (built first, so the seed gives it the same weights as before)."""
    tokenizer = make_t5_tokenizer()
    encoder, config = (UMT5EncoderModel, UMT5Config) if umt5 else (T5EncoderModel, T5Config)
    return dict(
        tokenizer=tokenizer,
        text_encoder=encoder(_t5_config(tokenizer, T5_HIDDEN, config)).eval(),
        vae=make_vae(),
        transformer=transformer.eval(),
        scheduler=scheduler,
    )


def sd3_pipeline(**options) -> StableDiffusion3Pipeline:
    return quiet(StableDiffusion3Pipeline(**sd3_components(**options)))


def flux_pipeline(**options) -> FluxPipeline:
    return quiet(FluxPipeline(**flux_components(**options)))


def pixart_sigma_pipeline(**options) -> PixArtSigmaPipeline:
    return quiet(PixArtSigmaPipeline(**pixart_sigma_components(**options)))


def auraflow_pipeline(**options) -> AuraFlowPipeline:
    return quiet(AuraFlowPipeline(**auraflow_components(**options)))


# -- add-ons ----------------------------------------------------------------------------------------

#: The tiny SD3 IP-Adapter's image side: SigLIP width, resampler width and image tokens.
SD3_IMAGE_HIDDEN = 16
SD3_IMAGE_TOKENS = 4


def load_sd3_ip_adapter(pipe: StableDiffusion3Pipeline, *, seed: int = 3) -> StableDiffusion3Pipeline:
    """Give a tiny SD3 pipeline (any of its three tasks) a random IP-Adapter, in place, through
    diffusers' own ``load_ip_adapter`` (``SD3IPAdapterMixin``), and return it.

    A SigLIP vision encoder (``SD3_IMAGE_HIDDEN`` wide, 32x32 pixel input, 16 patches) and its image
    processor become ``pipe.image_encoder`` / ``pipe.feature_extractor``; the adapter's weights
    (an ``IPAdapterTimeImageProjection`` resampler with ``SD3_IMAGE_TOKENS`` queries and one
    ``SD3IPAdapterJointAttnProcessor2_0`` per transformer block, scale 0.5) are built here from
    ``seed``, so nothing is downloaded. The pipeline then takes ``ip_adapter_image=`` (a PIL image
    or a ``[1, 3, 32, 32]`` tensor) or ``ip_adapter_image_embeds=`` of shape
    ``[2, 16, SD3_IMAGE_HIDDEN]`` under CFG (negative first), ``[1, 16, SD3_IMAGE_HIDDEN]`` without.
    """
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterTimeImageProjection
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    encoder = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=SD3_IMAGE_HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        )
    ).eval()
    processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    pipe.register_modules(image_encoder=encoder, feature_extractor=processor)

    transformer = pipe.transformer
    head_dim = transformer.config.attention_head_dim
    width = head_dim * transformer.config.num_attention_heads
    # diffusers' loader reads the sizes back from the weights: 64 channels per resampler head, 4 blocks
    resampler = IPAdapterTimeImageProjection(
        embed_dim=SD3_IMAGE_HIDDEN,
        output_dim=width,
        hidden_dim=SD3_IMAGE_HIDDEN,
        depth=4,
        dim_head=64,
        heads=1,
        num_queries=SD3_IMAGE_TOKENS,
        timestep_in_dim=SD3_IMAGE_HIDDEN,
    )
    attention = {}
    for index in range(len(transformer.attn_processors)):
        processor_weights = SD3IPAdapterJointAttnProcessor2_0(
            hidden_size=width, ip_hidden_states_dim=width, head_dim=head_dim, timesteps_emb_dim=SD3_IMAGE_HIDDEN
        ).state_dict()
        attention.update({f"{index}.{name}": value for name, value in processor_weights.items()})
    pipe.load_ip_adapter({"image_proj": resampler.state_dict(), "ip_adapter": attention}, low_cpu_mem_usage=False)
    return pipe


#: The tiny Flux IP-Adapter's CLIP image embedding width and its image tokens per adapter.
FLUX_IMAGE_EMBED = 16
FLUX_IMAGE_TOKENS = 4


def load_flux_ip_adapter(pipe: FluxPipeline, *, seed: int = 3) -> FluxPipeline:
    """Give a tiny Flux pipeline (any of its three tasks) a random IP-Adapter, in place, through
    diffusers' own ``load_ip_adapter`` (``FluxIPAdapterMixin``), and return it.

    A CLIP vision encoder with projection (``FLUX_IMAGE_EMBED`` wide, 32x32 pixel input) and its
    image processor become ``pipe.image_encoder`` / ``pipe.feature_extractor``; the adapter's
    weights (an ``ImageProjection`` to ``FLUX_IMAGE_TOKENS`` tokens of T5's width, and the image
    key/value projections of every double-stream block) are drawn here from ``seed``, so nothing
    is downloaded. The pipeline then takes ``ip_adapter_image=`` (a PIL image or a
    ``[1, 3, 32, 32]`` tensor) or ``ip_adapter_image_embeds=[e]`` with ``e`` of shape
    ``[1, 1, FLUX_IMAGE_EMBED]``, and their ``negative_`` forms for true CFG. As in diffusers,
    a Flux pipeline with an IP-Adapter loaded must be given an image (or embeddings) on every call.
    """
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=37,
            projection_dim=FLUX_IMAGE_EMBED,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        )
    ).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    pipe.register_modules(image_encoder=encoder, feature_extractor=processor)

    transformer = pipe.transformer
    text_width = transformer.config.joint_attention_dim
    generator = torch.Generator().manual_seed(seed)
    image_proj = {  # diffusers' loader reads the number of tokens from proj.weight: 4 unless 65536 rows
        "proj.weight": torch.randn(text_width * FLUX_IMAGE_TOKENS, FLUX_IMAGE_EMBED, generator=generator) * 0.2,
        "proj.bias": torch.randn(text_width * FLUX_IMAGE_TOKENS, generator=generator) * 0.2,
        "norm.weight": torch.ones(text_width),
        "norm.bias": torch.zeros(text_width),
    }
    attention = {}
    inner = transformer.inner_dim
    for block in range(len(transformer.transformer_blocks)):
        for which in ("to_k_ip", "to_v_ip"):
            attention[f"{block}.{which}.weight"] = torch.randn(inner, text_width, generator=generator) * 0.3
            attention[f"{block}.{which}.bias"] = torch.randn(inner, generator=generator) * 0.3
    pipe.load_ip_adapter(
        {"image_proj": image_proj, "ip_adapter": attention}, weight_name="ip_adapter.bin", low_cpu_mem_usage=False
    )
    return pipe


def _model_config(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def sd3_controlnet(
    transformer: SD3Transformer2DModel,
    *,
    seed: int = 1,
    text: bool = True,
    zero_pooled: bool = False,
    extra_conditioning_channels: int = 0,
):
    """A tiny random ``SD3ControlNetModel`` (one block) for ``transformer`` (built with
    ``sd3_components(layers=2)``: the transformer's last block reads no residual).

    ``text=False`` is an SD3.5 ControlNet (no ``joint_attention_dim``: the pipeline gives it no
    ``encoder_hidden_states``); ``zero_pooled=True`` an InstantX one
    (``force_zeros_for_pooled_projection``: it reads zeros as its pooled projection);
    ``extra_conditioning_channels=1`` the inpainting one (control latents and mask). Parameters
    that start at zero get small random values, so that its residuals matter.
    """
    from diffusers import SD3ControlNetModel

    from .tiny import _randomize_zeros

    torch.manual_seed(seed)
    config = {
        **_model_config(transformer),
        "num_layers": 1,
        "force_zeros_for_pooled_projection": zero_pooled,
        "extra_conditioning_channels": extra_conditioning_channels,
    }
    if not text:
        config["joint_attention_dim"] = None
    return _randomize_zeros(SD3ControlNetModel(**config), seed).eval()


def flux_controlnet(transformer: FluxTransformer2DModel, *, seed: int = 1, num_mode: int | None = None):
    """A tiny random ``FluxControlNetModel`` (one double and one single block) for ``transformer``;
    ``num_mode`` makes it a union ControlNet (the pipeline's ``control_mode`` picks one of them).
    Parameters that start at zero get small random values, so that its residuals matter."""
    from diffusers import FluxControlNetModel

    from .tiny import _randomize_zeros

    torch.manual_seed(seed)
    config = _model_config(transformer)
    config.pop("out_channels", None)
    net = FluxControlNetModel(**{**config, "num_layers": 1, "num_single_layers": 1, "num_mode": num_mode})
    return _randomize_zeros(net, seed).eval()
