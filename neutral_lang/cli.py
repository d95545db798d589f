"""The command line: ``neutral-lang lint|fmt|explain|run|grid|demo`` (also ``python -m neutral_lang``).

    neutral-lang lint "a castle AND_PREP monster"          # prompt text
    neutral-lang lint prompts.txt 00012-1195978169.png      # files: prompt files, A1111 PNG/JPEG/WebP
    pbpaste | neutral-lang lint --format json -             # stdin, sniffed like a file
    neutral-lang lint -c prompts.txt                        # -c: always text, never a file name
    neutral-lang fmt --check prompts.txt
    neutral-lang explain "a AND_PERP [b AND_SALT c]"
    neutral-lang run --model PATH_OR_ID "a castle AND_PERP monster :-1" --steps 30 --out castle.png
    neutral-lang run --model PATH_OR_ID --from 00012-1195978169.png   # regenerate from an infotext
    neutral-lang grid --model PATH_OR_ID "a AND_TOPK glasses :0" --x "weight:2=0-1 [5]" --y "seed=1,2"
    neutral-lang demo                                        # offline, on the toy model (docs/toy.md)

Inputs (every subcommand; :mod:`neutral_lang.inputs`): a positional argument that names an existing
file is that file, ``-`` is stdin, anything else is prompt text; ``-c TEXT`` is always text and
``-f FILE`` always a file. Text files and stdin are prompt files (one prompt per line,
:mod:`neutral_lang.prompt_file`); images give their A1111 infotext's prompt. With no input at all,
stdin is read. Reads are bounded (``--max-input-size``).

Exit codes: 0 clean; 1 problems in a prompt (a lint error or warning, a prompt that does not
parse, ``fmt --check`` finding a prompt not in canonical form); 2 usage error, unreadable input
or internal error.

Start-up stays fast and torch-free: every subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable

from .inputs import (
    PNG_SIGNATURE,
    InputError,
    Source,
    escape_controls,
    looks_like_path,
    max_input_bytes,
    png_text_chunks,
    positive_prompt,
    read_input,
)

__all__ = [
    "main", "build_parser", "SUBCOMMANDS", "Source", "InputError", "read_sources", "png_text_chunks",
    "positive_prompt", "PNG_SIGNATURE",
]

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Document:
    """One input as a whole: a file (``path``; ``"-"`` for stdin) with its ``text`` and its
    ``sources`` (the prompts in it), or one prompt given as text (``path`` is ``None``). ``fmt -i``
    and ``lint --fix`` write a document back only when it is a text file (not stdin, not an image)."""

    label: str
    path: str | None
    text: str
    sources: tuple[Source, ...]
    image: bool = False

    @property
    def writable(self) -> bool:
        return self.path not in (None, "-") and not self.image


def read_documents(args: argparse.Namespace) -> list[Document]:
    """The inputs named on the command line: positional inputs, then ``-c`` texts, then ``-f``
    files; stdin when there are none. A positional argument is a file when it names one, stdin
    when it is ``-``, and prompt text otherwise -- unless it looks like a file name (no spaces, a
    ``/`` or a suffix such as ``.txt``): a missing file is an error, never linted as text."""
    import shlex

    from .inputs import image_source, read_whole_input
    from .prompt_file import read_prompt_file

    limit = max_input_bytes(getattr(args, "max_input_size", None))
    documents: list[Document] = []
    inline = 0

    def text(value: str) -> None:
        nonlocal inline
        inline += 1
        label = f"<arg{inline}>"
        documents.append(Document(label, None, value, (Source(label, value, inline=True),)))

    def file(path: str) -> None:
        label, data, image = read_whole_input(path, limit=limit)
        sources = (image_source(label, data),) if image else tuple(read_prompt_file(data, label))
        documents.append(Document(label, path, data, sources, image))

    for arg in args.inputs:
        if arg == "-" or os.path.isfile(arg):
            file(arg)
        elif os.path.isdir(arg):
            raise InputError(f"{arg}: is a folder; give the files in it (e.g. {arg.rstrip('/')}/*.txt)")
        elif looks_like_path(arg):
            raise InputError(f"{arg}: no such file (to check it as prompt text, use -c {shlex.quote(arg)})")
        else:
            text(arg)
    for value in args.texts:
        text(value)
    for path in args.files:
        if os.path.isdir(path):
            raise InputError(f"{path}: is a folder, not a file")
        file(path)
    if not (args.inputs or args.texts or args.files):
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("nothing to read: give a PROMPT, a FILE, -c TEXT, or pipe prompts on stdin")
        file("-")
    return documents


def read_sources(args: argparse.Namespace) -> list[Source]:
    """The prompts named on the command line (:func:`read_documents`), in order."""
    return [source for document in read_documents(args) for source in document.sources]


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="PROMPT_OR_FILE",
                        help="a prompt file, an A1111 PNG/JPEG/WebP, '-' for stdin, or prompt text "
                        "(quote it; put '--' before text that starts with '-')")
    parser.add_argument("-c", "--text", dest="texts", action="append", default=[], metavar="TEXT",
                        help="a prompt given as text, never read as a file name (repeatable)")
    parser.add_argument("-f", "--file", dest="files", action="append", default=[], metavar="FILE",
                        help="a file to read, even if its name looks like text; '-' is stdin (repeatable)")
    parser.add_argument("--max-input-size", metavar="SIZE", default=None,
                        help="most bytes read from one file, stdin or compressed text chunk, e.g. 64M "
                        "(default: $NEUTRAL_LANG_MAX_INPUT or 32M)")


def _display_position(source: Source, pos: int) -> tuple[int, int]:
    """``source.position(pos)`` with the column in display cells (wide CJK characters count two,
    :mod:`neutral_lang.cells`), so that it agrees with the caret; only the line's window is read."""
    from .cells import cell_width

    line, column = source.position(pos)
    start, _ = source.index.line_bounds(pos)
    if pos - start > 4096 or source.text.isascii():
        return line, column  # a huge line: characters (the caret excerpt shows a window anyway)
    return line, column + cell_width(source.text[start:pos]) - (pos - start)


