"""T5 text encoding with A1111 emphasis, for the transformer families (SD3, Flux.1, PixArt-Sigma, AuraFlow).

A T5 encoder reads one sequence of up to ``max_sequence_length`` tokens; there are no 75-token
chunks and no ``BREAK`` windows (both belong to CLIP). A leaf's text reaches T5 as the pipeline's
own ``encode_prompt`` sends it, so that a text without emphasis gives the pipeline's embedding
exactly:

1. ``neutral_lang.emphasis.parse`` splits the text into ``(fragment, weight)`` runs; the
   fragments are joined back into the text T5 reads (a ``BREAK`` becomes a space), and each
   character remembers the weight of its run. ``emphasis="none"`` skips the parse: brackets are
   literal text.
2. The family's text preprocessing runs on that text (PixArt-Sigma lower-cases and strips it).
3. The text is tokenized *once*, as the pipeline does (``</s>`` appended, padded with
   ``<pad>`` to ``max_sequence_length``, truncated beyond it with a warning naming the lost
   text); each token takes the weight of the character it starts at (``</s>`` and padding: 1).
   Tokenizing the whole text rather than each fragment keeps sentencepiece's word-start markers
   where the plain text has them, so ``a (castle:1.2)`` has the tokens of ``a castle``.
4. The encoder runs on the ids (with the attention mask where the pipeline passes one); where the
   pipeline zeroes the padding positions (AuraFlow), so does this.
5. Emphasis weights the encoder's *output* vectors, token by token (the practice of A1111 forks
   and diffusers prompt-weighting libraries for T5):

   - ``"original"``: ``z'_i = z_i * w_i * mean(z) / mean(z * w)``, the means over the text's own
     tokens (attention mask 1: the words and ``</s>``), padding untouched, so emphasis
     reweights tokens without moving the text's mean and never depends on
     ``max_sequence_length``. When ``mean(z * w)`` is 0 (the ratio or the result would not be
     finite) the restoration is skipped with an ``EmphasisWarning`` and the result is the
     ``"no_norm"`` one, as for CLIP chunks (:mod:`.text_encoding`);
   - ``"no_norm"``: ``z'_i = z_i * w_i``;
   - ``"ignore"``: brackets parsed away, weights not applied; ``"none"``: no parsing.

Weights of 1 everywhere leave the output untouched (bit for bit), which is what the identity law
needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from neutral_lang import emphasis as _emphasis

from .adapters import TextOptions
from .text_encoding import EMPHASIS_MODES, Conditioning, EmphasisWarning, PromptEncoder, _lora_scaled

__all__ = [
    "ClipReading",
    "FluxTextEncoder",
    "SD3TextEncoder",
    "T5Encoding",
    "T5OnlyTextEncoder",
    "T5TextEncoder",
    "weighted_text",
]


@dataclass(frozen=True)
class T5Encoding:
    """A leaf text through T5: ``hidden`` ``[L, D]`` and ``mask`` ``[L]`` (bool, True = a text token
    or ``</s>``), ``L`` = ``max_sequence_length``."""

    hidden: torch.Tensor
    mask: torch.Tensor


def weighted_text(
    text: str,
    emphasis: str = "original",
    *,
    lower_strip: bool = False,
    convert: Callable[[str], str] | None = None,
) -> tuple[str, list[float]]:
    """The text T5 reads for the leaf ``text`` and one emphasis weight per character of it.

    ``convert`` rewrites each run first (the pipeline's ``maybe_convert_prompt``: a multi-vector
    textual-inversion token ``<t>`` becomes ``<t> <t>_1 ...``); ``lower_strip`` is PixArt's
    preprocessing (``text.lower().strip()``). Both work run by run, so each character keeps its
    run's weight (a run that changes length keeps its weight over the new run).
    """
    if emphasis == "none":
        runs = [(text, 1.0)]
    else:
        runs = [(" ", 1.0) if run == _emphasis.BREAK else run for run in _emphasis.parse(text)]
    if emphasis == "ignore":
        runs = [(fragment, 1.0) for fragment, _ in runs]
    pieces, weights = [], []
    for fragment, weight in runs:
        if convert is not None and fragment.strip():
            fragment = convert(fragment)
        if lower_strip:
            fragment = fragment.lower()
        pieces.append(fragment)
        weights.extend([weight] * len(fragment))
    joined = "".join(pieces)
    if lower_strip:
        start = len(joined) - len(joined.lstrip())
        end = len(joined.rstrip())
        joined, weights = joined[start:end], weights[start:end]
    return joined, weights


class T5TextEncoder:
    """Encodes leaf texts with one pipeline's T5 (``tokenizer``, ``text_encoder``).

    ``max_length`` is the pipeline's ``max_sequence_length``; ``pass_mask`` says whether the
    pipeline gives the attention mask to the encoder (PixArt, AuraFlow) or not (SD3, Flux);
    ``zero_padding`` whether it multiplies the output by the mask (AuraFlow); ``lower_strip``
    whether it lower-cases and strips the text first (PixArt-Sigma without caption cleaning);
    ``convert`` is the pipeline's textual-inversion rewrite for this tokenizer (Flux). Results are
    cached per text; the encoding of a text never depends on what else was encoded.
    """

    def __init__(
        self,
        tokenizer,
        text_encoder,
        *,
        max_length: int,
        device,
        emphasis: str = "original",
        pass_mask: bool = False,
        zero_padding: bool = False,
        lower_strip: bool = False,
        lora_scale: float | None = None,
        convert: Callable[[str], str] | None = None,
    ):
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Expected emphasis to be one of {EMPHASIS_MODES}, but got {emphasis!r}.")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"The T5 tokenizer {type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; "
                "emphasis needs its character offsets. Load the pipeline with a fast T5 tokenizer."
            )
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = int(max_length)
        self.device = device
        self.emphasis = emphasis
        self.pass_mask = pass_mask
        self.zero_padding = zero_padding
        self.lower_strip = lower_strip
        self.lora_scale = lora_scale
        self.convert = convert
        self._cache: dict[str, T5Encoding] = {}

    def encode(self, text: str) -> T5Encoding:
        """The T5 encoding of the leaf ``text``; see the module docstring."""
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = self._encode(text)
        return cached

    def tokenize(self, text: str) -> tuple[list[int], list[int], list[float]]:
        """``(input_ids, attention_mask, weights)`` of ``text``, each ``max_length`` long."""
        plain, char_weights = weighted_text(text, self.emphasis, lower_strip=self.lower_strip, convert=self.convert)
        encoded = self.tokenizer(
            plain,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_overflowing_tokens=False,
        )
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        weights = [
            1.0 if special or start >= len(char_weights) else char_weights[start]
            for (start, _), special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"])
        ]
        self._warn_truncated(plain, encoded["offset_mapping"])
        return ids, mask, weights

    def _warn_truncated(self, plain: str, offsets) -> None:
        end = max((stop for _, stop in offsets), default=0)
        if plain[end:].strip():
            warnings.warn(
                f"T5 reads at most {self.max_length} tokens (max_sequence_length); the end of the text "
                f"was cut off, as the pipeline itself would: {plain[end:].strip()!r}",
                stacklevel=4,
            )

    @torch.no_grad()
    def _encode(self, text: str) -> T5Encoding:
        ids, mask, weights = self.tokenize(text)
        ids_t = torch.tensor([ids], device=self.device)
        mask_t = torch.tensor([mask], device=self.device)
        with _lora_scaled(self.text_encoder, self.lora_scale):
            if self.pass_mask:
                hidden = self.text_encoder(ids_t, attention_mask=mask_t)[0][0]
            else:
                hidden = self.text_encoder(ids_t)[0][0]
        if self.zero_padding:
            hidden = hidden * mask_t[0, :, None].to(hidden.dtype)
        if self.emphasis in ("original", "no_norm"):
            hidden = self._emphasize(hidden, weights, mask_t[0].bool(), text)
        return T5Encoding(hidden, mask_t[0].bool())

    def _emphasize(self, z: torch.Tensor, weights: list[float], mask: torch.Tensor, text: str) -> torch.Tensor:
        """Weight ``z`` ``[L, D]`` token by token; "original" restores the mean over ``mask``."""
        if all(w == 1.0 for w in weights):
            return z  # weights of 1 leave the pipeline's embedding exactly as it is
        w = torch.tensor(weights, dtype=torch.float32, device=z.device)[:, None]
        z32 = z.float()
        weighted = z32 * w
        if self.emphasis == "original":
            ratio = z32[mask].mean() / weighted[mask].mean()
            if not bool(torch.isfinite(ratio) & torch.isfinite(weighted * ratio).all()):
                warnings.warn(
                    f"Emphasis in {text!r}: the weighted T5 embedding has mean zero, so the mean "
                    "restoration would divide by zero; the weights are applied without it.",
                    EmphasisWarning,
                    stacklevel=5,
                )
            else:
                weighted = torch.where(mask[:, None], weighted * ratio, weighted)
        return weighted.to(z.dtype)


# -- the families' combinations of CLIP and T5 --------------------------------------------------


@dataclass(frozen=True)
class ClipReading:
    """Which output of one CLIP encoder a family reads, in the form
    :class:`~.text_encoding.PromptEncoder` asks its ``family`` for (``clip_pairs``,
    ``hidden_layer``, ``pooled_output``).

    ``tokenizer``/``encoder`` name the pipeline's attributes; ``pooled`` the pooled output's
    attribute (``"text_embeds"``: the projection of ``CLIPTextModelWithProjection``,
    ``"pooler_output"``: ``CLIPTextModel``'s EOS vector). Hidden states: the penultimate layer, or
    with ``clip_skip=k`` layer ``-(k + 2)``, as SD3's and SDXL's ``encode_prompt``.
    """

    tokenizer: str
    encoder: str
    pooled: str

    def clip_pairs(self, pipe):
        return [(getattr(pipe, self.tokenizer), getattr(pipe, self.encoder))]

    def hidden_layer(self, encoder, out, clip_skip):
        return out.hidden_states[-((clip_skip or 0) + 2)]

    def pooled_output(self, out):
        return getattr(out, self.pooled)


def _clip(pipe, reading: ClipReading, options: TextOptions, clip_skip: int | None) -> PromptEncoder | None:
    if getattr(pipe, reading.tokenizer, None) is None or getattr(pipe, reading.encoder, None) is None:
        return None
    return PromptEncoder(
        pipe,
        family=reading,
        emphasis=options.emphasis,
        clip_skip=clip_skip,
        comma_backtrack=options.comma_backtrack,
        lora_scale=options.lora_scale,
    )


class SD3TextEncoder:
    """SD3/SD3.5's three encoders: CLIP-L and CLIP-G (A1111's chunks and emphasis, penultimate
    layers, concatenated on the feature axis and zero-padded to the joint attention width), then
    T5's sequence; the pooled embedding is both CLIPs' projections of the first chunk, concatenated.

    ``hidden`` is ``[77 * chunks + max_sequence_length, joint_attention_dim]``, in the pipeline's
    order (CLIP first). Without ``text_encoder_3`` the T5 part is zeros, as the pipeline makes it.
    Conditionings with more CLIP chunks than others are lengthened by the runner by repeating their
    last vector (A1111's ``stack_conds``, which on its own SD3 conditionings also repeats the last
    T5 vector). ``clip_skip`` applies to the prompt's texts only: the pipeline encodes its
    negative prompt without it.
    """

    def __init__(self, pipe, options: TextOptions, max_sequence_length: int):
        readings = (
            ClipReading("tokenizer", "text_encoder", "text_embeds"),
            ClipReading("tokenizer_2", "text_encoder_2", "text_embeds"),
        )
        self.clips = [_clip(pipe, reading, options, options.clip_skip) for reading in readings]
        if any(c is None for c in self.clips):
            raise ValueError(f"{type(pipe).__name__} needs both CLIP text encoders (text_encoder, text_encoder_2).")
        self.negative_clips = self.clips
        if options.clip_skip is not None:
            self.negative_clips = [_clip(pipe, reading, options, None) for reading in readings]
        self.width = pipe.transformer.config.joint_attention_dim
        self.length = int(max_sequence_length)
        self.t5 = None
        if getattr(pipe, "text_encoder_3", None) is not None:
            self.t5 = T5TextEncoder(
                pipe.tokenizer_3,
                pipe.text_encoder_3,
                max_length=self.length,
                device=pipe._execution_device,
                emphasis=options.emphasis,
            )
        self.dtype = pipe.text_encoder.dtype
        self._cache: dict[str, Conditioning] = {}
        self._negative_cache: dict[str, Conditioning] = {}

    def encode(self, text: str) -> Conditioning:
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = self._encode(text, self.clips)
        return cached

    def encode_negative(self, text: str) -> Conditioning:
        """A negative prompt's conditioning: SD3's ``encode_prompt`` reads it without ``clip_skip``."""
        if self.negative_clips is self.clips:
            return self.encode(text)
        cached = self._negative_cache.get(text)
        if cached is None:
            cached = self._negative_cache[text] = self._encode(text, self.negative_clips)
        return cached

    def _encode(self, text: str, clips) -> Conditioning:
        first, second = (clip.encode(text) for clip in clips)
        if first.hidden.shape[0] != second.hidden.shape[0]:
            raise ValueError(
                f"The CLIP text encoders split {text!r} into different numbers of chunks; "
                "their tokenizers must share one vocabulary."
            )
        clip = torch.cat([first.hidden, second.hidden], dim=-1)
        clip = torch.nn.functional.pad(clip, (0, self.width - clip.shape[-1]))
        if self.t5 is None:
            t5 = clip.new_zeros((self.length, self.width), dtype=self.dtype)
        else:
            t5 = self.t5.encode(text).hidden
        return Conditioning(torch.cat([clip, t5.to(clip.dtype)]), torch.cat([first.pooled, second.pooled]))

    def zeros(self) -> Conditioning:
        empty = self.encode("")
        return Conditioning(torch.zeros_like(empty.hidden), torch.zeros_like(empty.pooled))


def _textual_inversion(pipe, tokenizer) -> Callable[[str], str] | None:
    """The pipeline's rewrite of multi-vector textual-inversion tokens for ``tokenizer``, or None
    (diffusers' ``TextualInversionLoaderMixin.maybe_convert_prompt``, which Flux applies to T5)."""
    convert = getattr(pipe, "maybe_convert_prompt", None)
    if convert is None:
        return None
    return lambda text: convert(text, tokenizer)


class FluxTextEncoder:
    """Flux.1's two encoders: T5's sequence (``encoder_hidden_states``) and CLIP's pooled output
    (``pooled_projections``, from the first 75-token chunk, never emphasised: the pooled vector
    is the EOS token's, as in SDXL). CLIP's hidden states are not read by Flux."""

    def __init__(self, pipe, options: TextOptions, max_sequence_length: int):
        self.clip = _clip(pipe, ClipReading("tokenizer", "text_encoder", "pooler_output"), options, None)
        if self.clip is None or getattr(pipe, "text_encoder_2", None) is None:
            raise ValueError(f"{type(pipe).__name__} needs its CLIP and T5 text encoders.")
        self.t5 = T5TextEncoder(
            pipe.tokenizer_2,
            pipe.text_encoder_2,
            max_length=max_sequence_length,
            device=pipe._execution_device,
            emphasis=options.emphasis,
            lora_scale=options.lora_scale,
            convert=_textual_inversion(pipe, pipe.tokenizer_2),
        )
        self._cache: dict[str, Conditioning] = {}

    def encode(self, text: str) -> Conditioning:
        cached = self._cache.get(text)
        if cached is None:
            pooled = self.clip.encode(text).pooled
            cached = self._cache[text] = Conditioning(self.t5.encode(text).hidden, pooled)
        return cached

    def zeros(self) -> Conditioning:
        empty = self.encode("")
        return Conditioning(torch.zeros_like(empty.hidden), torch.zeros_like(empty.pooled))


class T5OnlyTextEncoder:
    """PixArt-Sigma's and AuraFlow's one T5: ``hidden`` ``[max_sequence_length, D]`` and, with
    ``keep_mask``, the text's attention ``mask`` ``[max_sequence_length]`` (the transformer's
    ``encoder_attention_mask`` in PixArt; AuraFlow zeroes the padding instead and has no mask)."""

    def __init__(self, t5: T5TextEncoder, *, keep_mask: bool = True):
        self.t5 = t5
        self.keep_mask = keep_mask
        self._cache: dict[str, Conditioning] = {}

    def encode(self, text: str) -> Conditioning:
        cached = self._cache.get(text)
        if cached is None:
            encoded = self.t5.encode(text)
            mask = encoded.mask if self.keep_mask else None
            cached = self._cache[text] = Conditioning(encoded.hidden, None, mask)
        return cached

    def zeros(self) -> Conditioning:
        empty = self.encode("")
        return Conditioning(torch.zeros_like(empty.hidden), None, empty.mask)  # no such rule in these pipelines
