"""``neutral-lang grid``: sweeps in the manner of A1111's X/Y/Z plot, drawn as one labelled PNG.

An axis is ``NAME=VALUES``:

| ``NAME``                  | what varies                                                    |
|---------------------------|----------------------------------------------------------------|
| ``seed``                  | the seed                                                       |
| ``steps``                 | the number of denoising steps                                  |
| ``cfg``                   | the CFG scale                                                  |
| ``weight:N``              | the ``:w`` weight of part ``N`` (1-based, in ``explain`` order) |
| ``k:N``, ``start:N``, ... | keyword option of part ``N`` (any option of docs/language.md)  |
| ``sr``                    | A1111's Prompt S/R: the first value is searched, each value replaces it |

``VALUES`` is a comma-separated list, where a number may be a range as A1111 writes them:
``1-4`` (1, 2, 3, 4 for whole numbers), ``0-1 [5]`` (5 evenly spaced: 0, 0.25, ..., 1),
``10-30 (+10)`` (10, 20, 30). The seed study of the original extension's users (glasses appear
on an AND_TOPK part from a weight of about 0.6)::

    neutral-lang grid --model PATH "1girl, blue hair AND_TOPK glasses :0" --x "weight:2=0-1 [6]" --y "seed=1-3"

Torch-free: the images come from :mod:`neutral_lang.generate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from .inputs import InputError

__all__ = ["Axis", "parse_axis", "expand_values", "apply", "draw", "with_weight", "with_option"]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\[\s*(\d+)\s*\]|\(\s*({_NUMBER})\s*\))?\s*")
_PART_AXES = ("weight", "k", "start", "end", "per_channel", "momentum", "beta")
_INT_AXES = ("seed", "steps")


@dataclass(frozen=True)
class Axis:
    """One axis: ``kind`` (``seed``, ``steps``, ``cfg``, ``weight``, an option name, or ``sr``),
    ``part`` (1-based part number for weight and option axes), ``values`` as written for labels
    (``texts``) and as used (``values``)."""

    kind: str
    part: int | None
    values: tuple[Any, ...]
    texts: tuple[str, ...]

    def label(self, i: int) -> str:
        if self.kind == "sr":
            return self.texts[i]
        name = {"cfg": "CFG scale"}.get(self.kind, self.kind)
        return f"{name}{'' if self.part is None else f' of part {self.part}'}: {self.texts[i]}"


def _format(value: float) -> str:
    from .formatter import format_number

    return format_number(value)


def expand_values(text: str, *, integers: bool) -> list[float]:
    """Numbers of an axis: a comma list whose items are numbers or A1111-style ranges."""
    out: list[float] = []
    for item in text.split(","):
        if not item.strip():
            continue
        match = _RANGE.fullmatch(item)
        if match is None:
            try:
                out.append(int(item) if integers else float(item))
            except ValueError:
                raise InputError(f"axis value {item.strip()!r} is not a number or a range such as 0-1 [5]") from None
            continue
        lo, hi, count, step = match.groups()
        a, b = float(lo), float(hi)
        if count is not None:
            n = int(count)
            if n < 1:
                raise InputError(f"axis range {item.strip()!r}: the count in [n] must be at least 1")
            values = [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n)]
        else:
            s = float(step) if step is not None else (1.0 if b >= a else -1.0)
            if s == 0 or (b - a) * s < 0:
                raise InputError(f"axis range {item.strip()!r}: the step does not go from {lo} to {hi}")
            n = int((b - a) / s + 1e-9) + 1
            if n > 10_000:
                raise InputError(f"axis range {item.strip()!r} has {n} values; at most 10000")
            values = [a + s * i for i in range(n)]
        out.extend(int(round(v)) if integers else round(v, 10) for v in values)
    if not out:
        raise InputError(f"axis {text!r} has no values")
    return out


def parse_axis(text: str) -> Axis:
    """An :class:`Axis` from ``NAME=VALUES`` (see the module docstring)."""
    name, sep, values = text.partition("=")
    name = name.strip().lower()
    if not sep:
        raise InputError(f"axis {text!r}: write NAME=VALUES, e.g. seed=1-4 or weight:2=0-1 [5]")
    kind, _, part_text = name.partition(":")
    part = None
    if kind in _PART_AXES:
        if not part_text.isdigit() or int(part_text) < 1:
            raise InputError(f"axis {text!r}: say which part, e.g. {kind}:2= (parts are numbered from 1 "
                             "in the order `neutral-lang explain` lists them)")
        part = int(part_text)
    elif part_text or kind not in (*_INT_AXES, "cfg", "sr"):
        raise InputError(f"axis {text!r}: unknown axis; use seed, steps, cfg, sr, weight:N or an option "
                         f"({', '.join(o + ':N' for o in _PART_AXES[1:])})")
    if kind == "sr":
        texts = [v.strip() for v in values.split(",")]
        if len(texts) < 1 or not texts[0]:
            raise InputError(f"axis {text!r}: Prompt S/R needs the text to search first, then its replacements")
        return Axis("sr", None, tuple(texts), tuple(texts))
    numbers = expand_values(values, integers=kind in _INT_AXES)
    return Axis(kind, part, tuple(numbers), tuple(str(v) if kind in _INT_AXES else _format(v) for v in numbers))


# ---------------------------------------------------------------------------------------------
# Editing a prompt's text by its spans: the rest of the text stays as written


def _part(text: str, n: int):
    from .ast import iter_parts
    from .parser import parse

    parts = [part for _, part in iter_parts(parse(text))]
    if not 1 <= n <= len(parts):
        raise InputError(f"the prompt has {len(parts)} part{'s' if len(parts) != 1 else ''}, so no part {n}")
    return parts[n - 1]


def with_weight(text: str, n: int, value: float) -> str:
    """``text`` with part ``n``'s weight set to ``value`` (written or replaced as ``:value``)."""
    part = _part(text, n)
    if part.weight_span is not None:
        return text[:part.weight_span.start] + f":{_format(value)}" + text[part.weight_span.end:]
    return text[:part.span.end] + f" :{_format(value)}" + text[part.span.end:]


