"""Model-family adapters: everything the runner needs to know about one kind of diffusers pipeline.

``runner.run`` is family-blind. It asks :func:`adapter_for` for the pipeline's adapter *before any
work* (no text is encoded, no hook is placed, the pipeline is not called), and from then on every
family-specific decision is a question to that adapter. An unsupported pipeline, or a feature the
family cannot honour (``pag_scale > 0``, a ``callback_on_step_end`` that edits the prompt, ...), is
refused there with :class:`UnsupportedPipelineError` or :class:`UnsupportedFeatureError`, naming
what is supported.

The interface (implement it by subclassing :class:`FamilyAdapter` and decorating the class with
:func:`register`; the first registered adapter whose :meth:`~FamilyAdapter.matches` accepts the
pipeline wins, so register specific families before general ones):

``name``
    A short family name for messages and the support table (``"Stable Diffusion 1.x/2.x"``).
``pipelines``
    Names of the diffusers pipeline classes this adapter is tested with. ``matches`` accepts
    instances of these classes and of their subclasses.
``matches(pipe) -> bool``
    Whether this adapter drives ``pipe``.
``check(pipe, kwargs)``
    Raise :class:`UnsupportedFeatureError` for anything in the pipeline's call arguments (or its
    components) that this family cannot honour. Runs before any encoding.
``denoiser(pipe) -> torch.nn.Module``
    The module the pipeline's loop calls once per step (or once per CFG branch) with the batch the
    guidance replaces: ``pipe.unet`` or ``pipe.transformer``.
``side_modules(pipe) -> tuple[torch.nn.Module, ...]``
    Modules the loop calls inside the same step whose inputs are per sample and text-dependent
    (ControlNet, MultiControlNet). The runner hooks them too, so that they see exactly the
    denoiser's expanded batch, and hands their outputs to the denoiser in place of the ones the
    pipeline computed for its own batch (``residual_inputs``).
``residual_inputs``
    Names of the denoiser's inputs that carry a side module's outputs
    (``down_block_additional_residuals``, ``mid_block_additional_residual``; SD3's
    ``block_controlnet_hidden_states``; Flux's ``controlnet_block_samples``,
    ``controlnet_single_block_samples``), in the order the side module returns them. Under
    per-branch CFG each branch's call gets its rows' residuals.
``sample_input``
    The name of the denoiser's noisy-latents input (``"sample"``, ``"hidden_states"``): its batch
    size tells the runner which rows the pipeline sent.
``cfg_batching``
    ``"joint"``: the loop calls the denoiser once per step with ``[uncond, cond]`` under CFG, or
    ``[cond]`` without. ``"per_branch"``: under CFG it calls the denoiser twice per step, the cond
    batch first, then the uncond batch, and combines ``u + s * (c - u)`` itself (Flux's true CFG);
    the cond call then evaluates every conditioning of the program, the uncond call the unconds,
    and ``cfg_scale`` must say whether CFG runs. The pipeline is given negative embeddings only
    when it does (it runs its uncond branch whenever it has them).
``cfg_scale(pipe, kwargs, negative_prompt) -> float | None``
    The CFG scale of this call, asked once before any work: for pipelines that keep it out of
    ``pipe.guidance_scale`` (PixArt) or decide CFG from more than the scale (Flux: a negative
    prompt and ``true_cfg_scale > 1``; a scale <= 1 means no CFG). None (the default): the runner
    reads ``pipe.guidance_scale`` at each step.
``text_encoder(pipe, options) -> TextEncoder``
    An object with ``encode(text) -> Conditioning`` (cached per text, independent of other texts)
    and ``zeros() -> Conditioning``. ``options`` is a :class:`TextOptions` (emphasis, clip skip,
    comma backtrack, text-encoder LoRA scale, T5's ``max_sequence_length``). A conditioning with a
    ``mask`` (the text's own attention mask, T5 padding) gives every row of the batch its mask.
    An optional ``encode_negative(text)`` encodes the negative prompt where the pipeline reads it
    differently from the prompt (SD3 applies ``clip_skip`` to the prompt only).
``zero_uncond(pipe, negative_prompt) -> bool``
    Whether the unconditional input is all zeros instead of the encoded negative prompt (SDXL's
    ``force_zeros_for_empty_prompt`` when ``negative_prompt is None``).
``lora_scale(kwargs) -> float | None``
    The text-encoder LoRA scale the pipeline's ``encode_prompt`` would use for these call arguments.
``pipeline_inputs(carrier) -> dict``
    The embedding arguments the pipeline is called with, so that it skips its own text encoding
    (``prompt_embeds``, ``negative_prompt_embeds``, pooled variants). ``carrier`` holds one uncond
    row per prompt; the pipeline only reads its batch size, dtype and device.
``direct_inputs(cond, uncond) -> dict | None``
    Optional (default None). The embedding arguments that make the pipeline's own step compute a
    program of one conditioning per prompt exactly (``cond``, ``uncond``: ``Conditioning``
    batches, one row per prompt, of one length): the runner then calls the pipeline with them and
    places no hook at all (no per-step cost). None: always use the hooks. For a ``"per_branch"``
    family the runner drops the ``negative_*`` entries when CFG does not run, as it does for the
    hooks.
``repeats_given_embeddings``
    Whether the pipeline repeats given ``prompt_embeds`` for ``num_images_per_prompt`` (SD, SDXL,
    PixArt: True; SD3 and Flux: False, so their direct path is taken for one image per prompt only).
``prompt_inputs``
    Call arguments that name the prompt and so contradict the program (refused with ``TypeError``).
``set_text(kwargs, hidden, pooled, mask)``
    Put the step's text inputs into the denoiser's (or a side module's) bound arguments, in place:
    ``hidden [rows, L, D]``, ``pooled [rows, D_pooled]`` or None, ``mask [rows, L]`` (True: attend)
    or None.
``side_text(pipe, module, kwargs, hidden, pooled, mask)``
    ``set_text`` for a side module (default: ``set_text``): a family whose ControlNets read
    the text differently overrides it (an SD3 ControlNet without a text input, or one that reads
    zeros for the pooled projection, keeps what the pipeline gave it, gathered per row).
``supports_mask``
    Whether the denoiser takes an ``encoder_attention_mask`` for rows of different text lengths; if
    not, the runner pads by repetition only (A1111's ``stack_conds``) and never masks.
``unwrap(output) -> Tensor`` / ``rewrap(output, tensor)``
    The prediction inside the denoiser's output, and the output with the prediction replaced.

Adapters hold no run state: one instance serves every run of every pipeline of its family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FamilyAdapter",
    "TextOptions",
    "UnsupportedFeatureError",
    "UnsupportedPipelineError",
    "adapter_for",
    "adapters",
    "refuse_pag",
    "register",
    "unwrap_module",
]


class UnsupportedPipelineError(TypeError):
    """``run()`` was given something that is not a pipeline of a supported family."""


class UnsupportedFeatureError(ValueError):
    """The pipeline is supported, but an argument or component of this call cannot be honoured."""


@dataclass(frozen=True)
class TextOptions:
    """How texts are encoded: A1111's emphasis mode and comma backtrack, diffusers' ``clip_skip``
    and the text-encoder LoRA scale (``cross_attention_kwargs["scale"]``; None: the loaded scale),
    and the pipeline's ``max_sequence_length`` for T5 encoders (None: the pipeline's default)."""

    emphasis: str = "original"
    clip_skip: int | None = None
    comma_backtrack: int = 20
    lora_scale: float | None = None
    max_sequence_length: int | None = None


_REGISTRY: list["FamilyAdapter"] = []


def register(cls: type["FamilyAdapter"]) -> type["FamilyAdapter"]:
    """Class decorator: add one instance of ``cls`` to the registry :func:`adapter_for` searches."""
    _REGISTRY.append(cls())
    return cls


def adapters() -> tuple["FamilyAdapter", ...]:
    """The registered adapters, in the order :func:`adapter_for` tries them."""
    _load_families()
    return tuple(_REGISTRY)


def adapter_for(pipe: Any) -> "FamilyAdapter":
    """The adapter that drives ``pipe``.

    Raises :class:`UnsupportedPipelineError` (a ``TypeError``) naming the supported pipelines when
    no adapter accepts it, ``pipe=None`` included.
    """
    if pipe is None or not callable(pipe) or not hasattr(pipe, "components"):
        raise UnsupportedPipelineError(
            f"run() needs a diffusers pipeline, but got {type(pipe).__name__}"
            f"{'' if pipe is None else f' {_short(pipe)}'}. {supported()}"
        )
    for adapter in adapters():
        if adapter.matches(pipe):
            return adapter
    modular = type(pipe).__name__.endswith("ModularPipeline")
    hint = (" A modular pipeline takes its guidance from a guider component: use "
            "neutral_lang.backends.diffusers.modular.ProgramGuidance (docs/diffusers.md)." if modular else "")
    raise UnsupportedPipelineError(f"neutral_lang cannot guide {type(pipe).__name__}.{hint} {supported()}")


def supported() -> str:
    """One sentence naming every supported pipeline class, by family."""
    families = "; ".join(f"{a.name}: {', '.join(a.pipelines)}" for a in adapters())
    return f"Supported pipelines ({families})."


def unwrap_module(module: Any) -> Any:
    """The module itself under a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``)."""
    return getattr(module, "_orig_mod", module)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Modules (relative to this package) that register adapters when imported, in registry order.
#: A new family adds its module here.
FAMILY_MODULES: tuple[str, ...] = (".stable_diffusion", ".stable_diffusion_3", ".flux", ".pixart")

_families_loaded = False


def _load_families() -> None:
    """Import the modules that register adapters (once; they need torch and diffusers)."""
    global _families_loaded
    if _families_loaded:
        return
    import importlib

    for name in FAMILY_MODULES:
        importlib.import_module(name, __package__)
    _families_loaded = True


class FamilyAdapter:
    """Base class of the family adapters; see the module docstring for the interface."""

    name: str = ""
    pipelines: tuple[str, ...] = ()
    sample_input: str = "sample"
    residual_inputs: tuple[str, ...] = ()
    cfg_batching: str = "joint"
    supports_mask: bool = False
    repeats_given_embeddings: bool = True
    prompt_inputs: tuple[str, ...] = ("prompt", "prompt_embeds", "negative_prompt_embeds")

    def pipeline_classes(self) -> tuple[type, ...]:
        import diffusers

        return tuple(c for c in (getattr(diffusers, n, None) for n in self.pipelines) if isinstance(c, type))

    def matches(self, pipe: Any) -> bool:
        return isinstance(pipe, self.pipeline_classes())

    def check(self, pipe: Any, kwargs: dict) -> None:
        pass

    def denoiser(self, pipe: Any) -> Any:
        raise NotImplementedError

    def side_modules(self, pipe: Any) -> tuple[Any, ...]:
        return ()

    def text_encoder(self, pipe: Any, options: TextOptions) -> Any:
        raise NotImplementedError

    def zero_uncond(self, pipe: Any, negative_prompt: Any) -> bool:
        return False

    def lora_scale(self, kwargs: dict) -> float | None:
        return None

    def cfg_scale(self, pipe: Any, kwargs: dict, negative_prompt: Any) -> float | None:
        return None

    def pipeline_inputs(self, carrier: Any) -> dict:
        raise NotImplementedError

    def direct_inputs(self, cond: Any, uncond: Any) -> dict | None:
        return None

    def set_text(self, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        raise NotImplementedError

    def side_text(self, pipe: Any, module: Any, kwargs: dict, hidden: Any, pooled: Any, mask: Any) -> None:
        self.set_text(kwargs, hidden, pooled, mask)

    def unwrap(self, output: Any) -> Any:
        return output[0] if isinstance(output, tuple) else output.sample

    def rewrap(self, output: Any, tensor: Any) -> Any:
        if isinstance(output, tuple):
            return (tensor, *output[1:])
        return type(output)(sample=tensor)


def pooled_embedding_inputs(cond: Any, uncond: Any) -> dict:
    """The embedding arguments of a pipeline that takes per-token and pooled prompt embeddings
    (SDXL, SD3, Flux): ``cond``'s and ``uncond``'s ``hidden`` and ``pooled`` under diffusers' names."""
    return {
        "prompt_embeds": cond.hidden,
        "negative_prompt_embeds": uncond.hidden,
        "pooled_prompt_embeds": cond.pooled,
        "negative_pooled_prompt_embeds": uncond.pooled,
    }


def _call_default(pipe: Any, name: str, fallback: Any) -> Any:
    """The default of ``pipe.__call__``'s parameter ``name`` (``fallback`` if it has none)."""
    import inspect

    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return fallback
    return parameter.default


def refuse_pag(pipe: Any, kwargs: dict) -> None:
    """Perturbed-attention guidance adds a third batch (``[u, c, c_perturbed]``) and swaps the
    UNet's attention processors; the program's one-batch step cannot honour it."""
    pag = getattr(type(pipe), "_set_pag_attn_processor", None) is not None
    if pag and float(kwargs.get("pag_scale", _call_default(pipe, "pag_scale", 0.0)) or 0.0) > 0:
        raise UnsupportedFeatureError(
            f"{type(pipe).__name__} with pag_scale > 0 (perturbed-attention guidance) cannot be "
            "combined with a compiled program: pass pag_scale=0, or use the matching non-PAG pipeline."
        )

