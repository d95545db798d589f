"""The diffusers backend: ``run(program, pipe, **kwargs)`` and ``load_pipeline(model)``.

    pipe = load_pipeline("stabilityai/stable-diffusion-xl-base-1.0", device="cuda", dtype=torch.float16)
    image = neutral_lang.compile("a castle AND_TOPK glasses :0.4").run(pipe).images[0]

``adapters`` holds one adapter per model family (``adapter_for(pipe)`` finds it or refuses the
pipeline); ``runner`` drives a pipeline's guidance through hooks on its denoiser (and ControlNet);
``text_encoding`` encodes leaf texts as A1111 does. See ``docs/diffusers.md``. Nothing heavy is
imported until used.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from .adapters import UnsupportedFeatureError, UnsupportedPipelineError, adapter_for

__all__ = [
    "run",
    "load_pipeline",
    "adapter_for",
    "ModelLoadError",
    "UnsupportedFeatureError",
    "UnsupportedPipelineError",
]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do instead."""


def run(program, pipe, **kwargs: Any):
    """See :func:`neutral_lang.backends.diffusers.runner.run`."""
    from .runner import run as _run

    return _run(program, pipe, **kwargs)


def load_pipeline(model: str, *, device: str | None = None, dtype: Any = None):
    """Load a pipeline of a supported family from a local folder or a Hugging Face hub id.

    ``DiffusionPipeline.from_pretrained`` picks the class from the model's ``model_index.json``
    (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``,
    ``FluxPipeline``, ...). A hub id is looked up in the local cache first, and fetched only if that
    fails and ``HF_HUB_OFFLINE`` is not set. Raises :class:`ModelLoadError` (a ``RuntimeError``)
    with a readable message when nothing loads, or when no family adapter drives the pipeline
    (:func:`.adapters.adapter_for`).
    """
    from diffusers import DiffusionPipeline

    options = {} if dtype is None else {"torch_dtype": dtype}
    local = os.path.isdir(model)
    attempts = [{}] if local else [{"local_files_only": True}]
    if not local and os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        attempts.append({})
    error: Exception | None = None
    pipe = None
    for extra in attempts:
        try:
            with warnings.catch_warnings():
                # diffusers >= 0.36 prefers dtype=; torch_dtype= works in every version we support
                warnings.simplefilter("ignore", FutureWarning)
                pipe = DiffusionPipeline.from_pretrained(model, **options, **extra)
            break
        except Exception as caught:  # from_pretrained raises many types (OSError, ValueError, HTTP errors)
            error = caught
    if pipe is None:
        where = (
            f"the folder {model!r} does not hold a diffusers pipeline (model_index.json and its components)"
            if local
            else f"{model!r} is neither a local folder nor a model in the Hugging Face cache, "
            "and it could not be downloaded"
        )
        raise ModelLoadError(
            f"Could not load the model: {where}. Give the path of a diffusers model folder, or "
            f"download the model first (`hf download {model}`) on a machine with "
            f"internet access. Cause: {type(error).__name__}: {_first_line(error)}"
        ) from error
    try:
        adapter_for(pipe)
    except UnsupportedPipelineError as refused:
        raise ModelLoadError(f"{model!r} loads, but {refused}") from refused
    if device is not None:
        pipe = pipe.to(device)
    return pipe


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
