"""Tiny random-weight Stable Diffusion pipelines, built offline: the test suite's pipelines and
the demo's *embedded default*. Random weights: they exercise the machinery, they draw nothing.

Every component is made from a small config with a fixed seed, so two calls build identical
pipelines and nothing is downloaded. The tokenizer is a real `CLIPTokenizer` (byte-level BPE with
CLIP's `</w>` word ends) over a small vocabulary: every byte is a token, and the words in `WORDS`
get whole-word tokens through a chain of merges, so `"a castle, glasses"` is four tokens
(`a`, `castle`, `,`, `glasses`) while unknown words fall back to one token per character.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that become single tokens; everything else is spelled out byte by byte.
WORDS = (
    "a", "an", "the", "of", "with", "and", "in", "on", "x", "y", "cat", "dog", "castle", "glasses",
    "smile", "beautiful", "landscape", "monster", "house", "photo", "red", "blue", "green", "tree",
    "forest", "city", "sunset", "hair", "style", "best", "quality", "masterpiece", "break",
)

TEXT_HIDDEN = 32  # hidden size of every tiny text encoder
IMAGE_SIZE = 32  # default height/width in pixels (latents are 16x16: the VAE downsamples by 2)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table), in its order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    table = {}
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def make_tokenizer(model_max_length: int = 77, pad_token: str = EOS) -> CLIPTokenizer:
    """A CLIP tokenizer over bytes plus `WORDS`; ids: bytes, bytes + `</w>`, merges, BOS, EOS.

    `pad_token` mimics the two real CLIP tokenizers: SD 1.x pads with the end token, the second
    SDXL tokenizer pads with `"!"` (id 0).
    """
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    for c in alphabet:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces[:2] = [pair[0] + pair[1]]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab, merges=merges, model_max_length=model_max_length, pad_token=pad_token
    )


def clip_text_config(tokenizer: CLIPTokenizer, *, layers: int) -> CLIPTextConfig:
    """The tiny CLIP text encoders' config (hidden size `TEXT_HIDDEN`, 4 heads) for ``tokenizer``."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def make_vae(*, latent_channels: int = 4, **config) -> AutoencoderKL:
    """A two-level VAE in eval mode (pixels / 2 = latents); ``config`` adds to its config
    (``shift_factor``, ``scaling_factor``)."""
    return AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        norm_num_groups=2,
        sample_size=IMAGE_SIZE,
        **config,
    ).eval()


def _unet(family: dict, options: dict | None) -> UNet2DConditionModel:
    """A two-level UNet for 16x16 latents: the shared config, then the family's, then ``options``
    (each overriding the one before)."""
    return UNet2DConditionModel(
        **{
            "sample_size": IMAGE_SIZE // 2,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (8, 16),
            "layers_per_block": 1,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "norm_num_groups": 2,
            **family,
            **(options or {}),
        }
    )


def sd_components(
    *, seed: int = 0, model_max_length: int = 77, text_layers: int = 3, unet_options: dict | None = None
) -> dict:
    """Components for `StableDiffusionPipeline` (DDIM scheduler, no safety checker).

    `unet_options` override the UNet's config: `{"time_cond_proj_dim": 8}` makes an LCM-style UNet
    with a guidance embedding, `T2I_UNET` one whose residual sizes fit :func:`t2i_adapter`.
    """
    torch.manual_seed(seed)
    unet = _unet({"cross_attention_dim": TEXT_HIDDEN, "attention_head_dim": 4}, unet_options)
    vae = make_vae()
    tokenizer = make_tokenizer(model_max_length)
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, layers=text_layers))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(
        unet=unet.eval(),
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def sdxl_components(
    *, seed: int = 0, model_max_length: int = 77, text_layers: int = 3, unet_options: dict | None = None
) -> dict:
    """Components for `StableDiffusionXLPipeline` (Euler scheduler, two text encoders).

    `unet_options` override the UNet's config, as in :func:`sd_components`.
    """
    torch.manual_seed(seed)
    sdxl = {
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": (1, 2),
        "projection_class_embeddings_input_dim": 6 * 8 + TEXT_HIDDEN,
        "cross_attention_dim": 2 * TEXT_HIDDEN,
    }
    unet = _unet(sdxl, unet_options)
    vae = make_vae()
    tokenizer = make_tokenizer(model_max_length)
    tokenizer_2 = make_tokenizer(model_max_length, pad_token="!")
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, layers=text_layers))
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2, layers=text_layers))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return dict(
        unet=unet.eval(),
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )


def quiet(pipe):
    """``pipe`` with its progress bar switched off (returned, for chaining)."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_pipeline(**options) -> StableDiffusionPipeline:
    return quiet(StableDiffusionPipeline(**sd_components(**options)))


def sdxl_pipeline(**options) -> StableDiffusionXLPipeline:
    return quiet(StableDiffusionXLPipeline(**sdxl_components(**options), add_watermarker=False))


# -- add-ons: ControlNet, T2I-Adapter ------------------------------------------------------------


def _randomize_zeros(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give parameters that start at zero small random values.

    ControlNet's output convolutions are zero-initialised (so that training starts from the plain
    UNet): untrained, its residuals are zero and a test could not tell a right batch from a wrong one.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def controlnet(unet: UNet2DConditionModel, *, seed: int = 1):
    """A tiny ControlNet built from ``unet`` (SD or SDXL), with non-zero residuals.

    Its conditioning embedding downsamples by 2, as the tiny VAE does, so it takes a control image
    of the pipeline's size ``[B, 3, IMAGE_SIZE, IMAGE_SIZE]``.
    """
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    return _randomize_zeros(net, seed).eval()


#: UNet options under which :func:`t2i_adapter`'s residuals fit: a T2I-Adapter residual joins a
#: cross-attention down block before its downsampler, a plain one after it.
T2I_UNET = {
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}


def t2i_adapter(*, seed: int = 2):
    """A tiny full T2I-Adapter for a UNet built with `T2I_UNET` (residuals 8 x 16 x 16, 16 x 8 x 8)."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    return T2IAdapter(in_channels=3, channels=[8, 16], num_res_blocks=1, downscale_factor=2).eval()


def load_ip_adapter(unet: UNet2DConditionModel, *, image_embed_dim: int = TEXT_HIDDEN, seed: int = 3) -> None:
    """Give ``unet`` a random IP-Adapter (4 image tokens), in place, as ``load_ip_adapter`` would.

    The pipeline then takes ``ip_adapter_image_embeds=[e]`` with ``e`` of shape ``[2, 1,
    image_embed_dim]`` under CFG (negative first) or ``[1, 1, image_embed_dim]`` without, so no
    image encoder is needed.
    """
    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    tokens = 4
    image_proj = {
        "proj.weight": torch.randn(cross * tokens, image_embed_dim, generator=generator) * 0.2,
        "proj.bias": torch.randn(cross * tokens, generator=generator) * 0.2,
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    attention: dict[str, torch.Tensor] = {}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name[: -len(".processor")]).to_k.out_features
        for which in ("to_k_ip", "to_v_ip"):
            attention[f"{key}.{which}.weight"] = torch.randn(hidden, cross, generator=generator) * 0.3
        key += 2
    unet._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": attention}])
