"""``make demo``: what each keyword does, as before/after pictures a newcomer reads at a glance.

By default the demo runs on the *toy model* the project trains itself (``neutral_lang.toy``: a
real Stable Diffusion pipeline, 64x64, coloured shapes; see ``docs/toy.md``), on the CPU, in
seconds. For each keyword it writes ``<keyword>.png``: the base prompt's images next to the
composed prompt's, the same seeds in the same places, every panel titled with its prompt, and
below them the keyword's guidance maps (from the executor's trace) with a legend. It prints what
each file shows.

``--model PATH_OR_ID`` runs the original README's and the seed's prompts on a real checkpoint
instead (one seed per panel); ``--random`` the same on the tiny random-weight pipeline the unit
tests use (its images are noise: it shows the machinery, not the effect).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from . import examples


@dataclass(frozen=True)
class Comparison:
    """One figure: ``panels`` are (label, prompt), the first one the base prompt."""

    name: str
    keyword: str
    shows: str
    panels: tuple[tuple[str, str], ...]


#: The toy model's figures: one per keyword, and a weight sweep.
TOY = (
    Comparison(
        "AND", "AND",
        "AND adds a second prompt's guidance. The claim (composable diffusion): a blue square joins "
        "the red circle. Not on the toy model: it draws one object, here in a colour neither prompt "
        "names (green); docs/toy.md measures it over 50 seeds.",
        (("before", "a red circle on the left"),
         ("after: AND", "a red circle on the left AND a blue square on the right")),
    ),
    Comparison(
        "AND_PERP", "AND_PERP",
        "A negative AND on a concept the subject shares (its colour) attacks the subject itself; "
        "AND_PERP removes only the part of the concept the subject does not share (Perp-Neg's claim).",
        (("before", "a yellow circle"),
         ("negative AND", "a yellow circle AND a yellow shape :-1"),
         ("AND_PERP", "a yellow circle AND_PERP a yellow shape :-1")),
    ),
    Comparison(
        "AND_TOPK", "AND_TOPK",
        "At a small weight, AND_TOPK edits only the few latent pixels where the concept pulls "
        "hardest (SEGA's claim: the composition stays); AND at the same weight acts everywhere (on "
        "the toy model: 3% of the pixels change against 2%, docs/toy.md).",
        (("before", "a green square at the top"),
         ("AND :0.4", "a green square at the top AND a red shape :0.4"),
         ("AND_TOPK :0.4", "a green square at the top AND_TOPK a red shape :0.4")),
    ),
    Comparison(
        "AND_SALT", "AND_SALT",
        "AND adds two subjects' guidance everywhere; with AND_SALT each latent pixel follows the "
        "prompt that is most salient there (MagicFusion's claim: both subjects in one image). The map "
        "shows the split; the toy model still draws one object (docs/toy.md: 2% of 50 seeds show both).",
        (("before", "a red circle"),
         ("AND", "a red circle AND a blue triangle"),
         ("AND_SALT", "a red circle AND_SALT a blue triangle")),
    ),
    Comparison(
        "weights", "weights",
        "The weight of an AND part, from 0 to 1 (the seed's XYZ study). On the toy model the red "
        "circle takes a colour neither prompt names (green) from about 0.25 and gives way to a small "
        "green shape by 1: composition in its latent space, not a second object (docs/toy.md).",
        tuple((f":{w}", f"a red circle on the left AND a blue square on the right :{w}")
              for w in ("0", "0.25", "0.5", "0.75", "1")),
    ),
)

#: (file name, prompt) run with ``--model`` or ``--random``: the seed's AND_TOPK experiment and the
#: original README's examples.
PROMPTS = (
    ("topk-glasses-smile", examples.SEED_PROMPTS[4]),
    ("perp-castle", examples.README_PROMPTS[1]),
    ("nested-perp-salt", examples.README_NESTED),
)

# Colours of the SALT winner maps: the base, then each AND_SALT candidate in order.
_PALETTE = ((40, 40, 40), (230, 60, 60), (60, 200, 90), (70, 120, 240), (240, 200, 60), (200, 80, 220))
_KEYWORD = re.compile(r"\bAND(_PERP|_SALT|_TOPK)?\b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a diffusers checkpoint (path or hub id); default: the toy model")
    source.add_argument("--random", action="store_true",
                        help="the tiny random-weight pipeline of the unit tests (noise images)")
    parser.add_argument("--out", default="demo-out", help="folder for the PNGs (default: demo-out)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 20 toy, 12 otherwise)")
    parser.add_argument("--seed", type=int, default=1195978169, help="the first seed (default: the seed's, 1195978169)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: 5 toy, 7 otherwise")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))


def main(args: argparse.Namespace) -> int:
    import neutral_lang as nl

    toy = not (args.model or args.random)
    comparisons = TOY if toy else tuple(_from_prompt(name, prompt) for name, prompt in PROMPTS)
    steps = args.steps or (20 if toy else 12)
    scale = args.guidance_scale if args.guidance_scale is not None else (5.0 if toy else 7.0)
    seeds = [args.seed + i for i in range(4 if toy else 1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    _say("== lint and explain ==")
    for c in comparisons:
        prompt = c.panels[-1][1]
        _say(f"\n--- {c.name} ---\n{prompt}\n")
        diagnostics = nl.lint(prompt)
        for d in diagnostics:
            _say(f"  {d.code} {d.severity}: {d.message}")
        if not diagnostics:
            _say("  lint: clean")
        _say(nl.compile(prompt).explain())

    _say("\n== run ==")
    t0 = time.perf_counter()
    pipe, label = _pipeline(args, toy)
    _say(f"pipeline: {label} ({time.perf_counter() - t0:.1f} s to load)")
    _say(f"{steps} DDIM steps, guidance scale {scale}, seeds {seeds[0]}..{seeds[-1]}\n")
    for c in comparisons:
        t0 = time.perf_counter()
        figure, size = _figure(nl, pipe, c, seeds=seeds, steps=steps, scale=scale, args=args)
        path = out / f"{c.name}.png"
        # the composed prompt's A1111 infotext (first seed), as run and grid write it
        from .infotext import encode, sampler_name, save_png

        model = args.model or ("embedded tiny random-weight pipeline" if args.random else "neutral-lang toy model")
        save_png(figure, path, encode(c.panels[-1][1], steps=steps, sampler_name=sampler_name(pipe.scheduler),
                                      cfg_scale=scale, seed=seeds[0], width=size[0], height=size[1], model=model))
        _say(f"{path} ({time.perf_counter() - t0:.1f} s): {c.shows}")
    _say(f"\nwrote {len(comparisons)} PNGs to {out}/")
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _from_prompt(name: str, prompt: str) -> Comparison:
    """Base = the text before the prompt's first keyword; after = the whole prompt."""
    match = _KEYWORD.search(prompt)
    keyword = match.group(0) if match else "AND"
    base = prompt[: match.start()].strip() if match else prompt
    return Comparison(name, keyword, f"the base prompt, then the whole prompt with {keyword}",
                      (("before", base), ("after", prompt)))


def _pipeline(args, toy: bool):
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the small components trip optional-dependency notices

    dtype = getattr(torch, args.dtype)
    if args.model:
        from .backends.diffusers import load_pipeline

        return load_pipeline(args.model, device=args.device, dtype=dtype), args.model
    # Small models' kernels are far cheaper than waking more CPU threads.
    if args.device == "cpu":
        torch.set_num_threads(1)
    if toy:
        from . import toy as toy_model

        pipe, label = toy_model.pipeline(), f"the toy model ({toy_model.WEIGHTS}), trained by the project"
    else:
        from .backends.diffusers.tiny import sd_pipeline

        pipe, label = sd_pipeline(), "tiny Stable Diffusion pipeline, RANDOM weights (not a real model)"
    if args.device != "cpu" or dtype != torch.float32:
        pipe = pipe.to(args.device, dtype)
    return pipe, label


def _figure(nl, pipe, comparison: Comparison, *, seeds, steps: int, scale: float, args):
    """The base and composed prompts' images (one 2x2 grid of seeds per panel), their prompts as
    titles, and the guidance maps of the last panel's prompt for the first seed; and the size of
    one generated image."""
    import torch
    from PIL import Image, ImageDraw

    from .backends.torch.executor import Trace

    cell = 128 if len(seeds) > 1 else 256
    columns = 2 if len(seeds) > 1 else 1
    grid = cell * columns + 4 * (columns - 1)
    panels, trace = [], Trace()
    for i, (_, prompt) in enumerate(comparison.panels):
        kwargs = dict(num_inference_steps=steps, guidance_scale=scale, num_images_per_prompt=len(seeds),
                      generator=[torch.Generator(args.device).manual_seed(s) for s in seeds])
        if args.size:
            kwargs.update(height=args.size, width=args.size)
        last = i == len(comparison.panels) - 1
        images = nl.compile(prompt).run(pipe, trace=trace if last else None, **kwargs).images
        size = images[0].size
        tile = Image.new("RGB", (grid, grid), (255, 255, 255))
        for k, image in enumerate(images):
            tile.paste(image.resize((cell, cell), resample=Image.NEAREST),
                       ((k % columns) * (cell + 4), (k // columns) * (cell + 4)))
        panels.append(tile)

    title_font, label_font, text_font = _font(22), _font(16), _font(13)
    pad, wrap = 16, max(24, grid // 7)
    titles = [textwrap.wrap(prompt, wrap) for _, prompt in comparison.panels]
    title_h = 22 + 16 * max(len(t) for t in titles)
    width = pad + len(panels) * (grid + pad)
    shows = textwrap.wrap(comparison.shows, max(40, width // 7))
    head = 40 + 16 * len(shows)
    maps = _maps_section(trace, comparison, seeds[0], width - 2 * pad)
    height = head + title_h + grid + pad + (maps.height + pad if maps else 0)
    canvas = Image.new("RGB", (max(width, maps.width + 2 * pad if maps else 0), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), comparison.keyword, fill=(0, 0, 0), font=title_font)
    for i, line in enumerate(shows):
        draw.text((pad, 38 + 16 * i), line, fill=(60, 60, 60), font=text_font)
    for i, ((label, _), lines, tile) in enumerate(zip(comparison.panels, titles, panels)):
        x = pad + i * (grid + pad)
        draw.text((x, head), label, fill=(0, 0, 160), font=label_font)
        for j, line in enumerate(lines):
            draw.text((x, head + 20 + 16 * j), line, fill=(0, 0, 0), font=text_font)
        canvas.paste(tile, (x, head + title_h))
    if maps:
        canvas.paste(maps, (pad, head + title_h + grid + pad))
    return canvas, size


def _maps_section(trace, comparison: Comparison, seed: int, width: int):
    records = list(trace)
    if not records:
        return None
    steps = sorted({r.step for r in records})
    shown = sorted({steps[round(i * (len(steps) - 1) / 4)] for i in range(5)}) if len(steps) > 5 else steps
    label, prompt = comparison.panels[-1]
    return guidance_maps([r for r in records if r.step in shown], prompt, width=width,
                         title=f"What {comparison.keyword} did in '{label}' (seed {seed}, the first image), "
                               f"per 16x16 latent, at a few denoising steps:")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def guidance_maps(trace, prompt: str, *, tile: int = 96, title: str | None = None, width: int = 0):
    """The executor's trace as pictures (batch item 0): one row per traced plan step, one column
    per denoising step, a legend below.

    - SALT: which prompt each latent pixel follows (majority over channels): dark grey = the
      base, colours = the AND_SALT candidates in order;
    - TOPK: the share of channels AND_TOPK keeps at each pixel (white = all);
    - PERP: the size of the perpendicular component per pixel (L2 over channels, normalised per
      tile), with the share of the part's delta that AND_PERP removed as parallel.

    ``width``: the least width in pixels (to line up with a figure above).
    """
    import torch
    from PIL import Image, ImageDraw

    records = list(trace)
    steps = sorted({r.step for r in records})
    rows = sorted({(r.index, r.kind, r.text) for r in records})
    font, small = _font(14), _font(12)
    pad, left = 6, 130
    top = 26 if title else 0
    head = top + 22
    canvas = Image.new("RGB", (max(width, left + len(steps) * (tile + pad) + pad, 360),
                               head + len(rows) * (tile + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0), font=font)
    if not records:
        draw.text((pad, top + pad), "no AND_PERP / AND_SALT / AND_TOPK step in this prompt", fill=(0, 0, 0), font=font)
        return canvas
    legend = {
        "SALT": "SALT: which prompt each latent pixel follows. dark grey = the base prompt; red, green, blue = "
                "the 1st, 2nd, 3rd AND_SALT part.",
        "TOPK": "TOPK: brightness = share of channels AND_TOPK edits at that latent pixel (black = untouched).",
        "PERP": "PERP: brightness = size of what AND_PERP adds at that latent pixel; -N% = share of the part "
                "removed because the base prompt already has it.",
    }
    for c, step in enumerate(steps):
        draw.text((left + c * (tile + pad), top + 2), f"step {step}", fill=(0, 0, 0), font=font)
    by_key = {(r.step, r.index): r for r in records}
    for row, (index, kind, text) in enumerate(rows):
        y = head + row * (tile + pad)
        label = " ".join(text.split())
        draw.text((pad, y + 4), kind, fill=(0, 0, 0), font=font)
        for j, line in enumerate(textwrap.wrap(label, 16)[:4]):
            draw.text((pad, y + 24 + 15 * j), line, fill=(90, 90, 90), font=small)
        for c, step in enumerate(steps):
            record = by_key.get((step, index))
            if record is None:
                continue
            x = left + c * (tile + pad)
            picture, note = _tile(torch, Image, record)
            canvas.paste(picture.resize((tile, tile), resample=0), (x, y))
            if note:
                draw.text((x + 3, y + tile - 17), note, fill=(255, 255, 0), font=font)
    return _with_footer(canvas, [legend[k] for k in ("SALT", "TOPK", "PERP") if any(r[1] == k for r in rows)])


def _with_footer(canvas, lines: list[str]):
    from PIL import Image, ImageDraw

    font = _font(13)
    wrapped = [w for line in lines for w in textwrap.wrap(line, max(50, canvas.width // 7))]
    out = Image.new("RGB", (canvas.width, canvas.height + 17 * len(wrapped) + 6), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(wrapped):
        draw.text((6, canvas.height + 2 + 17 * i), line, fill=(0, 0, 0), font=font)
    return out


def _tile(torch, Image, record):
    data = record.data
    if record.kind == "SALT":
        winners = data["winners"][0]  # [C, H, W]
        n = int(winners.max().item()) + 1
        counts = torch.stack([(winners == i).sum(0) for i in range(max(n, 1))])
        majority = counts.argmax(0)
        rgb = torch.tensor(_PALETTE, dtype=torch.uint8)[majority.clamp(max=len(_PALETTE) - 1)]
        return Image.fromarray(rgb.numpy(), "RGB"), ""
    if record.kind == "TOPK":
        share = data["kept"][0].float().mean(0)
        gray = (share * 255).round().to(torch.uint8)
        note = "" if data.get("applied", True) else "off"
        return Image.fromarray(gray.numpy(), "L").convert("RGB"), note
    perp = data["perp"][0].float()
    size = perp.norm(dim=0)
    gray = (size / size.max().clamp_min(1e-12) * 255).round().to(torch.uint8)
    parallel = data["parallel"][0].float().norm()
    whole = (data["parallel"][0].float() + perp).norm().clamp_min(1e-12)
    return Image.fromarray(gray.numpy(), "L").convert("RGB"), f"-{100 * float(parallel / whole):.0f}%"


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neutral-lang demo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
