"""Image generation for ``neutral-lang run`` and ``neutral-lang grid``: settings, up-front checks,
model loading, and jobs split across processes.

A :class:`Job` is one image: a prompt and its resolved :class:`Settings`. :func:`check` validates
everything that can be validated without a model (exit 2 before any loading); :func:`load` loads
the pipeline (a diffusers folder, a hub id in the cache, or a single-file ``.safetensors`` /
``.ckpt`` checkpoint); :func:`generate` runs jobs. Under ``accelerate launch`` (``WORLD_SIZE`` > 1)
each process takes its share of the jobs (``PartialState.split_between_processes``) on its own
device; every image depends only on its job (its seed seeds its own generator), so it is the same
image a single process makes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from collections.abc import Mapping
from typing import Any, Callable, Iterable

from .inputs import InputError

__all__ = ["Settings", "Job", "check", "load", "generate", "Processes", "processes", "infotext_of", "honoured"]

EXTRAS_HINT = 'pip install "neutral-lang[diffusers]"'

#: infotext settings that do not change the image, or that :func:`honoured` maps; any other setting
#: of an infotext (Hires fix, Denoising strength, VAE, ADetailer, Token merging, ...) changes the image
#: in a way this package cannot reproduce, so ``run --from`` refuses it instead of ignoring it. ``Lora
#: hashes`` and ``TI hashes`` are refused too: the command line loads no LoRA or embedding.
HARMLESS_SETTINGS = ("Model hash", "Version", "RNG", "ENSD", "NGMS", "Grid")

#: A1111's "Emphasis" setting -> the runner's ``emphasis=``.
EMPHASIS = {"Original": "original", "No norm": "no_norm", "Ignore": "ignore", "None": "none"}

@dataclass(frozen=True)
class Settings:
    """What one image is made with. ``None`` width/height: the pipeline's default size;
    ``None`` sampler: the pipeline's own scheduler; ``None`` negative: no negative prompt
    (zeros where the model wants them, e.g. SDXL's ``force_zeros_for_empty_prompt``)."""

    negative_prompt: str | None = None
    steps: int = 30
    seed: int = 0
    cfg_scale: float = 7.0
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = None
    cfg_rescale: float = 0.0
    clip_skip: int | None = None  # A1111's "Clip skip" (1: last layer)
    emphasis: str = "original"  # A1111's "Emphasis" (docs/emphasis.md)


@dataclass(frozen=True)
class Job:
    """One image: ``index`` (its place in the output), ``prompt``, ``settings`` and a ``label``
    (where the prompt came from, for messages)."""

    index: int
    prompt: str
    settings: Settings
    label: str = ""


def settings_from(options: dict, base: Settings, *, label: str) -> Settings:
    """``base`` with ``options`` applied (prompt-file and infotext names: ``cfg_scale``,
    ``negative_prompt``, ...). Unknown infotext settings that change the image are refused."""
    known = {f for f in Settings.__dataclass_fields__}
    changes = {k: v for k, v in options.items() if k in known}
    if "negative_prompt" in changes and not changes["negative_prompt"]:
        changes["negative_prompt"] = None
    return replace(base, **changes)


def honoured(extra: dict, label: str) -> dict:
    """The settings an infotext's ``extra`` keys give (``Clip skip``, ``Emphasis``, ``Schedule type``
    as read by :func:`neutral_lang.infotext.parse`); raises :class:`InputError` naming the first key
    that would change the image and that cannot be reproduced here."""
    out: dict = {}
    for key, value in extra.items():
        if key in HARMLESS_SETTINGS:
            continue
        if key == "Clip skip":
            try:
                out["clip_skip"] = int(value)
            except ValueError:
                raise InputError(f"{label}: Clip skip {value!r} is not a number") from None
        elif key == "Emphasis" and value in EMPHASIS:
            out["emphasis"] = EMPHASIS[value]
        elif key == "Schedule type" and value in ("Automatic", "Karras"):
            continue  # Karras is folded into the sampler name
        else:
            raise InputError(
                f"{label}: its infotext has '{key}: {value}', which changes the image in a way neutral-lang "
                "cannot reproduce; remove it from the parameters to run the rest"
            )
    return out


def check(jobs: list[Job], *, device: str | None, out_paths: Iterable[str], in_paths: Iterable[str] = ()) -> None:
    """Everything that can be checked before a model is loaded; raises :class:`InputError`.
    ``in_paths`` are the files read: no output may overwrite one."""
    from .infotext import SAMPLERS

    for job in jobs:
        s, where = job.settings, job.label or "run"
        if s.steps < 1:
            raise InputError(f"{where}: steps must be at least 1, not {s.steps}")
        for name in ("width", "height"):
            size = getattr(s, name)
            if size is not None and (size < 8 or size % 8):
                raise InputError(f"{where}: the {name} must be a positive multiple of 8 pixels "
                                 f"(the VAE works on 8x8 blocks), not {size}")
        if not math.isfinite(s.cfg_scale):
            raise InputError(f"{where}: the CFG scale must be a finite number, not {s.cfg_scale}")
        if not 0.0 <= s.cfg_rescale <= 1.0:
            raise InputError(f"{where}: the CFG rescale must be between 0 and 1, not {s.cfg_rescale}")
        if s.sampler_name is not None and s.sampler_name not in SAMPLERS:
            raise InputError(f"{where}: unknown sampler {s.sampler_name!r}; known: {', '.join(SAMPLERS)}")
        if s.clip_skip is not None and s.clip_skip < 1:
            raise InputError(f"{where}: Clip skip must be at least 1, not {s.clip_skip}")
    read = {os.path.realpath(p) for p in in_paths if p != "-"}
    for path in out_paths:
        if os.path.realpath(path) in read:
            raise InputError(f"--out {path} would overwrite an input; give another --out")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise InputError(f"the output folder {os.path.dirname(path) or folder!r} does not exist; create it first")
    if device is not None:
        check_device(device)


def _torch():
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise InputError(f"generating images needs {exc.name}: {EXTRAS_HINT}") from None
    return torch


def check_device(device: str) -> None:
    torch = _torch()
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this torch build or machine has no CUDA; use --device cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"--device {device}: MPS is not available here; use --device cpu")


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def model_kind(model: str) -> str:
    """``"single_file"``, ``"folder"`` or ``"hub"`` for a ``--model`` value; raises
    :class:`InputError` at once for a local path that does not exist (no 15-second hub lookup)."""
    expanded = os.path.expanduser(model)
    if model.lower().endswith(SINGLE_FILE_SUFFIXES):
        if not os.path.isfile(expanded):
            raise InputError(f"--model {model}: no such checkpoint file")
        return "single_file"
    if os.path.isdir(expanded):
        return "folder"
    if os.path.exists(expanded):
        raise InputError(f"--model {model}: a file, but not a .safetensors or .ckpt checkpoint")
    # A hub id is NAME or ORG/NAME; anything else with a path shape is a missing local path.
    if model.startswith((".", "/", "~")) or os.sep in model.replace("/", "", 1) or model.count("/") > 1 \
            or "\\" in model:
        raise InputError(f"--model {model}: no such folder (a diffusers model folder, a .safetensors "
                         "checkpoint, or a hub id such as stabilityai/stable-diffusion-xl-base-1.0)")
    return "hub"


