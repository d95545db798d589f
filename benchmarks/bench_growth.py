"""Growth on hostile input: time per operation at 10^4, 10^5, 10^6 characters and nesting depth
10^3, 10^4, 10^5, with the ratio per 10x (linear is ~10; the target is <= 15).

    .venv/bin/python benchmarks/bench_growth.py [--budget 60] [--only lint,compile] [--shapes colons]

Operations: ``parse`` (lenient), ``format``, ``lint``, ``compile`` (cache cleared), ``explain``
(of a compiled program; the output size is shown too), ``schedule`` (``emphasis.schedule(text,
20)``, what ``run()`` does for every text), ``emphasis`` (``emphasis.parse(text)``, what the text
encoder reads for every text) and ``cli`` (``neutral-lang lint FILE`` in a subprocess,
start-up included). Shapes: a plain prompt, and the adversarial shapes of the hostile-input issue:
runs of unclosed ``[ AND``, of ``AND(``, of colons, of ``:nan`` weights, of unclosed groups, of
A1111 brackets ``[b] ``, of A1111 prompt edits and alternations, of edits after a stray ``[``,
an edit followed by stray ``]``, 479 unclosed ``(`` before ``a[b]`` runs and 479 pairs around
them (the most brackets ``emphasis.parse`` multiplies through), unclosed ``(a`` runs (refused past 480), groups nested ``depth`` deep, and prompt edits nested ``depth`` deep.

Each cell runs in a fresh subprocess with a time limit and is timed by CPU time (the child's own,
so other processes on a shared machine do not count; the ``cli`` cell counts the CLI's CPU time).
A cell is skipped, with a note, when the previous size took so long that ten times as much would
exceed ``--budget`` seconds; a cell is limited to three times the budget in CPU seconds, and one
that hits the limit is reported as such. Exit status 0 when
every measured ratio is <= 15.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 15.0


def _repeat(unit: str, size: int) -> str:
    return unit * max(1, size // len(unit))


#: name -> (kind, text of a given size). "chars" sizes are characters, "depth" sizes nesting levels.
SHAPES = {
    "plain": ("chars", lambda n: _repeat("a AND ", n)),
    "unclosed [ AND": ("chars", lambda n: _repeat("[ AND", n)),
    "AND(": ("chars", lambda n: _repeat("AND(", n)),
    "colons": ("chars", lambda n: ":" * n),
    ":nan weights": ("chars", lambda n: _repeat("a:nan AND ", n)),
    "unclosed groups": ("chars", lambda n: _repeat("[a AND ", n) + "b"),
    "A1111 [b]": ("chars", lambda n: _repeat("[b] ", n)),
    "A1111 edits": ("chars", lambda n: _repeat("[a:b:1] [c|d] ", n)),
    "stray [ + edits": ("chars", lambda n: _repeat("[ [a:b:1] ", n)),
    "edit + stray ]": ("chars", lambda n: "[a:1]" + "]" * (n - 5)),
    "479 open + [b]": ("chars", lambda n: "(" * 479 + _repeat("a[b]", n - 479)),
    "479 around [b]": ("chars", lambda n: "(" * 479 + _repeat("a[b]", n - 958) + ")" * 479),
    "unclosed (a": ("chars", lambda n: _repeat("(a", n)),
    "deep edits": ("depth", lambda d: "[a:" * d + "b" + ":1]" * d),
    "nested groups": ("depth", lambda d: "[a AND " * d + "b" + "]" * d),
}
SIZES = {"chars": (10**4, 10**5, 10**6), "depth": (10**3, 10**4, 10**5)}
OPS = ("parse", "format", "lint", "compile", "explain", "schedule", "emphasis", "cli")


# ---------------------------------------------------------------------------------------------
# One cell, in a child process


def _cell(op: str, shape: str, size: int) -> dict:
    sys.setrecursionlimit(10**4)  # what a user's process has, a little raised; no code path may need more
    text = SHAPES[shape][1](size)
    info: dict = {}
    if op == "cli":
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "prompt.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run([sys.executable, "-m", "neutral_lang", "lint", path],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            info["exit"] = done.returncode
            info["output"] = len(done.stdout) + len(done.stderr)
            return {"seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), **info}
    import neutral_lang as nl
    from neutral_lang import compiler, emphasis

    if op in ("format", "explain"):  # what they take as input is made outside the timing
        try:
            prepared = nl.parse(text) if op == "format" else nl.compile(text)
        except nl.ParseError as error:
            return {"error": f"n/a: the text does not parse ({type(error).__name__})"}
    nl.parse("a AND b")  # build the parser tables outside the timing
    start = time.process_time()
    try:
        if op == "parse":
            nl.parse(text)
        elif op == "format":
            nl.format(prepared)
        elif op == "lint":
            info["found"] = len(nl.lint(text))
        elif op == "compile":
            compiler._CACHE.clear()
            nl.compile(text)
        elif op == "explain":
            info["output"] = len(prepared.explain())
        elif op == "schedule":
            info["entries"] = len(emphasis.schedule(text, 20))
        elif op == "emphasis":
            info["runs"] = len(emphasis.parse(text))
    except (nl.ParseError, emphasis.EmphasisTooDeepError) as error:  # an answer too: timed like any other
        info["raised"] = type(error).__name__
    return {"seconds": time.process_time() - start, **info}


def _run_cell(op: str, shape: str, size: int, limit: float) -> dict:
    """One cell in a child process limited to ``limit`` seconds of CPU time (RLIMIT_CPU, so that a
    busy machine does not count), and to 20 times that in wall-clock time."""
    cmd = [sys.executable, __file__, "--cell", json.dumps([op, shape, size])]
    cpu = int(limit) + 1  # the child's start-up (imports) is counted too

    def limit_cpu():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * limit, cwd=ROOT,
                              preexec_fn=limit_cpu)
    except subprocess.TimeoutExpired:
        return {"timeout": limit}
    if done.returncode in (-24, -9, 152):  # SIGXCPU / SIGKILL at the CPU limit
        return {"timeout": limit}
    if done.returncode:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return {"error": last[0][:80]}
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0,
                        help="skip a size whose predicted time (10x the previous) exceeds this many seconds; "
                             "also each cell's time limit (x3)")
    parser.add_argument("--only", default="", help="comma-separated operations (default: all)")
    parser.add_argument("--shapes", default="", help="comma-separated shape names (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        print(json.dumps(_cell(*json.loads(args.cell))))
        return 0
    ops = [o for o in args.only.split(",") if o] or list(OPS)
    shapes = [s for s in args.shapes.split(",") if s] or list(SHAPES)
    md = args.markdown
    head = ["operation", "shape", "size 1", "size 2", "size 3", "ratio/10x", "notes"]
    print(f"Python {sys.version.split()[0]}; CPU seconds per call; ratio per 10x (target <= {TARGET:g}); "
          f"budget {args.budget:g} s")
    if md:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    else:
        print(f"{'operation':<10}{'shape':<18}{'sizes':<22}{'seconds':<34}{'ratio/10x':<14}notes")
    worst_ok = True
    for op in ops:
        for shape in shapes:
            kind = SHAPES[shape][0]
            sizes = SIZES[kind]
            times: list[float | None] = []
            notes: list[str] = []
            for size in sizes:
                prev = times[-1] if times else None
                if times and (prev is None or prev * 10 > args.budget):
                    times.append(None)
                    if prev is not None:
                        notes.append(f"{_size(size, kind)} skipped ({_size(size // 10, kind)} took {prev:.1f} s)")
                    continue
                result = _run_cell(op, shape, size, args.budget * 3)
                if "seconds" in result:
                    times.append(result["seconds"])
                    if "raised" in result and size == sizes[0]:
                        notes.append(f"raises {result['raised']}")
                    if op == "explain":
                        notes.append(f"{_size(size, kind)}: {result['output']:,} chars out")
                elif "timeout" in result:
                    times.append(None)
                    notes.append(f"{_size(size, kind)} over {result['timeout']:.0f} s CPU")
                else:
                    times.append(None)
                    notes.append(result["error"] if result["error"].startswith("n/a") else
                                 f"{_size(size, kind)}: {result['error']}")
                    if result["error"].startswith("n/a"):
                        break
            ratios = [b / a for a, b in zip(times, times[1:]) if a and b and a > 1e-3]
            worst = max(ratios) if ratios else None
            if worst is not None and worst > TARGET:
                worst_ok = False
                notes.append("ABOVE TARGET")
            if any(" over " in n or "Error:" in n for n in notes):
                worst_ok = False
            times += [None] * (len(sizes) - len(times))
            cells = [f"{t:.3f}" if t is not None else "-" for t in times]
            ratio = " / ".join(f"{r:.1f}" for r in ratios) or "-"
            label = " / ".join(_size(s, kind) for s in sizes)
            if md:
                print(f"| {op} | {shape} | " + " | ".join(cells) + f" | {ratio} | {'; '.join(notes)} |")
            else:
                print(f"{op:<10}{shape:<18}{label:<22}{' / '.join(cells):<34}{ratio:<14}{'; '.join(notes)}")
            sys.stdout.flush()
    return 0 if worst_ok else 1


def _size(n: int, kind: str) -> str:
    exp = len(str(n)) - 1
    return f"10^{exp}" + (" deep" if kind == "depth" else "")


if __name__ == "__main__":
    sys.exit(main())