def with_option(text: str, n: int, name: str, value: float, *, fraction: bool = False) -> str:
    """``text`` with keyword option ``name`` of part ``n`` set to ``value``. ``start``/``end`` are
    written as step indices, or with ``fraction`` as fractions of the steps (``1.0``, not ``1``)."""
    part = _part(text, n)
    if part.keyword_span is None:
        raise InputError(f"part {n} has no keyword written, so it takes no options (AND_TOPK(k=...) ...)")
    number = _format(value)
    if name in ("start", "end") and fraction and not any(c in number for c in ".e"):
        number += ".0"
    elif name in ("start", "end") and not fraction:
        number = str(int(value))
    spelled = f"{name}={number}"
    for option in part.options:
        if option.name == name:
            return text[:option.span.start] + spelled + text[option.span.end:]
    if part.options:
        at = part.keyword_span.end - 1  # before the closing parenthesis
        return text[:at] + ", " + spelled + text[at:]
    at = part.keyword_span.end
    return text[:at] + f"({spelled})" + text[at:]


def apply(axis: Axis, i: int, prompt: str, settings) -> tuple[str, Any]:
    """The prompt and settings of a cell at value ``i`` of ``axis``."""
    value = axis.values[i]
    if axis.kind == "seed":
        return prompt, replace(settings, seed=int(value))
    if axis.kind == "steps":
        return prompt, replace(settings, steps=int(value))
    if axis.kind == "cfg":
        return prompt, replace(settings, cfg_scale=float(value))
    if axis.kind == "sr":
        if axis.values[0] not in prompt:
            raise InputError(f"Prompt S/R: {axis.values[0]!r} is not in the prompt")
        return prompt.replace(axis.values[0], value), settings
    if axis.kind == "weight":
        return with_weight(prompt, axis.part, float(value)), settings
    fraction = any("." in t for t in axis.texts)
    return with_option(prompt, axis.part, axis.kind, float(value), fraction=fraction), settings


# ---------------------------------------------------------------------------------------------
# Drawing


def draw(images: list, xs: list[str], ys: list[str], *, title: str = "") -> Any:
    """One PIL image: ``images`` (row-major, ``len(ys)`` rows of ``len(xs)``) in a grid with the
    ``xs`` labels above the columns and the ``ys`` labels left of the rows (``[""]``: no labels).
    Images under 128 pixels are enlarged (nearest neighbour) so that the grid stays readable."""
    import textwrap

    from PIL import Image, ImageDraw

    scale = max(1, -(-128 // max(min(im.width, im.height) for im in images)))
    w = max(im.width for im in images) * scale
    h = max(im.height for im in images) * scale
    gap, line, char = 4, 12, 6  # pixels; PIL's default bitmap font is about 6 pixels a character

    def wrap(text: str, width_px: int) -> list[str]:
        return textwrap.wrap(text, max(4, width_px // char)) or [""]

    column_lines = [wrap(t, w) for t in xs]
    row_width = 0 if ys == [""] else min(240, char * max(len(t) for t in ys) + 2 * gap)
    row_lines = [wrap(t, row_width - gap) for t in ys]
    top = (line * max(len(c) for c in column_lines) + gap if xs != [""] else 0) + (line + gap if title else 0)
    canvas = Image.new("RGB", (row_width + (w + gap) * len(xs), top + (h + gap) * len(ys)), (255, 255, 255))
    pen = ImageDraw.Draw(canvas)
    if title:
        pen.text((gap, 2), title[: canvas.width // char], fill=(0, 0, 0))
    for c, pieces in enumerate(column_lines if xs != [""] else []):
        for k, piece in enumerate(pieces):
            y = top - gap - line * (len(pieces) - k)
            pen.text((row_width + c * (w + gap), y), piece, fill=(0, 0, 0))
    for r, pieces in enumerate(row_lines if ys != [""] else []):
        for k, piece in enumerate(pieces[: max(1, h // line)]):
            pen.text((gap, top + r * (h + gap) + k * line), piece, fill=(0, 0, 0))
    for i, image in enumerate(images):
        r, c = divmod(i, len(xs))
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), resample=Image.NEAREST)
        canvas.paste(image, (row_width + c * (w + gap), top + r * (h + gap)))
    return canvas