def _where(source: Source, pos: int) -> str:
    line, column = _display_position(source, pos)
    return f"{escape_controls(source.label, keep_newlines=False)}:{line}:{column}"


def _parse_error_text(source: Source, err) -> str:
    from .inputs import caret_excerpt

    out = f"{_where(source, err.pos)}: {escape_controls(err.label)}\n{_indent(caret_excerpt(source, err.pos, err.end))}"
    return out + (f"\n    hint: {escape_controls(err.hint)}" if err.hint else "")


def _indent(block: str) -> str:
    return "\n".join("    " + line for line in block.split("\n"))


def _name(source: Source) -> str:
    """How ``fmt --check`` names a prompt: an argument by its label, a file's prompt by its line."""
    label = escape_controls(source.label, keep_newlines=False)
    return label if source.inline else f"{label}:{source.first_line}"


# ---------------------------------------------------------------------------------------------
# lint


def add_lint(sub) -> None:
    p = sub.add_parser("lint", help="report what the original extension would silently do with a prompt",
                       description="Lint prompts. Each code (NP001 ...) has a page in the documentation's "
                       "lint rules; `neutral-lang lint --select ALL` runs every rule.")
    _add_inputs(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--select", action="append", default=[], metavar="CODES",
                   help="report only these codes or prefixes, comma-separated (e.g. NP3,NP404; ALL); "
                   "enables opt-in rules such as NP107 (cost)")
    p.add_argument("--ignore", action="append", default=[], metavar="CODES",
                   help="do not report these codes or prefixes, comma-separated")
    p.add_argument("--fix", action="store_true",
                   help="apply the safe fixes: rewrite prompt files in place; print fixed prompt text and stdin "
                   "to stdout (the remaining problems then go to stderr)")
    p.add_argument("--unsafe-fixes", action="store_true",
                   help="with --fix, also apply the fixes marked unsafe (deleting a part, an inline weight "
                   "as emphasis, ...)")
    p.set_defaults(handler=cmd_lint)


