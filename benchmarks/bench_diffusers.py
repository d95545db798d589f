"""What `compile(prompt).run(pipe)` costs on a diffusers pipeline, against diffusers itself.

    .venv/bin/python benchmarks/bench_diffusers.py [--size 128] [--steps 20] [--repeats 5]

Tiny random-weight SD components (neutral_lang.backends.diffusers.tiny), CPU, one torch thread. Times are CPU
time of the calling thread (``time.thread_time``: with one torch thread all the work runs there),
so other processes on a shared machine disturb them little; the runs are interleaved. Tables:

1. End to end: `a castle AND_TOPK(k=0.1, per_channel=1, start=10, momentum=0.1, beta=0.4)
   glasses :w` through `run(pipe)` against diffusers' `SemanticStableDiffusionPipeline` making
   the same edit (both evaluate 3 samples per step), and the plain pipeline (2 samples) for scale.
   Median CPU time; the ratio run / SEGA should be <= 1.05.
2. Per step: the time spent outside the UNet's own layers (hooks, guidance, scheduler, pipeline
   bookkeeping), measured between consecutive `callback_on_step_end` calls minus the time from
   the UNet's `conv_in` to its `conv_out`; and the guidance arithmetic alone: `program.guide` for
   the SEGA prompt against a plain CFG combination `u + s * (c - u)` on one item.
3. Per family (SD, SDXL), per step outside the UNet: the plain pipeline against `run(pipe)` for a
   one-part prompt (as users run it: unhooked; and forced through the hooks with a `max_batch`
   larger than the batch, as a scheduled one-part prompt runs), and a three-part prompt for scale. Target: one-part <= 1.2x the plain pipeline.
4. `max_batch`: a three-part prompt with 2 images per prompt (8 UNet samples per step) run whole
   and in calls of at most 2 and 4 samples, median CPU seconds end to end.

The tiny UNet is cheap, so per-step overheads weigh far more here than with real weights, where
one UNet call costs 10-100x more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neutral_lang.backends.diffusers import tiny as tiny_pipes  # noqa: E402
from diffusers import SemanticStableDiffusionPipeline  # noqa: E402

import neutral_lang as nl  # noqa: E402

SCALE, EDIT_SCALE, WARMUP = 7.5, 5.0, 10
PROMPT = (
    f"a castle AND_TOPK(k=0.1, per_channel=1, start={WARMUP}, momentum=0.1, beta=0.4) glasses "
    f":{EDIT_SCALE / SCALE!r}"
)


class StepClock:
    """Per-step wall time (between step callbacks) and UNet body time (conv_in -> conv_out)."""

    def __init__(self, pipe):
        self.unet, self.steps, self.marks = [], [], []
        self._start = None
        unet = pipe.unet
        self.handles = [
            unet.conv_in.register_forward_pre_hook(lambda *a: self._begin()),
            unet.conv_out.register_forward_hook(lambda *a: self._end()),
        ]

    def _begin(self):
        self._start = clock()

    def _end(self):
        self.unet.append(clock() - self._start)

    def callback(self, pipe, step, timestep, tensors):
        self.marks.append(clock())
        return tensors

    def close(self):
        for h in self.handles:
            h.remove()

    def outside_unet(self) -> float:
        """Median per-step time outside the UNet's layers, over steps 1.. (step 0 has setup)."""
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return statistics.median(s - u for s, u in zip(steps, self.unet[1:]))


def clock() -> float:
    return time.thread_time()


def interleaved(runs: dict, repeats: int) -> dict[str, float]:
    """Median CPU seconds of each run, the runs taking turns (after one warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image height and width in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", default="1234", help="which tables to print, e.g. 34")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "1" not in args.tables and "2" not in args.tables:
        if "3" in args.tables:
            families(args)
        if "4" in args.tables:
            chunking(tiny_pipes.sd_pipeline(), args)
        return

    sd = tiny_pipes.sd_pipeline()
    sega = SemanticStableDiffusionPipeline(**{k: v for k, v in sd.components.items() if k != "image_encoder"})
    sega.set_progress_bar_config(disable=True)
    program = nl.compile(PROMPT)
    common = {"num_inference_steps": args.steps, "guidance_scale": SCALE, "height": args.size, "width": args.size, "output_type": "latent"}

    def ours(**extra):
        return program.run(sd, generator=torch.Generator().manual_seed(0), **common, **extra)

    def semantic(**extra):
        return sega(
            "a castle", generator=torch.Generator().manual_seed(0), editing_prompt=["glasses"],
            edit_guidance_scale=EDIT_SCALE, edit_threshold=0.9, edit_warmup_steps=WARMUP,
            edit_momentum_scale=0.1, edit_mom_beta=0.4, **common, **extra,
        )

    def plain(**extra):
        return sd("a castle", generator=torch.Generator().manual_seed(0), **common, **extra)

    runs = {"run(pipe), SEGA prompt": ours, "SemanticStableDiffusionPipeline": semantic, "plain CFG pipeline": plain}
    cpu = interleaved(runs, args.repeats)
    reference = cpu["SemanticStableDiffusionPipeline"]
    print(f"End to end: {args.size}x{args.size}, {args.steps} steps, CPU seconds, 1 thread, median of {args.repeats}")
    print(f"{'':36} {'seconds':>9} {'vs SEGA':>8}")
    for name, seconds in cpu.items():
        print(f"{name:36} {seconds:9.3f} {seconds / reference:8.3f}")

    print()
    print("Per step (median over steps 1.., CPU ms)")
    print(f"{'':36} {'UNet body':>9} {'outside':>8}")
    for name, fn in runs.items():
        timer = StepClock(sd)
        try:
            if fn is semantic:  # SEGA has no callback_on_step_end: time its scheduler steps instead
                original = sega.scheduler.step
                sega.scheduler.step = lambda *a, **k: (timer.callback(None, 0, 0, None), original(*a, **k))[1]
                try:
                    fn()
                finally:
                    del sega.scheduler.step
            else:
                fn(callback_on_step_end=timer.callback)
        finally:
            timer.close()
        print(f"{name:36} {statistics.median(timer.unet[1:]) * 1e3:9.2f} {timer.outside_unet() * 1e3:8.2f}")

    guidance_arithmetic(program, args)
    families(args)
    chunking(sd, args)


def per_step_outside(pipe, fn) -> float:
    """Median CPU ms per step outside the UNet's layers for one call of ``fn(callback)``."""
    timer = StepClock(pipe)
    try:
        fn(timer.callback)
    finally:
        timer.close()
    return timer.outside_unet() * 1e3


