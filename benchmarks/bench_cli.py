"""Command-line benchmark: what ``neutral-lang lint`` adds to the linter, as inputs grow 10x.

    .venv/bin/python benchmarks/bench_cli.py [--quick]

For each input shape and size (10^4, 10^5, 10^6 characters) the table gives the time of
``neutral_lang.lint`` on the prompts (the baseline, measured in the same run), the command line's
own work around it, timed apart: reading the file (sniffing, PNG chunks and inflating, prompt-file
splitting) and writing every diagnostic (file line and column, caret excerpt, escaping, printing to
/dev/null), and the whole command run in-process (``cli.main(["lint", FILE])``, output to
/dev/null); then the ratio of the command line's work to the baseline and the growth per 10x of
the whole command and of its own work. Linear is a growth of about 10; issue 14 asks for at most
15. Times are CPU seconds of this process (other jobs on a shared machine do not count), the
fastest of several repeats (a first call, caches and collector passes only add noise to figures
of a millisecond).
"""

from __future__ import annotations

import argparse
import os
import contextlib
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import neutral_lang as nl  # noqa: E402
from neutral_lang import cli  # noqa: E402
from neutral_lang.inputs import read_input  # noqa: E402

UNIT = "a castle, tall towers, blue sky " * 3 + "AND_PREP monster :-1 "  # one diagnostic per ~120 characters


def _png(parameters: str) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    text = b"parameters\0\0" + zlib.compress(parameters.encode("latin-1"))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"zTXt", text)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def shapes(n: int) -> dict[str, bytes]:
    """Inputs of about ``n`` characters."""
    repeat = max(1, n // len(UNIT))
    one_line = (UNIT * repeat).encode()
    return {
        "one line, a diagnostic every ~120 chars": one_line,
        "prompt file, one prompt per line": ((UNIT.rstrip() + "\n") * repeat).encode(),
        "one diagnostic at the end of a long line": ("a castle, " * (n // 10) + "AND_PREP monster").encode(),
        "A1111 PNG, zTXt parameters": _png((UNIT * repeat) + "\nSteps: 20, Seed: 1"),
    }


def fastest(fn, repeat: int) -> float:
    """The least CPU time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> int:
    import gc

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10^3 to 10^5 instead of 10^4 to 10^6")
    args = parser.parse_args()
    sizes = (10**3, 10**4, 10**5) if args.quick else (10**4, 10**5, 10**6)
    folder = tempfile.mkdtemp(prefix="bench-cli-")
    print(f"{'input':42} {'chars':>8} {'diags':>6} {'lint()':>8} {'read':>8} {'output':>8} {'us/diag':>8} "
          f"{'CLI/lint':>8} {'command':>8} {'growth/10x':>10} {'own work':>9}")
    worst = worst_own = 0.0
    for name in shapes(10).keys():
        previous = previous_whole = None
        for n in sizes:
            data = shapes(n)[name]
            path = os.path.join(folder, "input.png" if data.startswith(b"\x89PNG") else "input.txt")
            with open(path, "wb") as fh:
                fh.write(data)
            sources = read_input(path, limit=1 << 30)
            found = [(s, d) for s in sources for d in nl.lint(s.text)]
            repeat = 9 if n < 10**5 else 5 if n < 10**6 else 3
            gc.collect()
            base = fastest(lambda: [nl.lint(s.text) for s in sources], repeat)
            read = fastest(lambda: read_input(path, limit=1 << 30), repeat)
            with open(os.devnull, "w") as null:
                # fresh sources each time: their line index is built once per prompt, as in a run
                def output() -> None:
                    fresh = {id(s): type(s)(s.label, s.text, s.origins) for s in sources}
                    for s, d in found:
                        print(cli.diagnostic_text(fresh[id(s)], d), file=null)
                write = fastest(output, repeat)

                def command() -> None:
                    with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                        cli.main(["lint", "--max-input-size", "1G", "-f", path])
                whole = fastest(command, repeat)
            share = read + write
            growth = "" if previous is None else f"{whole / previous_whole:.1f}"
            own = "" if previous is None else f"{share / previous:.1f}"
            if previous is not None:
                worst = max(worst, whole / previous_whole)
                worst_own = max(worst_own, share / previous)
            previous, previous_whole = share, whole
            chars = sum(len(s.text) for s in sources)
            per = f"{write / len(found) * 1e6:.1f}" if found else "-"
            print(f"{name:42} {chars:>8} {len(found):>6} {base:>7.3f}s {read:>7.3f}s {write:>7.3f}s {per:>8} "
                  f"{share / max(base, 1e-9):>8.2f} {whole:>7.3f}s {growth:>10} {own:>9}")
    print(f"\nworst growth per 10x: the whole command {worst:.1f}, the command line's own work {worst_own:.1f} "
          "(linear: ~10). us/diag is the cost of one diagnostic, which a position-dependent cost would multiply "
          "by 10 at every step.")
    return 0 if worst <= 15 else 1


if __name__ == "__main__":
    sys.exit(main())
