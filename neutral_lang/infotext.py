"""A1111 infotext: the ``parameters`` text A1111 writes into every image, read and written.

    a castle AND_PERP monster :-1
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1195978169, Size: 512x512, Model: sd15

Layout (as A1111's ``infotext_utils`` reads it): the positive prompt (any number of lines), an
optional line starting ``Negative prompt:`` (and its continuation lines), and a last line of
``Key: value`` settings separated by commas, where a value holding a comma, colon, quote or newline
is written as a JSON string. Settings this package writes: ``Steps``, ``Sampler``, ``CFG scale``,
``Seed``, ``Size``, ``Model``, ``CFG Rescale phi`` (the original extension's name for its CFG
rescale, written when it is not 0) and ``Version`` (``neutral-lang X.Y.Z``).

Torch-free; :func:`save_png` imports Pillow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Infotext", "split", "parse", "encode", "save_png", "SAMPLERS", "sampler_name", "scheduler_for"]


@dataclass(frozen=True)
class Infotext:
    """One parsed infotext. ``settings`` holds the settings this package uses, under its own names
    and types: ``steps`` (int), ``sampler_name`` (str), ``cfg_scale`` (float), ``seed`` (int),
    ``width``/``height`` (int, pixels), ``model`` (str), ``cfg_rescale`` (float); ``extra`` every
    other ``Key: value`` as written."""

    prompt: str
    negative_prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


# A1111 key -> (our name, type)
_KEYS = {
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Model": ("model", str),
    "CFG Rescale phi": ("cfg_rescale", float),
}

_QUOTED = re.compile(r'"(?:\\.|[^\\"])*"')


def _settings(line: str):
    """``(key, value)`` pairs of a settings line, in one left-to-right pass (linear in its length:
    a regex search for each key would rescan the rest of a line without colons)."""
    pos, n = 0, len(line)
    while pos < n:
        colon = line.find(":", pos)
        if colon < 0:
            return
        comma = line.find(",", pos, colon)
        if comma >= 0:  # a piece without a colon: skip it
            pos = comma + 1
            continue
        key = line[pos:colon].strip()
        pos = colon + 1
        while pos < n and line[pos] == " ":
            pos += 1
        quoted = _QUOTED.match(line, pos) if pos < n and line[pos] == '"' else None
        if quoted is not None:
            value, pos = quoted.group(), quoted.end()
            comma = line.find(",", pos)
            pos = n if comma < 0 else comma + 1
        else:
            comma = line.find(",", pos)
            end = n if comma < 0 else comma
            value, pos = line[pos:end], end + 1
        if key:
            yield key, value.strip()


def split(parameters: str) -> tuple[str, str | None, str | None]:
    """``(prompt, negative prompt or None, settings line or None)`` of an infotext.

    The prompt is the text before the first line starting ``Negative prompt:`` or, without one,
    before the last line starting ``Steps:``; it is a prefix of ``parameters`` (offsets into it are
    offsets into the infotext). The negative prompt runs up to that last ``Steps:`` line."""
    lines = parameters.split("\n")
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    steps_at = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("Steps:")), None)
    negative_at = next((i for i, line in enumerate(lines) if line.startswith("Negative prompt:")), None)
    if negative_at is not None and steps_at is not None and steps_at < negative_at:
        steps_at = None
    cut = negative_at if negative_at is not None else steps_at
    prompt = parameters if cut is None else parameters[:starts[cut]].rstrip("\r\n")
    negative = None
    if negative_at is not None:
        stop = len(parameters) if steps_at is None else starts[steps_at]
        negative = parameters[starts[negative_at] + len("Negative prompt:"):stop].strip()
    settings = None if steps_at is None else "\n".join(lines[steps_at:]).strip()
    return prompt, negative, settings


def parse(parameters: str) -> Infotext:
    """An :class:`Infotext` from A1111's ``parameters`` text. Settings that do not read as their
    type (``Steps: many``) stay in ``extra``; ``Size: WxH`` gives ``width`` and ``height``."""
    prompt, negative, line = split(parameters)
    settings: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in _settings(line or ""):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if key == "Size":
            w, sep, h = str(value).partition("x")
            if sep and w.isascii() and w.isdigit() and h.isascii() and h.isdigit():  # int() refuses "³"
                settings["width"], settings["height"] = int(w), int(h)
                continue
        if key in _KEYS:
            name, kind = _KEYS[key]
            try:
                settings[name] = kind(value)
                continue
            except ValueError:
                pass
        extra[key] = str(value)
    if extra.get("Schedule type", "").lower() == "karras" and "sampler_name" in settings:
        settings["sampler_name"] += " Karras"  # A1111 >= 1.9 writes the schedule apart
    return Infotext(prompt, negative, settings, extra)


def _quote(value: Any) -> str:
    text = _number(value) if isinstance(value, float) else str(value)
    if any(c in text for c in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def encode(
    prompt: str,
    *,
    negative_prompt: str | None = None,
    steps: int | None = None,
    sampler_name: str | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    model: str | None = None,
    cfg_rescale: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> str:
    """The A1111 infotext of one image: the prompt, ``Negative prompt: ...`` when there is one,
    and the settings line (``None`` settings are left out; ``CFG Rescale phi`` only when not 0;
    ``extra`` keys appended in order before ``Version``).

    >>> encode("a AND_PERP b :-1", steps=20, cfg_scale=7.0, seed=1, width=512, height=512).splitlines()[1]
    'Steps: 20, CFG scale: 7, Seed: 1, Size: 512x512, Version: neutral-lang ...'
    """
    from . import __version__

    items: list[tuple[str, Any]] = [
        ("Steps", steps), ("Sampler", sampler_name), ("CFG scale", cfg_scale), ("Seed", seed),
        ("Size", f"{width}x{height}" if width and height else None), ("Model", model),
        ("CFG Rescale phi", cfg_rescale or None),
    ]
    items += list((extra or {}).items())
    items.append(("Version", f"neutral-lang {__version__}"))
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in items if value is not None))
    return "\n".join(lines)


def save_png(image: Any, path: Any, parameters: str) -> None:
    """Save a PIL ``image`` as a PNG at ``path`` with ``parameters`` in its ``parameters`` text
    chunk, as A1111 does (``tEXt``, or ``iTXt`` for text outside Latin-1), so that A1111's PNG Info,
    ``neutral-lang lint IMAGE`` and ``neutral-lang run --from IMAGE`` read it back."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    image.save(path, format="PNG", pnginfo=info)


