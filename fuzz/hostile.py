"""Hostile-input fuzz: generated hostile text, files and PNGs through every front-end path.

    python fuzz/hostile.py --count 1000000 --workers 2 --seed 1 [--time-cap 10] [--memory-cap 2G]

Each input ``i`` is drawn from ``random.Random(f"{seed}:{i}")`` by one of the generators below
(so ``--only-index i`` reproduces it) and goes through, in a worker process:

- the library: ``nl.parse`` (lenient and strict), ``nl.lint``, ``nl.format``, ``nl.compile``
  (then ``explain()`` of the program); with ``--emphasis`` also ``emphasis.parse`` and
  ``emphasis.schedule`` (the leaf layer ``run()`` reads);
- the command line, in-process through ``cli.main``: ``lint``/``fmt``/``explain`` of the input
  written as a prompt file, as an A1111 PNG whose ``parameters`` is a tEXt, zTXt or iTXt chunk
  (compressed or not), as a damaged PNG (flipped bytes, truncation, bad CRC, lying lengths,
  compression bombs) or as raw bytes;
- one input in ``--subprocess-every`` (default 2000) also as a real ``python -m neutral_lang``
  subprocess.

What counts as an escape: any exception other than the documented ones (``ParseError`` from
``parse``, strict ``parse`` and ``compile``; ``ParseError`` or ``ValueError`` from ``format``;
nothing from ``lint``, ``explain``, ``emphasis``), a command line exit status other than 0, 1
or 2, a traceback or ``internal error`` on its stderr, and any input whose paths together take
more than ``--time-cap`` CPU seconds (a CPU timer interrupts it there). Each worker runs under
``RLIMIT_AS`` (``--memory-cap``), so a runaway allocation is a ``MemoryError`` escape, not a
swapping machine. Prints the counts per generator, the escapes (with the index to reproduce),
the slowest inputs and the peak resident memory (``ru_maxrss``) of the workers and of the
subprocesses. Exit status 1 when anything escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(os.environ.get("NEUTRAL_LANG_EXAMPLES", "/work/shared/examples/prompts.md"))

KEYWORDS = ["AND", "AND_PERP", "AND_SALT", "AND_TOPK", "AND_PREP", "and", "AND_", "AND_TOPK_", "ANDAND", "AND_SALTY"]
OPTIONS = ["(k=0.5)", "(k=1.0)", "(start=0.2)", "(end=2)", "(per_channel=1)", "(momentum=0.9, beta=0.6)", "(",
           "(k=", "(k=nan)", "(k=1e999)", "(=)", "(,)", "(k=0.1,k=0.2)", "(start=-1)", "(x=1)", "()"]
NUMBERS = ["1", "-1", "0", "-0", "1e39", "1e308", "1e999", "-1e999", "nan", "inf", "-inf", "NaN", "+inf", "1e-400",
           "0.5", ".5", "5.", "1.2.3", "1e", "--1", "+-1", "0x10", "1_000", "\u0663", "9" * 400, "0." + "0" * 300 + "1"]
CONTROLS = ["\x00", "\x1b[31m", "\x1b]0;title\x07", "\x1b[2J", "\r", "\r\n", "\n", "\t", "\x0b", "\x0c", "\x7f",
            "\x9b", "\u202e", "\u200b", "\ufeff", "\u2028", "\u0085", "\x1b[1;1H", "\x1b", "\x07", "\\"]
UNICODE = ["é", "ß", "漢字", "🙂", "👩\u200d👩\u200d👧", "e\u0301", "\u0300" * 5, "ｗｉｄｅ", "\U0001f600" * 3, "\ud800", "\udfff",
           "\uffff", "\U0010ffff", "Ⅻ", "١٢٣", "\u00a0", "\u3000"]
SYNTAX = ["[", "]", "(", ")", ":", "|", "\\", "\\[", "\\]", "\\(", " ", ",", "=", "#", "--", "\n"]
WORDS = ["a", "castle", "blue sky", "monster", "b", "(glasses:1.3)", "[old]", "[dog:cat:0.5]", "[a|b]", "BREAK",
         "1girl", "<lora:x:1>", "((house:1.3))", "[[x]]", "(a:.)", "[a:b:1e999]", "{a|b}"]


# ---------------------------------------------------------------------------------------------
# Generators: each returns (kind, payload); kind "text" payloads are str, the others bytes


def _seed_prompts() -> list[str]:
    try:
        lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    prompts = [line.strip() for line in lines if line.startswith("    ") and line.strip()]
    return prompts or ["a castle AND_PERP monster :-1", "a [dog:cat:0.5] (red:1.2) AND_SALT b"]


PROMPTS = _seed_prompts()


def _size(rng: random.Random) -> int:
    """Mostly small, now and then large: the cost of big inputs is measured by the growth table."""
    r = rng.random()
    return rng.randint(1, 60) if r < 0.7 else rng.randint(60, 600) if r < 0.998 else rng.randint(600, 20000)


def gen_deep(rng):
    unit = rng.choice(["[", "(", "[a AND ", "(a:", "[a:", "[a|", "[[", "([", "[ AND", "AND(", "[a AND_PERP b :",
                       "(x:1.1)[", "[:", "\\["])
    depth = _size(rng)
    body = unit * max(1, depth // len(unit)) + rng.choice(["", "b", "b:1", "1", "x|y", "AND c"])
    closer = rng.choice(["", "]", ")", "])", ":1]", "|c]", "]:2"])
    return body + closer * rng.choice([0, 1, depth // max(1, len(closer)), rng.randint(0, depth)])


def gen_keywords(rng):
    out = []
    for _ in range(_size(rng) // 4 + 1):
        out.append(rng.choice(KEYWORDS))
        if rng.random() < 0.3:
            out.append(rng.choice(OPTIONS))
        if rng.random() < 0.5:
            out.append(rng.choice(WORDS))
        if rng.random() < 0.2:
            out.append(":" + rng.choice(NUMBERS))
    return rng.choice([" ", "", "\n"]).join(out)


def gen_colons(rng):
    n = _size(rng)
    return "".join(rng.choice([":", ":", "::", ":-", ": ", ":1", ":.", "a", "]", " "]) for _ in range(n))


def gen_numbers(rng):
    out = []
    for _ in range(rng.randint(1, 30)):
        out.append(rng.choice(["a", "b AND", "[x", "(y", "AND_SALT c", "AND_TOPK(k=", "[a:b", "(c"]))
        out.append(rng.choice([":", " :", ":", "=", ":"]) + rng.choice(NUMBERS) + rng.choice(["", " ", "]", ")", ")"]))
    return " ".join(out)


def gen_controls(rng):
    return "".join(rng.choice(CONTROLS + WORDS + KEYWORDS[:4]) for _ in range(_size(rng) // 3 + 1))


def gen_unicode(rng):
    pieces = UNICODE + SYNTAX + KEYWORDS[:4]
    out = [rng.choice(pieces) if rng.random() < 0.7 else chr(rng.randint(0, 0x10FFFF)) for _ in range(_size(rng) // 2 + 1)]
    return "".join(out)


def gen_random_text(rng):
    return "".join(chr(rng.randint(0, 0x7F if rng.random() < 0.7 else 0x10FFFF)) for _ in range(_size(rng)))


def gen_syntax_mix(rng):
    pieces = SYNTAX + WORDS + KEYWORDS + OPTIONS + [":" + x for x in NUMBERS[:12]]
    return "".join(rng.choice(pieces) for _ in range(_size(rng) // 3 + 1))


def gen_mutation(rng):
    text = rng.choice(PROMPTS)
    if rng.random() < 0.2:
        text = "\n".join(rng.choice(PROMPTS) for _ in range(rng.randint(2, 8)))
    pool = SYNTAX + KEYWORDS + OPTIONS + CONTROLS + UNICODE + [":" + x for x in NUMBERS]
    for _ in range(rng.randint(1, 12)):
        if not text:
            text = rng.choice(PROMPTS)
        i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
        op = rng.random()
        if op < 0.35:
            text = text[:i] + rng.choice(pool) + text[i:]
        elif op < 0.55:
            text = text[:i] + text[j:]
        elif op < 0.75:
            text = text[:i] + text[i:j] * rng.randint(2, 6) + text[j:]
        elif op < 0.9:
            k = rng.randrange(len(text) + 1)
            text = text[:k] + text[i:j] + text[k:]
        else:
            text = text[:i] + text[i:j][::-1] + text[j:]
    return text


def gen_a1111(rng):
    units = ["[a:b:2]", "[x|y]", "(c:1.2)", "[b] ", "[", "]", "(", ")", ":", "|", "1", ".5", "\\", " ", "[a:", ":3]",
             "[[a|b]:c:0.5]", "(BREAK:0)", "BREAK", "[a:b:1e999]", "((a][:b:c [d:3]", "[fe|]male", "]]", "::"]
    return "".join(rng.choice(units) for _ in range(_size(rng) // 3 + 1))


TEXT_GENERATORS = {
    "deep brackets": gen_deep,
    "keyword floods": gen_keywords,
    "colon runs": gen_colons,
    "numbers": gen_numbers,
    "controls": gen_controls,
    "unicode": gen_unicode,
    "random text": gen_random_text,
    "syntax mix": gen_syntax_mix,
    "prompt mutations": gen_mutation,
    "A1111 brackets": gen_a1111,
}


def draw(seed: int, index: int) -> tuple[str, str]:
    """``(generator name, text)`` of input ``index``."""
    rng = random.Random(f"{seed}:{index}")
    name = rng.choice(list(TEXT_GENERATORS))
    return name, TEXT_GENERATORS[name](rng)


# ---------------------------------------------------------------------------------------------
# Files and PNGs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(parameters: bytes, kind: bytes = b"tEXt", *, compressed: bool = False, keyword: bytes = b"parameters") -> bytes:
    """A 1x1 grey PNG carrying ``parameters`` in a tEXt, zTXt or iTXt chunk."""
    if kind == b"tEXt":
        body = keyword + b"\0" + parameters
    elif kind == b"zTXt":
        body = keyword + b"\0\0" + zlib.compress(parameters)
    else:
        data = zlib.compress(parameters) if compressed else parameters
        body = keyword + b"\0" + (b"\1" if compressed else b"\0") + b"\0" + b"en\0" + b"\0" + data
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + _chunk(kind, body)
            + _chunk(b"IDAT", zlib.compress(b"\x00\x80")) + _chunk(b"IEND", b""))


def _damage(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    what = rng.random()
    if what < 0.3:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif what < 0.5:
        data = data[: rng.randrange(len(data))]
    elif what < 0.7:  # a chunk length that lies (points past the end, or is huge)
        data[33:37] = struct.pack(">I", rng.choice([0, 1, len(data), 2**31 - 1, 2**32 - 1, rng.randrange(2**32)]))
    elif what < 0.85:  # bytes near the end: a CRC, IEND
        data[-25:-21] = bytes(rng.randrange(256) for _ in range(4))
    else:
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(data)


def _bomb(rng: random.Random) -> bytes:
    """A zTXt/iTXt ``parameters`` that inflates beyond the largest read limit used here (32 MiB)."""
    raw = _deflated(rng.choice([2**25 + 4096, 2**27]), rng.choice(b"a["))
    kind = rng.choice([b"zTXt", b"iTXt"])
    if kind == b"zTXt":
        body = b"parameters\0\0" + raw
    else:
        body = b"parameters\0\1\0en\0\0" + raw
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + _chunk(kind, body)
            + _chunk(b"IEND", b""))


@functools.lru_cache(maxsize=None)
def _deflated(size: int, fill: int) -> bytes:
    return zlib.compress(bytes([fill]) * size, 9)


def file_payload(rng: random.Random, text: str) -> tuple[str, bytes]:
    """``(suffix, bytes)`` of a file carrying ``text``: a prompt file, a PNG, a damaged PNG, a bomb or bytes."""
    encoded = text.encode("utf-8", "surrogatepass")
    infotext = encoded + b"\nNegative prompt: x\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64"
    r = rng.random()
    if r < 0.35:
        prefix = b"\xef\xbb\xbf" if rng.random() < 0.1 else b""
        body = encoded.replace(b"\n", b"\r\n") if rng.random() < 0.1 else encoded
        if rng.random() < 0.1:
            body += b" --steps " + rng.choice([b"20", b"-1", b"1e999", b"x", b""])
        return ".txt", prefix + body
    if r < 0.75:
        kind = rng.choice([b"tEXt", b"zTXt", b"iTXt"])
        payload = infotext if rng.random() < 0.8 else encoded
        if kind == b"tEXt":
            payload = text.encode("latin-1", "replace") + infotext[len(encoded):]
        return ".png", png(payload, kind, compressed=rng.random() < 0.5)
    if r < 0.9:
        return ".png", _damage(rng, png(infotext, rng.choice([b"tEXt", b"zTXt", b"iTXt"]), compressed=True))
    if r < 0.92:
        return ".png", _bomb(rng)
    return rng.choice([".txt", ".png", ".bin"]), bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


# ---------------------------------------------------------------------------------------------
# One input through every path


class Timeout(BaseException):
    """Raised by the CPU timer in the middle of a path: the input took longer than the cap."""


def _on_timer(signum, frame):
    raise Timeout()


def _library(text: str, with_emphasis: bool) -> list[tuple[str, str]]:
    """The library paths; returns ``(path, exception)`` for each escape."""
    import neutral_lang as nl
    from neutral_lang import emphasis

    escapes = []

    def attempt(path: str, fn, allowed: tuple[type[BaseException], ...] = ()):
        try:
            return fn()
        except allowed:
            return None
        except (Timeout, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - this is what we are looking for
            escapes.append((path, f"{type(exc).__name__}: {str(exc)[:160]}"))
            return None

    attempt("parse", lambda: nl.parse(text), (nl.ParseError,))
    attempt("parse strict", lambda: nl.parse(text, strict=True), (nl.ParseError,))
    attempt("lint", lambda: nl.lint(text))
    attempt("format", lambda: nl.format(text), (nl.ParseError, ValueError))
    program = attempt("compile", lambda: nl.compile(text), (nl.ParseError,))
    if program is not None:
        attempt("explain", program.explain)
    if with_emphasis:
        attempt("emphasis.parse", lambda: emphasis.parse(text), (emphasis.EmphasisTooDeepError,))
        attempt("emphasis.schedule", lambda: emphasis.schedule(text, 20))
    return escapes


_COMMANDS = (["lint"], ["fmt"], ["explain"], ["lint", "--format", "json"], ["lint", "--select", "ALL"],
             ["fmt", "--check"])


def _cli(rng: random.Random, text: str, folder: str, *, real: bool) -> tuple[list[tuple[str, str]], str]:
    """The command line on one file made from ``text``; in-process, or a real subprocess."""
    from neutral_lang import cli

    suffix, data = file_payload(rng, text)
    path = os.path.join(folder, "input" + suffix)
    with open(path, "wb") as fh:
        fh.write(data)
    command = list(rng.choice(_COMMANDS)) + ["--max-input-size", rng.choice(["1M", "32M"]), "-f", path]
    label = f"cli {' '.join(command[:-2])} {suffix}"
    if real:
        done = subprocess.run([sys.executable, "-m", "neutral_lang", *command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=120, cwd=ROOT)
        code, err = done.returncode, done.stderr.decode("utf-8", "replace")
        label = "subprocess " + label
    else:
        out, errs = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
            code = cli.main(command)
        err = errs.getvalue()
    problems = []
    if code not in (0, 1, 2):
        problems.append((label, f"exit status {code}"))
    if "Traceback" in err or "internal error" in err:
        problems.append((label, err.strip().splitlines()[-1][:200]))
    return problems, label


_STATE: dict = {}


def _init_worker(memory_cap: int, time_cap: float, with_emphasis: bool = False) -> None:
    if memory_cap:
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    signal.signal(signal.SIGPROF, _on_timer)
    # argparse looks up translations (a file search per message) and the terminal width each time
    # cli.main builds its parser; fixed here, they cost nothing (the messages are English anyway).
    os.environ["LANGUAGE"], os.environ["COLUMNS"] = "C", "100"
    sys.setrecursionlimit(10**4)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory-backed: file writes cost little
    _STATE["folder"] = tempfile.mkdtemp(prefix="hostile-", dir=shm)
    _STATE["time_cap"] = time_cap
    _STATE["emphasis"] = with_emphasis
    import neutral_lang as nl
    from neutral_lang import cli  # noqa: F401 - imported outside the timing

    nl.lint("a AND b")
    nl.compile("a AND_PERP b").explain()


def _one(seed: int, index: int, subprocess_every: int) -> dict:
    name, text = draw(seed, index)
    rng = random.Random(f"{seed}:{index}:file")
    escapes: list[tuple[str, str]] = []
    cap = _STATE["time_cap"]
    start = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, cap)
    path = "library"
    try:
        escapes += _library(text, _STATE["emphasis"])
        path = "cli"
        found, path = _cli(rng, text, _STATE["folder"], real=False)
        escapes += found
        if subprocess_every and index % subprocess_every == 0:
            signal.setitimer(signal.ITIMER_PROF, 0)
            found, path = _cli(rng, text, _STATE["folder"], real=True)
            escapes += found
    except Timeout:
        escapes.append((path, f"over the time cap ({cap:g} s CPU)"))
    except MemoryError:
        escapes.append((path, "MemoryError (over the memory cap)"))
    except Exception as exc:  # noqa: BLE001 - an escape from the harness's own reading of the CLI
        escapes.append((path, f"{type(exc).__name__}: {exc}"[:200] + " | " + traceback.format_exc(limit=2)[-200:]))
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    seconds = time.process_time() - start
    return {"index": index, "generator": name, "chars": len(text), "seconds": seconds, "escapes": escapes}


def _batch(args: tuple[int, int, int, int]) -> dict:
    seed, first, last, subprocess_every = args
    out = {"count": 0, "by_generator": {}, "escapes": [], "slowest": [], "cpu": 0.0}
    for index in range(first, last):
        result = _one(seed, index, subprocess_every)
        out["count"] += 1
        out["cpu"] += result["seconds"]
        out["by_generator"][result["generator"]] = out["by_generator"].get(result["generator"], 0) + 1
        for path, what in result["escapes"]:
            out["escapes"].append({"index": index, "generator": result["generator"], "chars": result["chars"],
                                   "path": path, "what": what})
        out["slowest"].append((result["seconds"], index, result["generator"], result["chars"]))
    out["slowest"] = sorted(out["slowest"], reverse=True)[:10]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["maxrss_kb"] = usage.ru_maxrss
    out["children_maxrss_kb"] = children.ru_maxrss
    return out


# ---------------------------------------------------------------------------------------------
# Main


def _bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512M)")
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="inputs to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="first input index (to continue a run)")
    parser.add_argument("--time-cap", type=float, default=10.0, help="CPU seconds allowed per input (all paths)")
    parser.add_argument("--memory-cap", type=_bytes, default=_bytes("2G"), help="RLIMIT_AS of each worker")
    parser.add_argument("--subprocess-every", type=int, default=2000,
                        help="run every N-th input's command line as a real subprocess too (0: never)")
    parser.add_argument("--batch", type=int, default=500, help="inputs per task handed to a worker")
    parser.add_argument("--emphasis", action="store_true",
                        help="also emphasis.parse and emphasis.schedule (the leaf layer, which run() calls)")
    parser.add_argument("--minutes", type=float, default=0,
                        help="stop after this many minutes of wall time (0: no limit); the table covers the "
                             "batches finished by then")
    parser.add_argument("--only-index", type=int, help="run one input and print it (to reproduce an escape)")
    args = parser.parse_args(argv)
    if args.only_index is not None:
        name, text = draw(args.seed, args.only_index)
        print(f"input {args.only_index} ({name}, {len(text)} chars): {text[:400]!r}")
        _init_worker(args.memory_cap, args.time_cap, args.emphasis)
        print(_one(args.seed, args.only_index, args.subprocess_every))
        return 0
    started, wall = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), time.monotonic()
    tasks = [(args.seed, i, min(i + args.batch, args.start + args.count), args.subprocess_every)
             for i in range(args.start, args.start + args.count, args.batch)]
    total = {"count": 0, "batches": 0, "by_generator": {}, "escapes": [], "slowest": [], "cpu": 0.0, "maxrss_kb": 0,
             "children_maxrss_kb": 0}
    ctx = get_context("fork")
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=(args.memory_cap, args.time_cap, args.emphasis),
                  maxtasksperchild=200) as pool:
        try:
            for part in pool.imap_unordered(_batch, tasks):
                total["count"] += part["count"]
                total["cpu"] += part["cpu"]
                for k, v in part["by_generator"].items():
                    total["by_generator"][k] = total["by_generator"].get(k, 0) + v
                total["escapes"] += part["escapes"]
                total["slowest"] = sorted(total["slowest"] + part["slowest"], reverse=True)[:10]
                total["maxrss_kb"] = max(total["maxrss_kb"], part["maxrss_kb"])
                total["children_maxrss_kb"] = max(total["children_maxrss_kb"], part["children_maxrss_kb"])
                total["batches"] += 1
                if args.minutes and time.monotonic() - wall > args.minutes * 60:
                    pool.terminate()
                    print("time limit reached: the table covers the batches finished so far", file=sys.stderr)
                    break
                if total["count"] % (args.batch * 20) == 0:
                    rate = total["count"] / (time.monotonic() - wall)
                    print(f"... {total['count']:,} inputs, {len(total['escapes'])} escapes, {rate:.0f}/s",
                          file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pool.terminate()
            print("interrupted: the table covers the inputs finished so far", file=sys.stderr)
    report(total, args, started, time.monotonic() - wall)
    return 1 if total["escapes"] else 0


def report(total: dict, args, started: str, wall: float) -> None:
    print(f"hostile fuzz: seed {args.seed}, {total['count']:,} inputs ({total['batches']:,} batches of "
          f"{args.batch} from index {args.start:,} on), {args.workers} workers, started {started}")
    paths = "parse, strict parse, lint, format, compile, explain" + (", emphasis.parse, emphasis.schedule"
                                                                       if args.emphasis else "") + ", CLI"
    print(f"paths: {paths}")
    print(f"time cap {args.time_cap:g} s CPU per input, memory cap {args.memory_cap / 2**30:g} GiB per worker, "
          f"a real subprocess every {args.subprocess_every or 'never'} inputs")
    print(f"wall {wall:.0f} s, {total['count'] / max(wall, 1e-9):.0f} inputs/s; CPU in the paths {total['cpu']:.0f} s")
    print("\n| generator | inputs |\n|---|---|")
    for name in TEXT_GENERATORS:
        print(f"| {name} | {total['by_generator'].get(name, 0):,} |")
    print(f"\nescapes: {len(total['escapes'])}")
    if total["escapes"]:
        print("| index | generator | chars | path | what |\n|---|---|---|---|---|")
        for e in total["escapes"][:50]:
            print(f"| {e['index']} | {e['generator']} | {e['chars']} | {e['path']} | {e['what']!r} |")
    print("\nslowest inputs (CPU seconds, all paths):\n| seconds | index | generator | chars |\n|---|---|---|---|")
    for seconds, index, name, chars in total["slowest"]:
        print(f"| {seconds:.3f} | {index} | {name} | {chars:,} |")
    print(f"\npeak resident memory: workers {total['maxrss_kb'] / 1024:.0f} MiB, "
          f"CLI subprocesses {total['children_maxrss_kb'] / 1024:.0f} MiB (ru_maxrss)")


if __name__ == "__main__":
    sys.exit(main())