def cmd_lint(args: argparse.Namespace) -> int:
    from .linter import lint, resolve

    select = ",".join(args.select) or None
    ignore = ",".join(args.ignore) or None
    try:
        resolve(select, ignore)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out = sys.stdout
    if args.fix or args.unsafe_fixes:
        sources, printed = _fix_documents(args, select, ignore)
        if printed:  # stdout holds fixed prompts: the problems left go to stderr
            out = sys.stderr
    else:
        sources = read_sources(args)
    found = [(source, d) for source in sources for d in lint(source.text, select=select, ignore=ignore)]
    counts = {"error": 0, "warning": 0, "info": 0}
    for _, d in found:
        counts[d.severity] = counts.get(d.severity, 0) + 1
    if args.format == "json":
        import json

        from .inputs import escape_json

        records = []
        for source, d in found:
            line, column = source.position(d.span.start)
            end_line, end_column = source.position(d.span.end)
            records.append({
                "file": source.label, "code": d.code, "name": d.name, "severity": d.severity,
                "message": d.message, "hint": d.hint, "fix": d.fix, "applicability": d.applicability or None,
                "start": d.span.start, "end": d.span.end, "line": line, "column": column,
                "end_line": end_line, "end_column": end_column,
                "display_column": _display_position(source, d.span.start)[1],
            })
        print(escape_json(json.dumps(records, indent=2, ensure_ascii=False)), file=out)
    else:
        for source, d in found:
            print(diagnostic_text(source, d), file=out)
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


def _fix_documents(args: argparse.Namespace, select, ignore) -> tuple[list[Source], bool]:
    """Apply the fixes (``lint --fix``): prompt files are rewritten in place (:mod:`.rewrite`:
    only the changed prompts' lines, line endings kept); prompt text, stdin and images are
    printed fixed to stdout. Returns the prompts as fixed, to lint again, and whether anything
    was printed."""
    import dataclasses

    from .linter import fix_all
    from .prompt_file import read_prompt_file
    from .rewrite import rewrite

    applied = 0
    printed = False

    def change(source: Source) -> str:
        nonlocal applied
        done = fix_all(source.text, unsafe=args.unsafe_fixes, select=select, ignore=ignore)
        applied += len(done.applied)
        return done.text

    sources: list[Source] = []
    written: list[str] = []
    for document in read_documents(args):
        if document.path is not None and not document.image:
            new = rewrite(document.text, document.label, change)
            if document.writable:
                if new.changed:
                    write_text(document.path, new.text)
                    written.append(document.label)
            else:  # stdin: the whole fixed input
                sys.stdout.write(new.text if new.text.endswith("\n") else new.text + "\n")
                printed = True
            sources.extend(read_prompt_file(new.text, document.label))
            continue
        for source in document.sources:
            fixed = change(source)
            print(fixed)
            printed = True
            sources.append(dataclasses.replace(source, text=fixed))
    note = f"fixed {applied} problem{'s' if applied != 1 else ''}"
    if written:
        note += f", rewrote {', '.join(escape_controls(w, keep_newlines=False) for w in written)}"
    print(note, file=sys.stderr)
    return sources, printed


def write_text(path: str, text: str) -> None:
    """Write a prompt file back as UTF-8, keeping a byte-order mark it had and its line endings
    (``text`` holds them: no newline translation). Raises :class:`InputError` when it cannot."""
    try:
        with open(path, "rb") as fh:
            bom = fh.read(3) == b"\xef\xbb\xbf"
        with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def diagnostic_text(source: Source, d) -> str:
    """One diagnostic as ``file:line:col: CODE message``, the caret excerpt, hint and fix lines;
    control characters escaped. Costs the same wherever in a long text the diagnostic is."""
    from .inputs import caret_excerpt

    lines = [f"{_where(source, d.span.start)}: {d.code} {escape_controls(d.message)}",
             _indent(caret_excerpt(source, d.span.start, d.span.end))]
    if d.hint:
        lines.append(f"    hint: {escape_controls(d.hint)}")
    if d.fix is not None:
        label = "fix (unsafe)" if d.applicability == "unsafe" else "fix"
        lines.append(f"    {label}: replace with {escape_controls(repr(d.fix))}" if d.fix else f"    {label}: delete it")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# fmt


