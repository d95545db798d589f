"""What `run(pipe)` costs per step on the transformer families, against the plain pipeline.

    .venv/bin/python benchmarks/bench_families.py [--size 64] [--steps 10] [--repeats 3]

Tiny random-weight pipelines (neutral_lang.backends.diffusers.tiny_families), CPU, one torch
thread, CPU time of the calling thread (``time.thread_time``), runs interleaved, medians. For
each family (SD3, Flux.1 without and with true CFG, PixArt-Sigma, AuraFlow):

1. Outside the denoiser: the time of a step (between two step callbacks) minus the time spent
   inside the transformer's ``forward`` (all its calls in that step), for the plain pipeline, for
   a one-part program through ``run(pipe)`` (the ratio against plain should be <= 1.2: hooks,
   input gathering, guidance arithmetic), and for a three-part program.
2. Chunked against unchunked: the whole step of the three-part program with ``max_batch=2``
   (the denoiser batch split in calls of at most 2 samples) against one call.

The tiny transformers are cheap, so per-step overheads weigh far more here than with real
weights, where one transformer call costs 100x more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neutral_lang.backends.diffusers import tiny_families  # noqa: E402

import neutral_lang as nl  # noqa: E402

ONE = "a castle, glasses"
MANY = "a castle AND glasses :0.5 AND_PERP dog :-0.3"

FAMILIES = {
    "SD3": (tiny_families.sd3_pipeline, dict(guidance_scale=5.0)),
    "Flux.1 (distilled)": (tiny_families.flux_pipeline, dict(guidance_scale=3.5, max_sequence_length=64)),
    "Flux.1 (true CFG)": (
        tiny_families.flux_pipeline,
        dict(guidance_scale=3.5, max_sequence_length=64, true_cfg_scale=4.0, negative_prompt="blurry"),
    ),
    "PixArt-Sigma": (tiny_families.pixart_sigma_pipeline, dict(use_resolution_binning=False, clean_caption=False)),
    "AuraFlow": (tiny_families.auraflow_pipeline, dict(max_sequence_length=64)),
}


def clock() -> float:
    return time.thread_time()


class StepClock:
    """Per-step CPU time between step callbacks, and the time inside the denoiser's forward."""

    def __init__(self, pipe):
        self.marks: list[float] = []
        self.inside: list[float] = [0.0]
        self.module = pipe.transformer
        forward = self.module.forward

        def timed_forward(*args, **kwargs):
            start = clock()
            try:
                return forward(*args, **kwargs)
            finally:
                self.inside[-1] += clock() - start

        self.module.forward = timed_forward  # an instance attribute: inside run()'s hooks

    def callback(self, *args):
        self.marks.append(clock())
        self.inside.append(0.0)
        return args[-1] if isinstance(args[-1], dict) else None

    def close(self) -> None:
        del self.module.forward

    def per_step(self) -> tuple[float, float]:
        """Median (whole step, outside the denoiser) over steps 1.. (step 0 carries setup)."""
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        inside = self.inside[1 : len(steps) + 1]
        return statistics.median(steps), statistics.median(s - i for s, i in zip(steps, inside))


def measure(pipe, kwargs: dict, prompt: str | None, max_batch: int | None = None) -> tuple[float, float]:
    """(step, outside) for one run: plain when ``prompt`` is None, else ``run()`` of ``prompt``."""
    clock_ = StepClock(pipe)
    callback = {"callback": clock_.callback, "callback_steps": 1} if "PixArt" in type(pipe).__name__ else {
        "callback_on_step_end": clock_.callback
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if prompt is None:
                pipe(ONE, generator=torch.Generator().manual_seed(0), **kwargs, **callback)
            else:
                run_kwargs = dict(kwargs)
                negative = run_kwargs.pop("negative_prompt", None)
                nl.compile(prompt).run(
                    pipe,
                    negative_prompt=negative,
                    max_batch=max_batch,
                    generator=torch.Generator().manual_seed(0),
                    **run_kwargs,
                    **callback,
                )
    finally:
        clock_.close()
    return clock_.per_step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image height and width in pixels")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    print(f"CPU time per step (ms, median of {args.repeats} interleaved runs, steps 1..{args.steps - 1}), "
          f"{args.size}x{args.size} px, one thread.\n")
    print("| family | plain: outside | one-part: outside | ratio | 3-part: outside | 3-part step | "
          "max_batch=2 step | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (build, extra) in FAMILIES.items():
        pipe = build()
        kwargs = dict(num_inference_steps=args.steps, height=args.size, width=args.size,
                      output_type="latent", **extra)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in ("plain", "one", "many", "chunked")}
        measure(pipe, kwargs, ONE)  # warm-up
        for _ in range(args.repeats):
            results["plain"].append(measure(pipe, kwargs, None))
            results["one"].append(measure(pipe, kwargs, ONE))
            results["many"].append(measure(pipe, kwargs, MANY))
            results["chunked"].append(measure(pipe, kwargs, MANY, max_batch=2))
        med = {k: tuple(1000 * statistics.median(r[i] for r in v) for i in (0, 1)) for k, v in results.items()}
        print(
            f"| {name} | {med['plain'][1]:.2f} | {med['one'][1]:.2f} | {med['one'][1] / med['plain'][1]:.2f} | "
            f"{med['many'][1]:.2f} | {med['many'][0]:.1f} | {med['chunked'][0]:.1f} | "
            f"{med['chunked'][0] / med['many'][0]:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
