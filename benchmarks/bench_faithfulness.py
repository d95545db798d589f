"""Faithfulness of the toy model and of each keyword on it: does the image show what was asked?

    .venv/bin/python benchmarks/bench_faithfulness.py [--seeds 50] [--steps 20] [--only NAME]

The shipped toy pipeline (or ``--model PATH``), CPU, one torch thread. First the evaluator's own
accuracy: on exact renders, and on the same renders passed through the model's VAE (encode, then
decode: the blur and colour drift of the model's own decoder). Then every experiment of
``neutral_lang.toy.experiments``: for each condition, the share of images (over ``--seeds``
seeds, split over ``--variants`` random subjects) in which the evaluator finds what the metric
names; the base condition, measured in the same run, is the baseline each keyword is read against.
Prints markdown tables (the ones in ``docs/toy.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neutral_lang import toy  # noqa: E402
from neutral_lang.toy import evaluate, experiments, world  # noqa: E402


def evaluator_rows(pipe, count: int) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for objects in (1, 2):
        rng = np.random.default_rng(4242 + objects)
        scenes = [world.sample_scene(rng, count=objects) for _ in range(count)]
        exact = [world.render(s) for s in scenes]
        pixels = torch.from_numpy(np.stack(exact)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            vae = pipe.vae
            decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
        through_vae = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for label, images in (("exact renders", exact), ("through the VAE", through_vae)):
            totals: dict[str, float] = {}
            for scene, image in zip(scenes, images):
                for k, v in evaluate.score(scene, evaluate.detect(image)).items():
                    totals[k] = totals.get(k, 0.0) + v
            rows.append((f"{label}, {objects} object{'s' * (objects > 1)}", {k: v / count for k, v in totals.items()}))
    return rows


def table(rows: list[tuple[str, str, dict[str, float]]], first: str) -> str:
    metrics = list(dict.fromkeys(k for *_, m in rows for k in m))
    lines = [f"| {first} | prompt (first subject) | " + " | ".join(metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for label, example, values in rows:
        cells = [f"{100 * values[m]:.0f}%" if m in values else "" for m in metrics]
        lines.append(f"| {label} | `{example}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a pipeline folder (default: the shipped toy model)")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--variants", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--evaluator-scenes", type=int, default=200)
    parser.add_argument("--only", choices=[e.name for e in experiments.EXPERIMENTS], action="append")
    args = parser.parse_args()

    torch.set_num_threads(1)
    pipe = toy.pipeline(args.model)
    settings = experiments.Settings(seeds=args.seeds, variants=args.variants, steps=args.steps,
                                    guidance_scale=args.guidance_scale)
    print(f"model: {args.model or toy.WEIGHTS}; {args.seeds} seeds, {args.variants} subjects, "
          f"{args.steps} DDIM steps, guidance scale {args.guidance_scale}\n", flush=True)

    if not args.only:
        t0 = time.perf_counter()
        rows = evaluator_rows(pipe, args.evaluator_scenes)
        print(f"### The evaluator ({args.evaluator_scenes} scenes each, {time.perf_counter() - t0:.0f} s)\n")
        print(table([(label, "", values) for label, values in rows], "images").replace("| `` ", "| ") + "\n", flush=True)

    for experiment in experiments.EXPERIMENTS:
        if args.only and experiment.name not in args.only:
            continue
        t0 = time.perf_counter()
        rows = experiment.run(pipe, settings)
        print(f"### {experiment.name} ({rows[0].images} images per condition, {time.perf_counter() - t0:.0f} s)\n")
        print(f"Claim: {experiment.claim}.\n")
        print(table([(r.condition, r.example, r.metrics) for r in rows], "condition") + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
