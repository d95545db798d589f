"""The toy model's components, from configs: what `train` builds and trains from scratch.

A real Stable Diffusion 1.x layout, only small: an `AutoencoderKL` that maps a 64x64 RGB image
to 16x16x4 latents, a `UNet2DConditionModel` (block channels 32/64/128, cross-attention at 8x8 and 4x4), a 3-layer,
128-wide `CLIPTextModel` over a word-level `CLIPTokenizer` (one token per word of
:data:`neutral_lang.toy.world.VOCABULARY`; other words fall back to bytes) with a context of 24
tokens instead of CLIP's 77 (a caption needs at most 17; the cost of every text encoding and
cross-attention drops threefold) and a DDIM scheduler with SD 1.x's settings. Building them needs torch, diffusers and transformers; nothing is
downloaded.
"""

from __future__ import annotations

from . import world

TEXT_HIDDEN = 128  # width of the text encoder = the UNet's cross-attention dimension
MAX_TOKENS = 24  # captions need at most 17 (BOS, 15 words, EOS); the runner chunks longer prompts by it
LATENT_SIZE = world.SIZE // 4

#: SD 1.x's noise schedule, shared by the training noise scheduler and the sampling DDIM scheduler.
NOISE_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def tokenizer():
    """A `CLIPTokenizer` with one token per vocabulary word (and byte fall-back for others).

    Byte-level BPE as CLIP's: ids are the 256 bytes, the bytes with CLIP's ``</w>`` word end, one
    id per merge, then BOS and EOS. The merges are chosen by replaying BPE itself: for each word,
    apply the merges so far by rank; while more than one piece is left, append a merge of the
    first two pieces. A new merge ranks after every earlier one, so it only ever fires where no
    earlier merge applies, and every earlier word still ends as one token.
    """
    from transformers import CLIPTokenizer

    from ..backends.diffusers.tiny import BOS, EOS, _byte_alphabet

    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    for c in alphabet:
        vocab[c + "</w>"] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in world.VOCABULARY:
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(ranks)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = _bpe(pieces, ranks)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    merges = sorted(ranks, key=ranks.get)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS, pad_token=EOS)


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the lowest-ranked adjacent pair until none applies."""
    while len(pieces) > 1:
        pairs = [(ranks[p], i) for i, p in enumerate(zip(pieces, pieces[1:])) if p in ranks]
        if not pairs:
            break
        best = pieces[min(pairs)[1]], pieces[min(pairs)[1] + 1]
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def text_encoder(tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ))


def vae():
    """64x64x3 -> 16x16x4 (two downsamplings); ``scaling_factor`` is set by training."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=world.SIZE,
    )


def unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        # cross-attention at 8x8 and 4x4 only: at 16x16 it doubled the cost of a training step
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def scheduler():
    """DDIM with SD 1.x's settings: what the shipped pipeline samples with."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def noise_scheduler():
    """The forward process the UNet is trained on (same betas as :func:`scheduler`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**NOISE_SCHEDULE)