def add_fmt(sub) -> None:
    p = sub.add_parser("fmt", help="print prompts in canonical form",
                       description="Print each prompt in canonical form (one space around keywords, "
                       "explicit keywords, weights only where not 1); a nested prompt too long for one "
                       "line is written one part per line. Prompt files keep their line endings.")
    _add_inputs(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="print nothing but the prompts that are not canonical; exit 1 if there are any")
    mode.add_argument("--diff", action="store_true",
                      help="print a unified diff of the changes fmt would make; exit 1 if there are any")
    mode.add_argument("-i", "--in-place", action="store_true",
                      help="rewrite prompt files in place (only the prompts that change)")
    p.set_defaults(handler=cmd_fmt)


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib

    from .errors import ParseError
    from .layout import layout
    from .rewrite import rewrite

    documents = read_documents(args)
    if args.in_place:
        for document in documents:
            if not document.writable:
                what = "prompt text" if document.path is None else "an image" if document.image else "stdin"
                raise InputError(f"-i writes prompt files; {document.label} is {what} (leave out -i to print it)")
    status = EXIT_OK
    # Canonical prompts are data (redirected into files): escaped only when shown on a terminal.
    shown = escape_controls if sys.stdout.isatty() else (lambda text: text)

    def change(source: Source) -> str:
        nonlocal status
        try:
            return layout(source.text)
        except ParseError as err:
            print(_parse_error_text(source, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            return source.text

    for document in documents:
        if document.path is None or document.image:
            before = document.sources[0].text if document.image else document.text
            after = change(document.sources[0])
            changed = (document.sources[0].first_line,) if after != before else ()
        else:
            new = rewrite(document.text, document.label, change)
            before, after, changed = document.text, new.text, new.changed
        if args.check:
            for line in changed:
                label = escape_controls(document.label, keep_newlines=False)
                print(f"would reformat {label if document.path is None else f'{label}:{line}'}")
        elif args.diff:
            sys.stdout.writelines(shown(line) for line in difflib.unified_diff(
                _diff_lines(before), _diff_lines(after), document.label, document.label))
        elif args.in_place:
            if changed:
                write_text(document.path, after)
                print(f"reformatted {escape_controls(document.label, keep_newlines=False)}", file=sys.stderr)
            continue
        else:
            print(shown(after), end="" if after.endswith("\n") else "\n")
        if changed and (args.check or args.diff):
            status = max(status, EXIT_PROBLEMS)
    return status


def _diff_lines(text: str) -> list[str]:
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1] + "\n\\ No newline at end of file\n")
    return out


# ---------------------------------------------------------------------------------------------
# explain


def add_explain(sub) -> None:
    p = sub.add_parser("explain", help="show how a prompt is read: tree, cost and (with the compiler) the plan",
                       description="Print each prompt's tree and its cost per step; when the compiler "
                       "is available, also its IR, plan and cost.")
    _add_inputs(p)
    p.set_defaults(handler=cmd_explain)


def tree_text(prompt, text: str | Source) -> str:
    """An indented view of the AST: one line per part, its keyword, body, weight and position
    (in the file, for a :class:`Source`); control characters escaped."""
    import json

    from .ast import Group, iter_parts
    from .formatter import format_number
    from .linter.scan import prompts

    source = text if isinstance(text, Source) else Source("", text)

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
        line, col = source.position(part.span.start if part.keyword_span is None else part.keyword_span.start)
        lines.append(f"{'  ' * (depth + 1)}{kw} {escape_controls(body)}{weight}  @{line}:{col}")
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
            print(_parse_error_text(source, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        print(_name(source))
        print("tree:")
        print(tree_text(prompt, source))
        try:
            plan = _compiled_explanation(source.text)
        except ParseError as err:  # what the compiler rejects beyond the parser (an option it cannot use)
            print(_parse_error_text(source, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        if plan is None:  # no compiler in this build: the cost as the AST gives it
            texts = unique_texts(prompt)
            print(f"cost: {len(texts) + 1} model evaluations per step "
                  f"({len(texts)} unique text{'s' if len(texts) != 1 else ''} + 1 unconditional), before optimisation")
        else:
            print(escape_controls(plan.rstrip("\n")))
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
#: subcommand, write ``add_<name>(sub)`` and ``cmd_<name>(args)`` -- importing torch or diffusers
#: inside ``cmd_<name>``, never at module level -- and append ``add_<name>`` to ``SUBCOMMANDS``.

_RUN_DEFAULTS = {"steps": 30, "seed": 0, "cfg_scale": 7.0, "cfg_rescale": 0.0}


def _add_generation(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``grid``: the model, the settings of each image, the device."""
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="a diffusers model folder, a single-file .safetensors/.ckpt checkpoint, "
                   "or a hub id already in the local cache (default: the toy model the package ships)")
    p.add_argument("--config", metavar="FOLDER_OR_ID", default=None,
                   help="for a single-file checkpoint: the diffusers model whose configuration it uses")
    p.add_argument("--negative", default=None, metavar="TEXT",
                   help="negative prompt (A1111 syntax); default: none (an empty one is none too)")
    p.add_argument("--steps", type=int, default=None, help=f"denoising steps (default: {_RUN_DEFAULTS['steps']})")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default: {_RUN_DEFAULTS['seed']})")
    p.add_argument("--size", default=None, metavar="W[xH]",
                   help="image size in pixels, multiples of 8, e.g. 512 or 832x1216 (default: the model's)")
    p.add_argument("--guidance-scale", "--cfg-scale", dest="cfg_scale", type=float, default=None,
                   help=f"CFG scale (default: {_RUN_DEFAULTS['cfg_scale']:g})")
    p.add_argument("--cfg-rescale", type=float, default=None,
                   help="CFG rescale phi in [0, 1], as the original extension's (default: 0, off)")
    p.add_argument("--sampler", dest="sampler_name", default=None, metavar="NAME",
                   help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (default: the model's scheduler)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu; "
                   "under accelerate launch: each process's own)")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="default: float16 on cuda, float32 elsewhere")


def add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="generate images with a diffusers pipeline",
        description="Compile each prompt and run it on a Stable Diffusion / SDXL checkpoint; every PNG "
        "carries A1111 infotext. A prompt file gives one image per prompt; its per-line options "
        "(--steps 20 ...) override the command line's. With accelerate launch, the images are split "
        "across the processes.")
    _add_inputs(p)
    p.add_argument("--from", dest="from_images", action="append", default=[], metavar="IMAGE",
                   help="regenerate an image from its A1111 infotext (prompt, negative prompt, steps, "
                   "sampler, CFG scale, seed, size, CFG Rescale phi); options given here override it")
    _add_generation(p)
    p.add_argument("--out", default="image.png",
                   help="output PNG; with several images, NAME-0001.png, NAME-0002.png, ... (default: image.png)")
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


def _flags(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line (``None``: not given)."""
    flags = {name: getattr(args, name) for name in ("steps", "seed", "cfg_scale", "cfg_rescale", "sampler_name")}
    flags = {k: v for k, v in flags.items() if v is not None}
    flags.update(_size(args.size))
    if args.negative is not None:
        flags["negative_prompt"] = args.negative or None
    return flags


def _jobs(args: argparse.Namespace, sources: list[Source]) -> list:
    """One job per prompt. Precedence: a prompt file line's options over the command line's, the
    command line's over an image's infotext, and that over the defaults."""
    from .generate import Job, Settings, honoured, settings_from

    flags = _flags(args)
    jobs = []
    for source in sources:
        label = escape_controls(source.label, keep_newlines=False)
        where = label if source.inline else f"{label}:{source.first_line}"
        options = dict(_RUN_DEFAULTS)
        if source.parameters is not None:  # an image: its infotext is the base
            from .infotext import parse

            options.update(source.options)
            options.update(honoured(parse(source.parameters).extra, label))
            options.update(flags)
        else:
            options.update(flags)
            options.update(source.options)
        settings = settings_from(options, Settings(), label=where)
        jobs.append(Job(len(jobs), source.text, settings, where))
    return jobs


def _compile_and_warn(jobs: list, sources: list[Source], *, show: bool = True) -> int:
    """Compile every prompt before any model is loaded; print its lint warnings (stderr, once per
    distinct prompt, when ``show``). Returns 1 when a prompt does not parse, else 0."""
    from . import ParseError, compile

    status = EXIT_OK
    seen: set[str] = set()
    for job, source in zip(jobs, sources):
        if job.prompt in seen:
            continue
        seen.add(job.prompt)
        try:
            program = compile(job.prompt)  # CFG rescale is a run-time argument (checked in settings)
        except ParseError as err:
            print(_parse_error_text(source, err), file=sys.stderr)
            status = EXIT_PROBLEMS
            continue
        except ValueError as err:
            raise InputError(f"{job.label}: {err}") from None
        for d in program.diagnostics if show else ():
            if d.severity != "info":
                print(diagnostic_text(source, d), file=sys.stderr)
    return status


def _prepare(args: argparse.Namespace, jobs: list, sources: list[Source], out_paths: list[str]):
    """Checks, warnings, processes and the pipeline; ``None`` when a prompt does not parse."""
    from .generate import check, check_device, load, model_kind, processes

    in_paths = [*(a for a in args.inputs if os.path.isfile(a)), *args.files, *getattr(args, "from_images", [])]
    check(jobs, device=args.device, out_paths=out_paths, in_paths=in_paths)
    if args.model is None:  # the toy model the package ships (neutral_lang.toy)
        from .toy import WEIGHTS

        args.model = str(WEIGHTS)
    model_kind(args.model)  # a missing local path is answered now, not after importing diffusers
    procs = processes(args.device)
    if _compile_and_warn(jobs, sources, show=procs.is_main):
        return None
    device = args.device or procs.device
    if device is None:
        torch = _import_torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    _quiet_libraries()
    pipe = load(args.model, device=device, dtype_name=args.dtype, config=args.config)
    return procs, device, pipe


def _import_torch():
    from .generate import _torch

    return _torch()


def _quiet_libraries() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ModuleNotFoundError:
        pass


def _numbered(out: str, n: int, count: int) -> str:
    if count == 1:
        return out
    stem, ext = os.path.splitext(out)
    return f"{stem}-{n + 1:04d}{ext or '.png'}"


def cmd_run(args: argparse.Namespace) -> int:
    from .inputs import read_input

    sources = read_sources(args) if (args.inputs or args.texts or args.files or not args.from_images) else []
    limit = max_input_bytes(args.max_input_size)
    for image in args.from_images:
        found = read_input(image, limit=limit)
        if len(found) != 1 or found[0].parameters is None:
            raise InputError(f"--from {image}: not an image with A1111 parameters (PNG, JPEG or WebP)")
        sources.extend(found)
    if not sources:
        raise InputError("no prompt to run (the inputs hold no prompt)")
    jobs = _jobs(args, sources)
    outs = [_numbered(args.out, job.index, len(jobs)) for job in jobs]
    prepared = _prepare(args, jobs, sources, outs)
    if prepared is None:
        return EXIT_PROBLEMS
    procs, device, pipe = prepared
    from .generate import generate, infotext_of
    from .infotext import save_png

    def save(job, image) -> None:
        save_png(image, outs[job.index], infotext_of(job, image, pipe=pipe, model=args.model))
        print(f"wrote {outs[job.index]}", flush=True)

    generate(pipe, procs.share(jobs), device=device, on_image=save)
    procs.wait()
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# grid


def add_grid(sub) -> None:
    p = sub.add_parser(
        "grid", help="sweep a part's weight, an option, the CFG scale, seeds or steps into one labelled PNG",
        description="A1111 X/Y plot for Neutral Prompt: one image per combination of the axis values, "
        "drawn as one labelled PNG grid with infotext. Axes: seed=1-4, steps=10-30 (+10), cfg=3,7, "
        "weight:N=0-1 [5] (part N, numbered as explain lists them), k:N=..., start:N=..., end:N=..., "
        "sr=SEARCH,REPLACE1,... (Prompt S/R). Ranges: a-b (whole steps), a-b [count], a-b (+step).")
    _add_inputs(p)
    p.add_argument("--x", dest="x_axis", default=None, metavar="AXIS", help="the columns, e.g. 'weight:2=0-1 [5]'")
    p.add_argument("--y", dest="y_axis", default=None, metavar="AXIS", help="the rows, e.g. 'seed=1-3'")
    _add_generation(p)
    p.add_argument("--out", default="grid.png", help="output PNG (default: grid.png)")
    p.add_argument("--cells", action="store_true", help="also write each cell as OUT-0001.png, ... with its infotext")
    p.set_defaults(handler=cmd_grid)


def cmd_grid(args: argparse.Namespace) -> int:
    from .generate import Job
    from .grid import apply, draw, parse_axis

    sources = read_sources(args)
    if len(sources) != 1:
        raise InputError(f"grid sweeps one prompt; the inputs hold {len(sources)}")
    axes = [parse_axis(a) if a else None for a in (args.x_axis, args.y_axis)]
    if axes == [None, None]:
        raise InputError("give at least one axis: --x AXIS and/or --y AXIS (e.g. --x 'seed=1-4')")
    (base,) = _jobs(args, sources)
    xs = range(len(axes[0].values)) if axes[0] else [None]
    ys = range(len(axes[1].values)) if axes[1] else [None]
    jobs = []
    for y in ys:
        for x in xs:
            prompt, settings = base.prompt, base.settings
            for axis, i in ((axes[0], x), (axes[1], y)):
                if axis is not None:
                    prompt, settings = apply(axis, i, prompt, settings)
            jobs.append(Job(len(jobs), prompt, settings, base.label))
    cell_paths = [_numbered(args.out, job.index, len(jobs)) for job in jobs] if args.cells else []
    cell_sources = [Source(sources[0].label, job.prompt, sources[0].origins, inline=sources[0].inline) for job in jobs]
    prepared = _prepare(args, jobs, cell_sources, [args.out, *cell_paths])
    if prepared is None:
        return EXIT_PROBLEMS
    procs, device, pipe = prepared
    import io

    from tqdm.auto import tqdm

    from .generate import generate, infotext_of
    from .infotext import save_png

    pipe.set_progress_bar_config(disable=True)  # one bar for the grid's images, not one per image
    mine = procs.share(jobs)
    made: list[tuple[int, bytes, str]] = []

    def keep(job, image) -> None:
        text = infotext_of(job, image, pipe=pipe, model=args.model)
        if args.cells:
            save_png(image, cell_paths[job.index], text)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        made.append((job.index, buffer.getvalue(), text))

    with tqdm(total=len(mine), desc=f"grid {procs.index + 1}/{procs.count}" if procs.count > 1 else "grid",
              unit="image", file=sys.stderr, disable=False) as bar:
        generate(pipe, mine, device=device, on_image=keep, progress=bar)
    everything = procs.gather(made)
    if procs.is_main:
        from PIL import Image

        by_index = {index: (png, text) for index, png, text in everything}
        images = [Image.open(io.BytesIO(by_index[job.index][0])).convert("RGB") for job in jobs]
        labels = [[a.label(i) for i in range(len(a.values))] if a else [""] for a in axes]
        grid = draw(images, labels[0], labels[1])
        axes_text = "; ".join(f"{name}: {text}" for name, text in (("X", args.x_axis), ("Y", args.y_axis)) if text)
        first = by_index[jobs[0].index][1]
        save_png(grid, args.out, first + f", Grid: {_quote_setting(axes_text)}")
        print(f"wrote {args.out} ({len(xs)}x{len(ys)} images)", flush=True)
    procs.wait()
    return EXIT_OK


def _quote_setting(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def add_demo(sub) -> None:
    from .demo import add_arguments

    p = sub.add_parser("demo", help="lint, explain and run the example prompts; write images and guidance maps",
                       description="Offline on the toy model shipped with the package, or --model / --random.")
    add_arguments(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .backends.diffusers import ModelLoadError
    from .demo import main as demo

    try:
        return demo(args)
    except ModelLoadError as err:
        raise InputError(str(err)) from None
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "diffusers", "transformers", "PIL", "accelerate"):
            raise InputError(f"demo needs {exc.name}: pip install \"neutral-lang[diffusers]\"") from None
        raise


SUBCOMMANDS: list[Callable] = [add_lint, add_fmt, add_explain, add_run, add_grid, add_demo]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="neutral-lang",
        description="Lint, format, explain and run Neutral Prompt expressions (AND, AND_PERP, AND_SALT, AND_TOPK).",
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
        print(f"neutral-lang {args.command}: {escape_controls(str(exc), keep_newlines=False)}", file=sys.stderr)
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
