"""Parser benchmark: neutral_lang.parse against an original-style parser, in the same run.

    .venv/bin/python benchmarks/bench_parse.py [--quick]

Prints a table of median times and the ratio baseline / ours. Targets (issue #2): a typical
200-character prompt <= 100 us; 10^5 AND parts <= 2 s and <= 15x the time of 10^4; 10^4 levels
of nesting without RecursionError; the original's exponential case in milliseconds. Issue 11:
the typical prompt in at most 1.5x the original-style parser's time (ratio >= 0.67x). Issue 14:
the hostile shapes that were quadratic grow at most 15x for 10x the input.

Where the typical prompt's time goes is measured by ``--profile``: the same parse under
cProfile, the top functions by own time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline_parser  # noqa: E402

import neutral_lang as nl  # noqa: E402

TYPICAL = (
    "1girl, teen, blue hair, short hair, red eye, wearing T-shirts, outdoors, parkscape, "
    "detailed face AND_TOPK (glasses:1.3),(smile:1.3) :0.4 AND_PERP [monster AND_SALT house] :-1"
)


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def run_baseline(text: str, repeat: int) -> float | str:
    old = sys.getrecursionlimit()
    try:
        return median_time(lambda: baseline_parser.parse(text), repeat)
    except RecursionError:
        return "RecursionError"
    finally:
        sys.setrecursionlimit(old)


def profile_typical(repeat: int = 20000) -> None:
    """Print the functions where parsing the typical prompt spends its time (cProfile, own time)."""
    import cProfile
    import pstats

    nl.parse(TYPICAL)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        nl.parse(TYPICAL)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the slowest baseline rows")
    ap.add_argument("--profile", action="store_true", help="profile the typical prompt's parse and stop")
    args = ap.parse_args()
    if args.profile:
        profile_typical()
        return

    nl.parse("warm up")
    rows = []
    growth = []
    slowdown = {}  # case -> our time / the original-style parser's

    def row(name, text, repeat, target="", baseline=True, base_repeat=None):
        ours = median_time(lambda: nl.parse(text), repeat)
        base = run_baseline(text, base_repeat or repeat) if baseline else None
        ratio = (f"{base / ours:.2f}x" if base < ours else f"{base / ours:.1f}x") if isinstance(base, float) else "-"
        rows.append((name, len(text), fmt(ours), base if isinstance(base, str) else fmt(base), ratio, target))
        if isinstance(base, float):
            slowdown[name] = ours / base
        return ours

    row(f"typical prompt ({len(TYPICAL)} chars)", TYPICAL, 2000, "ours <= 100 us, ratio >= 0.67x")
    t4 = row("10^4 AND parts", " AND ".join(f"part {i}" for i in range(10**4)), 5)
    t5 = row("10^5 AND parts", " AND ".join(f"part {i}" for i in range(10**5)), 3,
             "ours <= 2 s", baseline=not args.quick, base_repeat=1)
    deep = 10**4
    row("10^4 nested groups", "a AND [" * deep + "b" + "]" * deep, 5, "no RecursionError")
    for n in (14, 16, 18) if not args.quick else (14,):
        row(f"'x AND ' + '[[ AND ' * {n}", "x AND " + "[[ AND " * n, 3, "ms" if n == 18 else "")
    row("'x AND ' + '[[ AND ' * 22", "x AND " + "[[ AND " * 22, 20,
        "ms (original: ~12 s)", baseline=False)
    # Hostile shapes (issue 14): each was quadratic or worse before; now linear, 10x input ~ 10x time.
    for name, make, sizes in (
        ("'[ AND' * n", lambda n: "[ AND" * n, (800, 8000)),
        ("'[a AND ' * n + 'b'", lambda n: "[a AND " * n + "b", (10**4, 10**5)),
        ("'AND(' * n", lambda n: "AND(" * n, (25_000, 250_000)),
    ):
        small, large = (row(f"{name}, n={n}", make(n), 3 if n == sizes[0] else 1, baseline=False) for n in sizes)
        growth.append((name, large / small))

    header = ("case", "chars", "neutral_lang", "original-style", "ratio", "target")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    typical = rows[0][0]
    print(f"\n{typical}: {slowdown[typical]:.2f}x the original-style parser's time (target <= 1.5x)")
    print(f"growth 10^4 -> 10^5 parts: {t5 / t4:.1f}x (target <= 15x)")
    for name, ratio in growth:
        print(f"growth {name}, 10x n: {ratio:.1f}x (target <= 15x)")


if __name__ == "__main__":
    main()
