"""A1111-faithful text encoding for the CLIP text encoders of diffusers pipelines.

A leaf's text reaches the text encoder the way AUTOMATIC1111's ``modules/sd_hijack_clip.py``
sends it, so a prompt written for A1111 draws the same picture here:

1. ``neutral_lang.emphasis.parse`` splits the text into ``(fragment, weight)`` runs:
   ``(x)`` weighs 1.1, ``[x]`` 1/1.1, ``(x:w)`` w; ``BREAK`` is the run ``("BREAK", -1.0)``.
2. Each fragment is tokenized without special tokens and the tokens are packed into chunks of
   ``model_max_length - 2`` (75 for CLIP). ``BREAK`` closes the chunk at once. When a chunk is
   full and a comma lies within the last ``comma_backtrack`` (20) tokens, the tokens after the
   comma move on to the next chunk. Each chunk is wrapped in BOS ... EOS and padded with the
   tokenizer's pad token (EOS for SD 1.x, ``!`` for SD 2.x and SDXL's second encoder).
3. Every chunk goes through the encoder on its own row; the chunks' hidden states are joined
   along the sequence axis (77, 154, ... vectors).
4. Emphasis, per chunk ``z`` of shape ``[77, D]`` with per-token weights ``w``:

   - ``"original"`` (A1111's default): ``z' = z * w * (mean(z) / mean(z * w))``, means over the
     whole chunk, so emphasis reweights tokens without moving the embedding's mean; a chunk whose
     ``mean(z * w)`` is 0 would turn inf/NaN, so it keeps ``z * w`` and an ``EmphasisWarning`` is
     issued (A1111 would draw a black image);
   - ``"no_norm"``: ``z' = z * w``;
   - ``"ignore"``: brackets are parsed (and removed) but weights are not applied;
   - ``"none"``: no parsing at all; brackets are literal text and ``BREAK`` is a word.

   These are A1111's ``Original``, ``No norm``, ``Ignore`` and ``None`` emphasis options.

Hidden states are chosen as diffusers chooses them for ``clip_skip``: SD's last layer (after the
final layer norm) or, with ``clip_skip=k``, the output of layer ``-(k+1)`` passed through the final
layer norm (A1111's "Clip skip" ``k+1``); SDXL's penultimate layer without the norm or, with
``clip_skip=k``, layer ``-(k+2)``. As in diffusers, ``clip_skip`` applies to the prompt only: a
negative prompt is read at the default layer (``PromptEncoder.encode_negative``). SDXL encodes
with both encoders and concatenates their hidden states on the feature axis; its pooled
embedding is the second encoder's projected output for the first chunk (emphasis never touches
it), as in A1111.

Which encoders and layers a pipeline has is its family adapter's answer (``clip_pairs``,
``hidden_layer``, ``pooled_output``; :mod:`.stable_diffusion`). Multi-vector textual-inversion
tokens are expanded and the text-encoder LoRA scale applied as the pipeline's ``encode_prompt``
does (see :class:`PromptEncoder`).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch

from neutral_lang import emphasis as _emphasis

__all__ = [
    "EMPHASIS_MODES",
    "Chunk",
    "Conditioning",
    "EmphasisWarning",
    "PromptEncoder",
    "chunk_tokens",
    "extend",
]

EMPHASIS_MODES = ("original", "no_norm", "ignore", "none")
COMMA_BACKTRACK = 20  # A1111's default for opts.comma_padding_backtrack


@dataclass(frozen=True)
class Chunk:
    """One encoder window: ``model_max_length`` token ids and their emphasis weights."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Conditioning:
    """A leaf text, encoded: ``hidden`` is ``[n_chunks * model_max_length, D]``.

    ``pooled`` is ``[D_pooled]`` for pipelines with added text embeddings (SDXL), else None.
    ``mask`` is ``[L]`` (bool, True = attend) for encoders whose padding the denoiser must not
    attend to (T5 in PixArt-Sigma), else None.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def chunk_tokens(
    runs: Sequence[tuple[Sequence[int] | None, float]],
    *,
    length: int,
    bos: int,
    eos: int,
    pad: int,
    comma: int | None,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """Pack weighted token runs into chunks of ``length`` content tokens, as A1111 does.

    ``runs`` holds ``(token_ids, weight)`` per emphasis run; ``token_ids=None`` is a ``BREAK``.
    Each chunk comes out as ``[bos] + content + [eos] + [pad] * (length - len(content))`` with
    weight 1 on the special tokens. A text with no tokens still gives one (empty) chunk.
    """
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal tokens, weights, last_comma
        fill = length - len(tokens)
        chunks.append(
            Chunk(
                tuple([bos, *tokens, eos] + [pad] * fill),
                tuple([1.0, *weights, 1.0] + [1.0] * fill),
            )
        )
        tokens, weights, last_comma = [], [], -1

    for ids, weight in runs:
        if ids is None:
            close()
            continue
        for token in ids:
            if token == comma:
                last_comma = len(tokens)
            elif (
                comma_backtrack
                and len(tokens) == length
                and last_comma != -1
                and len(tokens) - last_comma <= comma_backtrack
            ):
                # A full chunk with a comma near its end: what follows the comma starts the next.
                cut = last_comma + 1
                moved = tokens[cut:], weights[cut:]
                del tokens[cut:], weights[cut:]
                close()
                tokens, weights = list(moved[0]), list(moved[1])
            if len(tokens) == length:
                close()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def extend(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """``hidden`` ``[L, D]`` padded to ``length`` vectors by repeating its last vector.

    This is how A1111's ``stack_conds`` batches conditionings with different numbers of chunks.
    """
    missing = length - hidden.shape[0]
    if missing <= 0:
        return hidden
    return torch.cat([hidden, hidden[-1:].expand(missing, -1)])


class PromptEncoder:
    """Encodes texts for one pipeline, A1111's way, remembering each text it has encoded.

    ``family`` is the pipeline's :class:`~.adapters.FamilyAdapter` (found with ``adapter_for`` when
    not given); it names the CLIP tokenizer/encoder pairs (``clip_pairs``), the hidden layer to take
    (``hidden_layer``) and the pooled output (``pooled_output``, None for SD 1.x/2.x). The result
    of ``encode(text)`` depends on the text alone, never on what else was encoded, so each text
    runs through the encoders on its own.

    As the pipeline's own ``encode_prompt`` does: a multi-vector textual-inversion token ``<t>``
    becomes ``<t> <t>_1 ...`` (``pipe.maybe_convert_prompt``, per tokenizer), and ``lora_scale``
    scales the text encoders' LoRA layers (PEFT's ``scale_lora_layers``) while a text is encoded,
    and is undone afterwards, also on error.
    """

    def __init__(
        self,
        pipe,
        *,
        family=None,
        emphasis: str = "original",
        clip_skip: int | None = None,
        comma_backtrack: int = COMMA_BACKTRACK,
        lora_scale: float | None = None,
    ):
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Expected emphasis to be one of {EMPHASIS_MODES}, but got {emphasis!r}.")
        if clip_skip is not None and (not isinstance(clip_skip, int) or clip_skip < 0):
            raise ValueError(f"Expected clip_skip to be None or an integer >= 0, but got {clip_skip!r}.")
        if family is None:
            from .adapters import adapter_for

            family = adapter_for(pipe)
        self.family = family
        self.emphasis = emphasis
        self.clip_skip = clip_skip
        self.comma_backtrack = comma_backtrack
        self.lora_scale = lora_scale
        self.pairs = [(tok, enc) for tok, enc in family.clip_pairs(pipe) if tok is not None and enc is not None]
        if not self.pairs:
            raise ValueError(f"{type(pipe).__name__} has no tokenizer and text encoder to encode prompts with.")
        self.convert = getattr(pipe, "maybe_convert_prompt", None)  # TextualInversionLoaderMixin
        self.device = pipe._execution_device
        self._commas: dict[int, int | None] = {}  # id(tokenizer) -> id of ",</w>" (get_vocab is slow)
        self._cache: dict[str, Conditioning] = {}
        self._negative_cache: dict[str, Conditioning] = {}
        self._zeros: Conditioning | None = None

    def encode(self, text: str) -> Conditioning:
        """The conditioning for ``text`` (a leaf text in A1111's sub-language)."""
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = self._encode(text, self.clip_skip)
        return cached

    def encode_negative(self, text: str) -> Conditioning:
        """The conditioning for a negative prompt ``text``: as :meth:`encode`, without ``clip_skip``.

        diffusers' SD and SDXL ``encode_prompt`` apply ``clip_skip`` to the prompt only; the
        negative prompt always reads the default layer (SD: the last, after the final norm; SDXL:
        the penultimate). A1111 skips on both; we follow the pipeline (the identity law, see
        ``docs/diffusers.md``). Emphasis applies as in :meth:`encode`.
        """
        if self.clip_skip is None:
            return self.encode(text)
        cached = self._negative_cache.get(text)
        if cached is None:
            cached = self._negative_cache[text] = self._encode(text, None)
        return cached

    def zeros(self) -> Conditioning:
        """An all-zero conditioning of one chunk: SDXL's uncond for an absent negative prompt."""
        if self._zeros is None:
            empty = self.encode("")
            pooled = None if empty.pooled is None else torch.zeros_like(empty.pooled)
            self._zeros = Conditioning(torch.zeros_like(empty.hidden), pooled)
        return self._zeros

    def tokenize(self, text: str, tokenizer) -> list[Chunk]:
        """``text`` as A1111's chunks for ``tokenizer``."""
        if self.emphasis == "none":
            parsed = [(text, 1.0)]
        else:
            parsed = _emphasis.parse(text)
        fragments = [fragment for fragment, _ in parsed]
        if self.convert is not None and getattr(tokenizer, "added_tokens_encoder", None):
            fragments = [self.convert(fragment, tokenizer) for fragment in fragments]
        ids = tokenizer(fragments, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        runs = [
            (None if (fragment, weight) == _emphasis.BREAK else token_ids, weight)
            for token_ids, (fragment, weight) in zip(ids, parsed)
        ]
        return chunk_tokens(
            runs,
            length=tokenizer.model_max_length - 2,
            bos=tokenizer.bos_token_id,
            eos=tokenizer.eos_token_id,
            pad=tokenizer.pad_token_id,
            comma=self._comma(tokenizer),
            comma_backtrack=self.comma_backtrack,
        )

    def _comma(self, tokenizer) -> int | None:
        key = id(tokenizer)
        if key not in self._commas:
            self._commas[key] = tokenizer.get_vocab().get(",</w>")
        return self._commas[key]

    @torch.no_grad()
    def _encode(self, text: str, clip_skip: int | None) -> Conditioning:
        hidden, pooled = [], None
        for tokenizer, encoder in self.pairs:
            chunks = self.tokenize(text, tokenizer)
            ids = torch.tensor([c.tokens for c in chunks], device=self.device)
            with _lora_scaled(encoder, self.lora_scale):
                out = encoder(ids, output_hidden_states=True)
            z = self.family.hidden_layer(encoder, out, clip_skip)
            if self.emphasis in ("original", "no_norm"):
                z = self._emphasize(z, [c.weights for c in chunks], text)
            hidden.append(z.reshape(-1, z.shape[-1]))
            first = self.family.pooled_output(out)
            if first is not None:
                pooled = first[0]  # the last encoder's, from the first chunk
        if len({h.shape[0] for h in hidden}) > 1:
            raise ValueError(
                f"The text encoders split {text!r} into different numbers of chunks; "
                "their tokenizers must share one vocabulary."
            )
        return Conditioning(torch.cat(hidden, dim=-1), pooled)

    def _emphasize(self, z: torch.Tensor, weights: list[tuple[float, ...]], text: str = "") -> torch.Tensor:
        """Apply per-token weights to ``z`` ``[chunks, L, D]``; see the module docstring.

        In ``"original"`` mode a chunk whose weighted mean is zero (or whose ratio of means is not
        finite) keeps ``z * w`` without the mean restoration, with a :class:`EmphasisWarning`:
        dividing by that mean would make the embedding inf or NaN.
        """
        if all(w == 1.0 for ws in weights for w in ws):
            return z  # z * 1 * (m / m) is z exactly; skip the work
        w = torch.tensor(weights, dtype=torch.float32, device=z.device)[..., None]
        z32 = z.float()
        weighted = z32 * w
        if self.emphasis == "original":
            # Means over the whole chunk, as A1111 (which sends one text, one chunk at a time).
            ratio = z32.mean(dim=(1, 2), keepdim=True) / weighted.mean(dim=(1, 2), keepdim=True)
            finite = torch.isfinite(ratio) & torch.isfinite(weighted * ratio).all(dim=(1, 2), keepdim=True)
            if not bool(finite.all()):
                warnings.warn(
                    f"Emphasis in {text!r}: the weighted embedding of a chunk has mean zero, so A1111's "
                    "mean restoration would divide by zero; that chunk keeps its weights without it.",
                    EmphasisWarning,
                    stacklevel=4,
                )
                ratio = torch.where(finite, ratio, torch.ones_like(ratio))
            weighted = weighted * ratio
        return weighted.to(z.dtype)


class EmphasisWarning(UserWarning):
    """A1111's emphasis mean restoration was skipped for a chunk (it would have divided by zero)."""


@contextmanager
def _lora_scaled(encoder, scale: float | None):
    """``encoder``'s LoRA layers scaled by ``scale`` inside the block, as diffusers' ``encode_prompt``."""
    if scale is None or scale == 1.0:
        yield
        return
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        yield  # without PEFT diffusers cannot load text-encoder LoRA at all
        return
    from diffusers.utils import scale_lora_layers, unscale_lora_layers

    scale_lora_layers(encoder, scale)
    try:
        yield
    finally:
        unscale_lora_layers(encoder, scale)
