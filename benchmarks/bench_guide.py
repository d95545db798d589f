"""Guidance combine time: our compiled plan vs an original-extension-style baseline, same run.

    .venv/bin/python benchmarks/bench_guide.py [--repeat N] [--device cpu] [--dtype float32]

For each prompt and latent size, both sides get the same inputs, prepared the way a runner has
them: ``uncond`` ``[B, C, H, W]`` and the model's predictions (ours: one ``[P, B, C, H, W]`` tensor
in ``Program.prompts`` order, a view of the batched model output; the baseline: a dict of text ->
``[B, C, H, W]``). Ours is timed including the (cached) ``compile`` call a runner makes per step.
Reported: median milliseconds per call (of this process's CPU time by default, so that other
processes on a shared machine do not count; ``--timer wall`` for elapsed time), and baseline / ours
measured interleaved in one run. Then cold compile (parse, lower, passes, plan; cache cleared each
time) and cached compile of a typical ~200-character prompt, in microseconds.

Targets (issue "Compiler core"): >= 5x on AND_SALT / nested prompts, >= 2x on simple ones; cold
compile <= 150 us, cached <= 5 us.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang import compiler  # noqa: E402

try:
    from benchmarks.baseline_original import combine as baseline  # noqa: E402
except ImportError:  # run as a script from inside benchmarks/
    from baseline_original import combine as baseline  # noqa: E402

README = (
    "magical tree forests, eternal city AND_PERP [electrical pole voyage AND_SALT small nocturne companion] "
    "AND_SALT [electrical tornado AND_SALT electric arcs, bzzz, sparks]"
)
CASES = [
    ("two leaves", "a AND b", "simple"),
    ("perp", "castle AND_PERP monster :-1", "simple"),
    ("topk", "a AND_TOPK b :0.4", "simple"),
    ("README nested", README, "salt"),
]
SHAPES = [(4, 64, 64), (4, 128, 128)]
BATCH = 4
TYPICAL = (
    "1girl, teen, blue hair, short hair, red eye, wearing T-shirts, outdoors, parkscape AND_TOPK "
    "(glasses:1.3),(smile:1.3) :0.4 AND_PERP [monster, ugly AND_SALT blurry, lowres] :-0.5 AND masterpiece :0.8"
)
TARGET = {"simple": 2.0, "salt": 5.0}


CLOCK = time.process_time  # set by --timer


def _median_us(fn, repeat: int) -> float:
    times = []
    clock = CLOCK
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times) * 1e6


def bench_guide(repeat: int, device: str, dtype: torch.dtype) -> list[tuple]:
    rows = []
    for name, text, kind in CASES:
        tree = nl.parse(text)
        prog = nl.compile(text)
        texts = sorted({leaf.text for leaf in nl.ast.leaves(tree)})
        for shape in SHAPES:
            gen = torch.Generator().manual_seed(0)
            u = torch.randn(BATCH, *shape, generator=gen).to(device, dtype)
            batched = torch.randn(len(texts), BATCH, *shape, generator=gen).to(device, dtype)
            by_text = dict(zip(texts, batched))
            conds = torch.stack([by_text[t] for t in prog.prompts])

            def ours():
                nl.compile(text).guide(u, conds, 7.5)

            def base():
                baseline(tree, u, by_text, 7.5)

            # Same result, up to rare saliency near-ties that float32 rounding decides either way.
            far = (nl.compile(text).guide(u, conds, 7.5) - baseline(tree, u, by_text, 7.5)).abs() > 1e-3
            assert far.float().mean() < 1e-3, f"{name}: ours and the baseline disagree"
            for _ in range(3):
                ours(), base()
            t_ours, t_base = [], []
            for _ in range(5):  # interleave so that both see the same machine state
                t_ours.append(_median_us(ours, repeat))
                t_base.append(_median_us(base, max(1, repeat // 4)))
            mo, mb = statistics.median(t_ours), statistics.median(t_base)
            rows.append((name, "x".join(map(str, shape)), mb / 1e3, mo / 1e3, mb / mo, TARGET[kind]))
    return rows


def bench_compile(repeat: int) -> tuple[float, float, float]:
    def cold():
        compiler._CACHE.clear()
        nl.compile(TYPICAL)

    def parse_only():
        nl.parse(TYPICAL)

    cold()
    t_cold = statistics.median(_median_us(cold, repeat) for _ in range(5))
    t_parse = statistics.median(_median_us(parse_only, repeat) for _ in range(5))
    nl.compile(TYPICAL)
    t_cached = statistics.median(_median_us(lambda: nl.compile(TYPICAL), repeat * 10) for _ in range(5))
    return t_cold, t_parse, t_cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable timings on a shared machine; both sides use it)")
    parser.add_argument("--timer", choices=["cpu", "wall"], default="cpu",
                        help="cpu: this process's CPU time (default; other processes' turns on a busy machine "
                             "do not count); wall: elapsed time")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.timer == "cpu" else time.perf_counter

    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"{args.timer} time, median of {args.repeat} calls (ours) and {max(1, args.repeat // 4)} (baseline), 5 rounds")
    print(f"{'prompt':<16}{'latent':>12}{'baseline ms':>14}{'ours ms':>10}{'speed-up':>10}{'target':>8}")
    ok = True
    for name, shape, mb, mo, ratio, target in bench_guide(args.repeat, args.device, dtype):
        met = ratio >= target
        ok &= met
        print(f"{name:<16}{shape:>12}{mb:>14.3f}{mo:>10.3f}{ratio:>9.1f}x{target:>7.0f}x{'' if met else '  (missed)'}")
    cold, parse, cached = bench_compile(args.repeat * 5)
    print(f"\ncompile of a {len(TYPICAL)}-character prompt: cold {cold:.1f} us (parse {parse:.1f} us of it, "
          f"target <= 150), cached {cached:.2f} us (target <= 5)")
    return 0 if ok and cold <= 150 and cached <= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