def families(args) -> None:
    """Table 3: per-step cost outside the UNet, run(pipe) against the plain pipeline, SD and SDXL."""
    print()
    print(f"Per step outside the UNet, by family ({args.size}x{args.size}, {args.steps} steps, CPU ms, median of {args.repeats} runs)")
    print(f"{'':14} {'plain':>7} {'1-part':>7} {'ratio':>6} {'hooked':>7} {'ratio':>6} {'3-part':>7} {'ratio':>6}")
    common = {"num_inference_steps": args.steps, "guidance_scale": SCALE, "height": args.size, "width": args.size, "output_type": "latent"}
    one, three = nl.compile("a castle"), nl.compile("a castle AND_PERP a monster :-1 AND glasses :0.5")
    for name, build in (("SD 1.x/2.x", tiny_pipes.sd_pipeline), ("SDXL", tiny_pipes.sdxl_pipeline)):
        pipe = build()
        runs = {
            "plain": lambda cb: pipe("a castle", callback_on_step_end=cb, **common),
            "one": lambda cb: one.run(pipe, callback_on_step_end=cb, **common),
            # max_batch larger than any batch: the hook path, with nothing split
            "hooked": lambda cb: one.run(pipe, callback_on_step_end=cb, max_batch=10**6, **common),
            "three": lambda cb: three.run(pipe, callback_on_step_end=cb, **common),
        }
        ms = {key: [] for key in runs}
        for fn in runs.values():
            per_step_outside(pipe, fn)  # warm-up
        for _ in range(args.repeats):
            for key, fn in runs.items():
                ms[key].append(per_step_outside(pipe, fn))
        m = {key: statistics.median(v) for key, v in ms.items()}
        base = m["plain"]
        print(
            f"{name:14} {base:7.2f} {m['one']:7.2f} {m['one'] / base:6.2f} {m['hooked']:7.2f} "
            f"{m['hooked'] / base:6.2f} {m['three']:7.2f} {m['three'] / base:6.2f}"
        )


def chunking(sd, args) -> None:
    """Table 4: max_batch against the whole batch, end to end."""
    program = nl.compile("a castle AND_PERP a monster :-1 AND glasses :0.5")
    common = {"num_inference_steps": args.steps, "guidance_scale": SCALE, "height": args.size, "width": args.size,
              "output_type": "latent", "num_images_per_prompt": 2}

    def with_max(n):
        return lambda: program.run(sd, generator=torch.Generator().manual_seed(0), max_batch=n, **common)

    cpu = interleaved({"whole batch (8 samples)": with_max(None), "max_batch=4": with_max(4), "max_batch=2": with_max(2)}, args.repeats)
    whole = cpu["whole batch (8 samples)"]
    print()
    print(f"max_batch: 3-part prompt, 2 images ({args.size}x{args.size}, {args.steps} steps, CPU seconds, median of {args.repeats})")
    print(f"{'':36} {'seconds':>9} {'vs whole':>8}")
    for name, seconds in cpu.items():
        print(f"{name:36} {seconds:9.3f} {seconds / whole:8.3f}")


def guidance_arithmetic(program, args) -> None:
    latent = args.size // 2  # the tiny VAE downsamples by 2
    u, c, e = torch.randn(3, 1, 4, latent, latent, generator=torch.Generator().manual_seed(0))
    conds = torch.stack([c, e])
    state = program.new_state()
    step = WARMUP + 1
    program.guide(u, conds, SCALE, step=step, num_steps=args.steps, state=state)
    n = 200
    start = clock()
    for _ in range(n):
        program.guide(u, conds, SCALE, step=step, num_steps=args.steps, state=state)
    guide = (clock() - start) / n
    start = clock()
    for _ in range(n):
        u + SCALE * (c - u)
    cfg = (clock() - start) / n
    print()
    print(f"Guidance arithmetic alone, one item [1, 4, {latent}, {latent}] (mean of {n}, CPU ms)")
    print(f"{'program.guide (SEGA prompt, in window)':36} {guide * 1e3:9.3f}")
    print(f"{'u + s * (c - u)':36} {cfg * 1e3:9.3f}")


if __name__ == "__main__":
    main()
