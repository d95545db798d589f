"""The toy world: a small Stable Diffusion pipeline the project trains itself, and how to judge it.

- :mod:`~neutral_lang.toy.world`: procedural 64x64 scenes of coloured shapes and their captions;
- :mod:`~neutral_lang.toy.evaluate`: reads colour, shape, position, size and count back from
  pixels, analytically (independent of the model);
- :mod:`~neutral_lang.toy.architecture`: the pipeline's components (VAE, UNet, CLIP text encoder
  and word-level tokenizer, DDIM scheduler) as configs;
- :mod:`~neutral_lang.toy.train`: ``python -m neutral_lang.toy.train --out DIR`` trains them from
  scratch on the CPU and saves a pipeline with ``save_pretrained``.

See ``docs/toy.md`` for the recipe and the measured results.
"""

from __future__ import annotations

from pathlib import Path

#: where the package keeps the trained pipeline (``model_index.json`` and its components).
WEIGHTS = Path(__file__).parent / "weights"


def pipeline(path: str | Path | None = None):
    """The trained toy pipeline (``StableDiffusionPipeline``, float32, CPU, progress bar off).

    ``path`` defaults to :data:`WEIGHTS`. Loads with ``StableDiffusionPipeline.from_pretrained``
    like any user checkpoint. Raises ``FileNotFoundError`` when no trained pipeline is there.
    """
    folder = Path(path) if path is not None else WEIGHTS
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no trained toy pipeline in {folder}; train one with "
            f"`python -m neutral_lang.toy.train --out {folder}`"
        )
    from diffusers import StableDiffusionPipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe
