"""``make demo``: lint, explain and run the seed's and the original README's prompts, and draw
what each keyword did.

Offline by default: the pipeline is the *embedded default*, a tiny Stable Diffusion pipeline with
random weights built in code (its images are noise-like; they show the machinery, not art).
``--model PATH_OR_ID`` runs the same on a real checkpoint. For every prompt the demo writes
``<name>.png`` (the image) and ``<name>-guidance.png`` (the guidance maps from the executor's
trace: per step, which latent pixels each AND_SALT part wins, where AND_TOPK acts, how large the
AND_PERP component is).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import examples

#: (file name, prompt): the seed's AND_TOPK experiment and the original README's examples.
PROMPTS = (
    ("topk-glasses-smile", examples.SEED_PROMPTS[4]),
    ("perp-castle", examples.README_PROMPTS[1]),
    ("nested-perp-salt", examples.README_NESTED),
)

# Colours of the SALT winner maps: the base, then each AND_SALT candidate in order.
_PALETTE = ((40, 40, 40), (230, 60, 60), (60, 200, 90), (70, 120, 240), (240, 200, 60), (200, 80, 220))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a diffusers checkpoint (path or hub id); default: the embedded tiny pipeline")
    parser.add_argument("--out", default="demo-out", help="folder for the PNGs (default: demo-out)")
    parser.add_argument("--steps", type=int, default=12, help="denoising steps (default: 12)")
    parser.add_argument("--seed", type=int, default=1195978169, help="the seed's seed (default: 1195978169)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, default=7.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))


def main(args: argparse.Namespace) -> int:
    import neutral_lang as nl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _say("== lint and explain ==")
    for name, prompt in PROMPTS:
        _say(f"\n--- {name} ---\n{prompt}\n")
        diagnostics = nl.lint(prompt)
        if diagnostics:
            for d in diagnostics:
                _say(f"  {d.code} {d.severity}: {d.message}")
        else:
            _say("  lint: clean")
        _say(nl.compile(prompt).explain())

    _say("\n== run ==")
    t0 = time.perf_counter()
    pipe, label = _pipeline(args)
    _say(f"pipeline: {label} ({time.perf_counter() - t0:.1f} s to build)")
    for name, prompt in PROMPTS:
        image_path, maps_path, seconds = _run_one(nl, pipe, name, prompt, args, out)
        _say(f"{name}: {seconds:.1f} s -> {image_path}, {maps_path}")
    _say(f"\nwrote {2 * len(PROMPTS)} PNGs to {out}/")
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _pipeline(args):
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the tiny components trip optional-dependency notices

    from .backends.diffusers import load_pipeline

    dtype = getattr(torch, args.dtype)
    if args.model:
        pipe = load_pipeline(args.model, device=args.device, dtype=dtype)
        return pipe, args.model
    from .backends.diffusers.tiny import sd_pipeline

    # The tiny models' kernels are far smaller than the cost of waking more CPU threads.
    if args.device == "cpu":
        torch.set_num_threads(1)
    pipe = sd_pipeline()
    if args.device != "cpu" or dtype != torch.float32:
        pipe = pipe.to(args.device, dtype)
    pipe.set_progress_bar_config(disable=False, leave=False)
    return pipe, "embedded default: tiny Stable Diffusion pipeline, RANDOM weights (not a real model)"


def _run_one(nl, pipe, name: str, prompt: str, args, out: Path):
    import torch

    from .backends.torch.executor import Trace

    trace = Trace()
    kwargs = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                  generator=torch.Generator(args.device).manual_seed(args.seed))
    if args.size:
        kwargs.update(height=args.size, width=args.size)
    t0 = time.perf_counter()
    image = nl.compile(prompt).run(pipe, trace=trace, **kwargs).images[0]
    seconds = time.perf_counter() - t0
    image_path = out / f"{name}.png"
    from .infotext import encode, sampler_name, save_png

    parameters = encode(prompt, steps=args.steps, sampler_name=sampler_name(pipe.scheduler),
                        cfg_scale=args.guidance_scale, seed=args.seed, width=image.width, height=image.height,
                        model=args.model or "embedded tiny random-weight pipeline")
    save_png(image.resize((max(256, image.width), max(256, image.height)), resample=0), image_path, parameters)
    maps_path = out / f"{name}-guidance.png"
    guidance_maps(trace, prompt).save(maps_path)
    return image_path, maps_path, seconds


def guidance_maps(trace, prompt: str, *, tile: int = 96):
    """One row per denoising step, one column per traced plan step (batch item 0):

    - SALT: the winner of each latent pixel (majority over channels): grey = the base, colours =
      the AND_SALT candidates in order;
    - TOPK: the share of channels AND_TOPK keeps at each pixel (white = all);
    - PERP: the size of the perpendicular component per pixel (L2 over channels, normalised per
      tile), with the share of the part's delta that AND_PERP removed as parallel.
    """
    import torch
    from PIL import Image, ImageDraw

    records = list(trace)
    steps = sorted({r.step for r in records})
    columns = sorted({(r.index, r.kind, r.text) for r in records})
    pad, head = 4, 34
    width = pad + len(columns) * (tile + pad) + 60
    height = head + len(steps) * (tile + pad) + pad
    canvas = Image.new("RGB", (max(width, 320), max(height, 80)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if not records:
        draw.text((pad, pad), "no AND_PERP / AND_SALT / AND_TOPK step in this prompt", fill=(0, 0, 0))
        return canvas
    legend = {
        "SALT": "SALT: grey = base wins, red/green/blue = 1st/2nd/3rd AND_SALT part wins",
        "TOPK": "TOPK: brightness = share of channels AND_TOPK edits",
        "PERP": "PERP: brightness = size of the perpendicular part; -N% = share removed as parallel",
    }
    notes = [legend[k] for k in ("SALT", "TOPK", "PERP") if any(kind == k for _, kind, _ in columns)]
    canvas = _with_footer(canvas, notes)
    draw = ImageDraw.Draw(canvas)
    for c, (_, kind, text) in enumerate(columns):
        x = pad + c * (tile + pad)
        label = " ".join(text.split())
        draw.text((x, 2), kind, fill=(0, 0, 0))
        draw.text((x, 16), label[:16] + ("..." if len(label) > 16 else ""), fill=(90, 90, 90))
    by_key = {(r.step, r.index): r for r in records}
    for row, step in enumerate(steps):
        y = head + row * (tile + pad)
        draw.text((pad + len(columns) * (tile + pad), y + tile // 2 - 6), f"step {step}", fill=(0, 0, 0))
        for c, (index, kind, _) in enumerate(columns):
            record = by_key.get((step, index))
            if record is None:
                continue
            x = pad + c * (tile + pad)
            picture, note = _tile(torch, Image, record)
            canvas.paste(picture.resize((tile, tile), resample=0), (x, y))
            if note:
                draw.text((x + 2, y + tile - 12), note, fill=(255, 255, 0))
    return canvas


def _with_footer(canvas, lines: list[str]):
    from PIL import Image, ImageDraw

    width = max(canvas.width, 8 + 6 * max(len(line) for line in lines))
    out = Image.new("RGB", (width, canvas.height + 14 * len(lines) + 6), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, canvas.height + 2 + 14 * i), line, fill=(0, 0, 0))
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