# ---------------------------------------------------------------------------------------------
# Samplers: A1111 names <-> diffusers schedulers (diffusers' "schedulers" overview lists the pairs)

#: A1111 sampler name -> (diffusers scheduler class, config overrides).
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                            "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}


def sampler_name(scheduler: Any) -> str:
    """The A1111 name of a diffusers scheduler (its class name where A1111 has none)."""
    cls = type(scheduler).__name__
    config = getattr(scheduler, "config", {}) or {}
    best = None
    for name, (scheduler_cls, overrides) in SAMPLERS.items():
        if scheduler_cls != cls:
            continue
        if all(config.get(k) == v for k, v in overrides.items()):
            if best is None or len(overrides) > len(SAMPLERS[best][1]):
                best = name
    return best or cls


def scheduler_for(name: str, scheduler: Any) -> Any:
    """A diffusers scheduler for A1111 sampler ``name``, built from ``scheduler``'s config (same
    betas and timestep spacing). Raises ``ValueError`` naming the samplers known here."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    import diffusers

    cls_name, overrides = SAMPLERS[name]
    if type(scheduler).__name__ == cls_name and all(scheduler.config.get(k) == v for k, v in overrides.items()):
        return scheduler
    return getattr(diffusers, cls_name).from_config(scheduler.config, **overrides)