def load(model: str, *, device: str, dtype_name: str | None, config: str | None = None):
    """The pipeline for ``--model``: see :func:`model_kind`. Raises :class:`InputError` with what
    to do for a model that does not load or a missing extra."""
    torch = _torch()
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401

        from .backends.diffusers import ModelLoadError, load_pipeline
    except ModuleNotFoundError as exc:
        raise InputError(f"generating images needs {exc.name}: {EXTRAS_HINT}") from None
    dtype = getattr(torch, dtype_name or ("float16" if device.startswith("cuda") else "float32"))
    kind = model_kind(model)
    if kind != "single_file":
        try:
            return load_pipeline(os.path.expanduser(model) if kind == "folder" else model, device=device, dtype=dtype)
        except ModelLoadError as err:
            raise InputError(str(err)) from None
    return _load_single_file(os.path.expanduser(model), device=device, dtype=dtype, config=config)


def _load_single_file(path: str, *, device: str, dtype, config: str | None):
    """A single-file checkpoint through diffusers' ``from_single_file``: SD 1.x/2.x or SDXL, told
    apart by the checkpoint's keys (diffusers' own ``infer_diffusers_model_type``)."""
    import warnings

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionPipeline
    try:
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

        if path.lower().endswith(".safetensors"):
            kind = infer_diffusers_model_type(_LazySafetensors(path))
        else:  # .ckpt: torch.load with weights_only, as diffusers does
            kind = infer_diffusers_model_type(load_single_file_checkpoint(path))
        if kind.startswith(("xl", "playground")):
            cls = StableDiffusionXLPipeline
    except Exception as exc:  # an unreadable file: say so here rather than deep inside diffusers
        raise InputError(f"--model {path}: not a checkpoint diffusers can read ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None
    base = ("stabilityai/stable-diffusion-xl-base-1.0" if cls is StableDiffusionXLPipeline
            else "stable-diffusion-v1-5/stable-diffusion-v1-5")
    options = {"torch_dtype": dtype}
    if config:
        options["config"] = config
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            pipe = cls.from_single_file(path, **options)
    except Exception as exc:  # from_single_file raises many types (OSError, ValueError, HTTP errors)
        raise InputError(
            f"--model {path}: could not build a {cls.__name__} from this single-file checkpoint: it needs "
            "its model configuration, from the Hugging Face cache or from --config FOLDER_OR_ID (e.g. "
            f"`hf download {base} --exclude '*.safetensors' '*.bin' '*.ckpt'` once online). "
            f"Cause: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    return pipe.to(device)


class _LazySafetensors(Mapping):
    """The keys of a ``.safetensors`` checkpoint, loading a tensor only when it is looked up: the
    model type is told from a few keys and shapes without reading gigabytes twice."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self._file = safe_open(path, framework="pt")
        self._keys = set(self._file.keys())

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Processes:
    """This process's place among the ones ``accelerate launch`` started (one, without it)."""

    index: int = 0
    count: int = 1
    device: str | None = None
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def share(self, jobs: list[Job]) -> list[Job]:
        """This process's jobs: contiguous, near-equal shares, in job order."""
        if self.count == 1:
            return jobs
        with self.state.split_between_processes(jobs) as mine:
            return list(mine)

    def gather(self, items: list) -> list:
        """Every process's ``items``, concatenated in process order (on every process)."""
        if self.count == 1:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(items))

    def wait(self) -> None:
        """Wait for every process, then close the process group: a gloo group still open when the
        interpreter exits can abort the process ("terminate called without an active exception")
        after all its images were written."""
        if self.count > 1:
            self.state.wait_for_everyone()
            close = getattr(self.state, "destroy_process_group", None)  # accelerate >= 0.32
            if close is not None:
                close()
            else:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()


def processes(device: str | None = None) -> Processes:
    """One process, or (under ``accelerate launch`` or ``torchrun``: ``WORLD_SIZE`` > 1) accelerate's
    ``PartialState``: its process index, count and device. Processes on CPUs (``device`` ``cpu``, or
    no CUDA) talk over gloo."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Processes()
    try:
        from accelerate import PartialState
    except ModuleNotFoundError:
        raise InputError('running on several processes needs accelerate: pip install "neutral-lang[scale]"') from None
    torch = _torch()
    state = PartialState(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, str(state.device), state)


# ---------------------------------------------------------------------------------------------
# Running


def generate(pipe, jobs: list[Job], *, device: str, on_image: Callable[[Job, Any], None],
             progress: Any = None) -> None:
    """Run ``jobs`` on ``pipe`` one by one; ``on_image(job, image)`` gets each PIL image.
    ``progress`` (a tqdm bar) is advanced once per image."""
    import torch

    import neutral_lang as nl

    from .infotext import scheduler_for

    own_scheduler = pipe.scheduler
    try:
        for job in jobs:
            s = job.settings
            pipe.scheduler = own_scheduler if s.sampler_name is None else scheduler_for(s.sampler_name, own_scheduler)
            size = {} if s.width is None else {"width": s.width, "height": s.height}
            generator = torch.Generator(device if device.startswith("cuda") else "cpu").manual_seed(s.seed)
            program = nl.compile(job.prompt)
            result = program.run(
                pipe, negative_prompt=s.negative_prompt, num_inference_steps=s.steps, guidance_scale=s.cfg_scale,
                guidance_rescale=float(s.cfg_rescale),
                generator=generator, clip_skip=None if not s.clip_skip or s.clip_skip == 1 else s.clip_skip - 1,
                emphasis=s.emphasis, **size,
            )
            on_image(job, result.images[0])
            if progress is not None:
                progress.update(1)
    finally:
        pipe.scheduler = own_scheduler


def infotext_of(job: Job, image, *, pipe, model: str, extra: dict | None = None) -> str:
    """The A1111 infotext of ``job``'s ``image``."""
    from .infotext import encode, sampler_name

    s = job.settings
    return encode(
        job.prompt, negative_prompt=s.negative_prompt, steps=s.steps,
        sampler_name=s.sampler_name or sampler_name(pipe.scheduler), cfg_scale=s.cfg_scale, seed=s.seed,
        width=image.width, height=image.height, model=model_name(model), cfg_rescale=s.cfg_rescale,
        extra={**({"Clip skip": s.clip_skip} if s.clip_skip and s.clip_skip > 1 else {}),
               **({"Emphasis": next(k for k, v in EMPHASIS.items() if v == s.emphasis)}
                  if s.emphasis != "original" else {}),
               **(extra or {})},
    )


def model_name(model: str) -> str:
    """How the infotext names a model: a checkpoint's or folder's name, or the hub id."""
    if os.path.exists(os.path.expanduser(model)):
        base = os.path.basename(os.path.normpath(os.path.expanduser(model)))
        return os.path.splitext(base)[0] if model.lower().endswith(SINGLE_FILE_SUFFIXES) else base
    return model
