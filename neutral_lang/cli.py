"""The command line: ``neutral-lang lint|fmt|explain|run|demo`` (also ``python -m neutral_lang``).

    neutral-lang lint "a castle AND_PREP monster"          # prompts as arguments
    neutral-lang lint -f prompt.txt -f 00012-1195978169.png  # files: text, or A1111 PNGs
    pbpaste | neutral-lang lint --format json               # stdin
    neutral-lang fmt --check -f prompt.txt
    neutral-lang explain "a AND_PERP [b AND_SALT c]"
    neutral-lang run --model PATH_OR_ID "a castle AND_PERP monster :-1" --steps 30 --out castle.png
    neutral-lang demo                                        # offline, tiny random-weight pipeline

Inputs (every subcommand): each positional ``PROMPT`` is one prompt (labelled ``<arg1>``,
``<arg2>``, ...); each ``-f FILE`` is one prompt, the whole file (``-`` is stdin); with neither,
stdin is read. A file that starts with the PNG signature is read as an image written by A1111:
its positive prompt is taken from the ``parameters`` text chunk.

Exit codes: 0 clean; 1 problems in a prompt (a lint error or warning, a prompt that does not
parse, ``fmt --check`` finding a prompt not in canonical form); 2 usage error, unreadable input
or internal error.

Start-up stays fast and torch-free: every subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["main", "build_parser", "SUBCOMMANDS", "Source", "read_sources", "png_text_chunks", "positive_prompt"]

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class InputError(Exception):
    """An input that cannot be read (missing file, not UTF-8, PNG without parameters): exit 2."""


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Source:
    """One prompt to work on: where it came from (for messages) and its text."""

    label: str
    text: str


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text_chunks(data: bytes) -> dict[str, str]:
    """The ``tEXt``, ``zTXt`` and ``iTXt`` chunks of a PNG, keyword -> text (first one wins).

    A small reader of the chunk layout (PNG spec, section 5): length, type, data, CRC. CRCs are not
    checked; a truncated file raises :class:`InputError`.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("not a PNG file")
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    try:
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if len(body) < length:
                raise InputError("truncated PNG chunk")
            pos += 12 + length
            if kind == b"IEND":
                break
            if kind not in (b"tEXt", b"zTXt", b"iTXt"):
                continue
            key, _, rest = body.partition(b"\0")
            if kind == b"tEXt":
                value = rest.decode("latin-1")
            elif kind == b"zTXt":  # compression method byte, then zlib data
                value = zlib.decompress(rest[1:]).decode("latin-1")
            else:  # iTXt: compression flag, method, language\0, translated keyword\0, text
                compressed, rest = rest[0], rest[2:]
                _, _, rest = rest.partition(b"\0")
                _, _, text = rest.partition(b"\0")
                value = (zlib.decompress(text) if compressed else text).decode("utf-8")
            out.setdefault(key.decode("latin-1"), value)
    except (zlib.error, UnicodeDecodeError, IndexError, struct.error) as exc:
        raise InputError(f"damaged PNG text chunk ({exc})") from None
    return out


def positive_prompt(parameters: str) -> str:
    """The positive prompt of A1111's ``parameters`` text: the lines before the one starting with
    ``Negative prompt:``, or (no negative prompt) before the last line starting with ``Steps:``.
    A prefix of ``parameters``, so offsets into it are offsets into the chunk text."""
    lines = parameters.split("\n")
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    cut = next((s for s, line in zip(starts, lines) if line.startswith("Negative prompt:")), None)
    if cut is None:
        cut = next((s for s, line in zip(reversed(starts), reversed(lines)) if line.startswith("Steps:")), None)
    return parameters if cut is None else parameters[:cut].rstrip("\r\n")


def _read_file(path: str) -> Source:
    if path == "-":
        return Source("<stdin>", sys.stdin.read())
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if data.startswith(PNG_SIGNATURE):
        try:
            parameters = png_text_chunks(data)["parameters"]
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        except KeyError:
            raise InputError(f"{path}: PNG without an A1111 'parameters' text chunk") from None
        return Source(path, positive_prompt(parameters))
    try:
        return Source(path, data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (nor a PNG)") from None


def read_sources(args: argparse.Namespace) -> list[Source]:
    """The prompts named on the command line: arguments, then files; stdin when there are none."""
    sources = [Source(f"<arg{i}>", text) for i, text in enumerate(args.prompts, 1)]
    sources += [_read_file(path) for path in args.files]
    if not sources:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("nothing to read: give a PROMPT, -f FILE, or pipe a prompt on stdin")
        sources.append(Source("<stdin>", sys.stdin.read()))
    return sources


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", metavar="PROMPT",
                        help="a prompt (quote it; put '--' before a prompt that starts with '-')")
    parser.add_argument("-f", "--file", dest="files", action="append", default=[], metavar="FILE",
                        help="read one prompt from FILE: text, or a PNG written by A1111; '-' is stdin (repeatable)")


def _parse_error_text(label: str, err) -> str:
    out = f"{label}:{err.line}:{err.column}: {err.label}\n{_indent(err.excerpt)}"
    return out + (f"\n    hint: {err.hint}" if err.hint else "")


def _indent(block: str) -> str:
    return "\n".join("    " + line for line in block.split("\n"))


# ---------------------------------------------------------------------------------------------
# lint


def add_lint(sub) -> None:
    p = sub.add_parser("lint", help="report what the original extension would silently do with a prompt",
                       description="Lint prompts. Rules and codes: docs/rules/README.md.")
    _add_inputs(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--select", action="append", default=[], metavar="CODES",
                   help="report only these codes or prefixes, comma-separated (e.g. NP3,NP404; ALL); "
                   "enables opt-in rules such as NP107 (cost)")
    p.add_argument("--ignore", action="append", default=[], metavar="CODES",
                   help="do not report these codes or prefixes, comma-separated")
    p.set_defaults(handler=cmd_lint)


def cmd_lint(args: argparse.Namespace) -> int:
    from .errors import caret_excerpt, line_col
    from .linter import lint, resolve

    select = ",".join(args.select) or None
    ignore = ",".join(args.ignore) or None
    try:
        resolve(select, ignore)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    sources = read_sources(args)
    found = [(source, d) for source in sources for d in lint(source.text, select=select, ignore=ignore)]
    counts = {"error": 0, "warning": 0, "info": 0}
    for _, d in found:
        counts[d.severity] = counts.get(d.severity, 0) + 1
    if args.format == "json":
        import json

        records = []
        for source, d in found:
            line, column = line_col(source.text, d.span.start)
            end_line, end_column = line_col(source.text, d.span.end)
            records.append({
                "file": source.label, "code": d.code, "name": d.name, "severity": d.severity,
                "message": d.message, "hint": d.hint, "fix": d.fix,
                "start": d.span.start, "end": d.span.end, "line": line, "column": column,
                "end_line": end_line, "end_column": end_column,
            })
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for source, d in found:
            line, column = line_col(source.text, d.span.start)
            print(f"{source.label}:{line}:{column}: {d.code} {d.message}")
            print(_indent(caret_excerpt(source.text, d.span.start, d.span.end)))
            if d.hint:
                print(f"    hint: {d.hint}")
            if d.fix is not None:
                print(f"    fix: replace with {d.fix!r}" if d.fix else "    fix: delete it")
        problems = counts["error"] + counts["warning"]
        noun = "prompt" if len(sources) == 1 else "prompts"
        if found:
            detail = ", ".join(f"{n} {k}{'s' if n != 1 and k != 'info' else ''}" for k, n in counts.items() if n)
            print(f"{problems} problem{'s' if problems != 1 else ''} ({detail}) in {len(sources)} {noun}", file=sys.stderr)
        else:
            print(f"no problems in {len(sources)} {noun}", file=sys.stderr)
    if any(d.code == "NP001" for _, d in found):
        return EXIT_ERROR
    return EXIT_PROBLEMS if counts["error"] or counts["warning"] else EXIT_OK


# ---------------------------------------------------------------------------------------------
# fmt


def add_fmt(sub) -> None:
    p = sub.add_parser("fmt", help="print prompts in canonical form",
                       description="Print each prompt in canonical form (one space around keywords, "
                       "explicit keywords, weights only where not 1).")
    _add_inputs(p)
    p.add_argument("--check", action="store_true",
                   help="print nothing but the prompts that are not canonical; exit 1 if there are any")
    p.set_defaults(handler=cmd_fmt)


def cmd_fmt(args: argparse.Namespace) -> int:
    from .errors import ParseError
    from .formatter import format

    status = EXIT_OK
    for source in read_sources(args):
        try:
            canonical = format(source.text)
        except ParseError as err:
            print(_parse_error_text(source.label, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        if args.check:
            # A file's final newline is not part of its prompt.
            text = source.text[:-1] if source.text.endswith("\n") else source.text
            if text != canonical:
                print(f"would reformat {source.label}")
                status = EXIT_PROBLEMS
        else:
            print(canonical)
    return status


# ---------------------------------------------------------------------------------------------
# explain


def add_explain(sub) -> None:
    p = sub.add_parser("explain", help="show how a prompt is read: tree, cost and (with the compiler) the plan",
                       description="Print each prompt's tree and its cost per step; when the compiler "
                       "is available, also its IR, plan and cost.")
    _add_inputs(p)
    p.set_defaults(handler=cmd_explain)


def tree_text(prompt, text: str) -> str:
    """An indented view of the AST: one line per part, its keyword, body, weight and position."""
    import json

    from .ast import Group, iter_parts
    from .errors import line_col
    from .formatter import format_number
    from .linter.scan import prompts

    first = {id(p.parts[0]) for _, p in prompts(prompt)}
    lines = []
    for depth, part in iter_parts(prompt):
        if part.keyword_span is not None:
            kw = part.keyword.value
        else:  # a first part, or text after a group: "(AND)" marks the implicit keyword
            kw = "AND" if id(part) in first else "(AND)"
        if part.options:
            kw += "(" + ", ".join(f"{o.name}={o.text}" for o in part.options) + ")"
        body = "[group]" if isinstance(part.body, Group) else json.dumps(part.body.text, ensure_ascii=False)
        weight = "" if part.weight_span is None else f" :{format_number(part.weight)}"
        line, col = line_col(text, part.span.start if part.keyword_span is None else part.keyword_span.start)
        lines.append(f"{'  ' * (depth + 1)}{kw} {body}{weight}  @{line}:{col}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    from .errors import ParseError
    from .linter.rules.cost import unique_texts
    from .parser import parse

    status = EXIT_OK
    sources = read_sources(args)
    for n, source in enumerate(sources):
        if n:
            print()
        try:
            prompt = parse(source.text)
        except ParseError as err:
            print(_parse_error_text(source.label, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        print(f"{source.label}")
        print("tree:")
        print(tree_text(prompt, source.text))
        try:
            plan = _compiled_explanation(source.text)
        except ParseError as err:  # what the compiler rejects beyond the parser (an option it cannot use)
            print(_parse_error_text(source.label, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        if plan is None:  # no compiler in this build: the cost as the AST gives it
            texts = unique_texts(prompt)
            print(f"cost: {len(texts) + 1} model evaluations per step "
                  f"({len(texts)} unique text{'s' if len(texts) != 1 else ''} + 1 unconditional), before optimisation")
        else:
            print(plan.rstrip("\n"))
    return status


def _compiled_explanation(text: str) -> str | None:
    """The compiler's own ``explain()`` (IR, plan, cost), or ``None`` where no compiler is installed.
    Imported here, never at start-up: the compiler may pull in heavier modules."""
    try:
        from .compiler import compile
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("neutral_lang"):
            return None
        raise
    explanation = compile(text).explain()
    if not isinstance(explanation, str):
        return None
    # The compiler's explanation opens with its own view of the tree, up to the first blank line;
    # the tree printed above (with positions) replaces it.
    if explanation.startswith("prompt ") and "\n\n" in explanation:
        explanation = explanation.split("\n\n", 1)[1]
    return explanation


# ---------------------------------------------------------------------------------------------
# The parser and main

#: One function per subcommand, each adding its parser to the subparsers and setting
#: ``handler=cmd_<name>`` (a function ``argparse.Namespace -> int``, the exit code). To add a
#: subcommand (``run``, ``demo``), write ``add_<name>(sub)`` and ``cmd_<name>(args)`` -- importing
#: torch or diffusers inside ``cmd_<name>``, never at module level -- and append ``add_<name>`` here.
def add_run(sub) -> None:
    p = sub.add_parser("run", help="generate an image with a diffusers pipeline",
                       description="Compile a prompt and run it on a Stable Diffusion / SDXL checkpoint.")
    p.add_argument("prompt", help="the Neutral Prompt")
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="a diffusers model folder, or a hub id already in the local cache")
    p.add_argument("--negative", default="", help="negative prompt (A1111 syntax)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default=None, metavar="W[xH]", help="image size, e.g. 512 or 832x1216")
    p.add_argument("--guidance-scale", type=float, default=7.0)
    p.add_argument("--cfg-rescale", type=float, default=0.0, help="CFG rescale factor in [0, 1]")
    p.add_argument("--out", default="image.png", help="output PNG (default: image.png)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps, ... (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="default: float16 on cuda, float32 elsewhere")
    p.set_defaults(handler=cmd_run)


def _size(text: str | None) -> dict:
    if not text:
        return {}
    try:
        w, _, h = text.lower().partition("x")
        width, height = int(w), int(h or w)
    except ValueError:
        raise InputError(f"--size takes W or WxH in pixels, e.g. 512 or 832x1216, not {text!r}") from None
    return {"width": width, "height": height}


def cmd_run(args: argparse.Namespace) -> int:
    from . import ParseError, compile

    try:
        program = compile(args.prompt, cfg_rescale=args.cfg_rescale)
    except ParseError as err:
        print(f"<prompt>:{err.line}:{err.column}: {err.label}\n{_indent(err.excerpt)}", file=sys.stderr)
        if err.hint:
            print(f"  hint: {err.hint}", file=sys.stderr)
        return EXIT_PROBLEMS
    except ValueError as err:
        raise InputError(str(err)) from None
    size = _size(args.size)

    import torch

    from .backends.diffusers import ModelLoadError, load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("float16" if device == "cuda" else "float32"))
    try:
        pipe = load_pipeline(args.model, device=device, dtype=dtype)
    except ModelLoadError as err:
        raise InputError(str(err)) from None
    generator = torch.Generator(device).manual_seed(args.seed)
    result = program.run(pipe, negative_prompt=args.negative, num_inference_steps=args.steps,
                         guidance_scale=args.guidance_scale, generator=generator, **size)
    result.images[0].save(args.out)
    print(f"wrote {args.out}")
    return EXIT_OK


def add_demo(sub) -> None:
    from .demo import add_arguments

    p = sub.add_parser("demo", help="lint, explain and run the example prompts; write images and guidance maps",
                       description="Offline on the embedded tiny random-weight pipeline, or --model.")
    add_arguments(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .backends.diffusers import ModelLoadError
    from .demo import main as demo

    try:
        return demo(args)
    except ModelLoadError as err:
        raise InputError(str(err)) from None


SUBCOMMANDS: list[Callable] = [add_lint, add_fmt, add_explain, add_run, add_demo]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="neutral-lang",
        description="Lint, format and explain Neutral Prompt expressions (AND, AND_PERP, AND_SALT, AND_TOPK).",
        epilog="exit codes: 0 clean, 1 problems found, 2 usage error or internal error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (``neutral-lang`` exits with it)."""
    for stream in (sys.stdout, sys.stderr):
        # A prompt in any script prints on any console, if need be as escapes.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 0 for --help/--version, 2 for a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return handler(args)
    except InputError as exc:
        print(f"neutral-lang {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `neutral-lang lint ... | head`
        return EXIT_OK
    except Exception as exc:  # a bug: say so, with the traceback, and exit 2
        import traceback

        traceback.print_exc()
        print(f"neutral-lang {args.command}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
