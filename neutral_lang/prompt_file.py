"""Prompt files: one prompt per line, as A1111's "Prompts from file or textbox" script reads them.

    a castle AND_PERP monster :-1
    1girl, blue hair AND_TOPK glasses :0.4
    --prompt "a forest AND_SALT tornado" --negative_prompt "blurry" --steps 20 --seed 7
    magical tree forests \\
    AND_PERP electrical pole

- Each line, stripped of surrounding whitespace, is one prompt; blank lines are skipped.
- A line starting with ``--`` is a list of options in shell quoting (``shlex``), as in A1111:
  ``--prompt`` (the prompt), ``--negative_prompt``, ``--steps``, ``--seed``, ``--cfg_scale``,
  ``--width``, ``--height``, ``--sampler_name``. Other A1111 options (``--restore_faces``,
  ``--styles``, ...) are refused with the line number: nothing is silently ignored.
- Multi-line prompts (neutral-lang's addition; A1111 has no way): a line ending in ``\\`` continues
  on the next line; the backslash is dropped and a newline joins the two lines.

Messages point at file lines: every :class:`~neutral_lang.inputs.Source` carries the file line
and column offset of each of its lines.
"""

from __future__ import annotations

import shlex

from .inputs import InputError, Source

__all__ = ["read_prompt_file", "prompt_line", "OPTIONS"]

#: The per-line options honoured, A1111's names -> type.
OPTIONS = {
    "prompt": str,
    "negative_prompt": str,
    "steps": int,
    "seed": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "sampler_name": str,
}

# A1111's other per-line options: known, but not something this package can honour.
_A1111_ONLY = (
    "sd_model", "outpath_samples", "outpath_grids", "prompt_for_display", "styles", "subseed_strength",
    "subseed", "seed_resize_from_h", "seed_resize_from_w", "sampler_index", "batch_size", "n_iter",
    "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid",
)


def read_prompt_file(text: str, label: str) -> list[Source]:
    """The prompts of a prompt file's ``text``; ``label`` (its path) names them in messages.
    Raises :class:`~neutral_lang.inputs.InputError` for an option line that does not read."""
    sources: list[Source] = []
    pending: list[tuple[str, int, int]] = []  # (stripped text, file line, column offset) of continued lines
    line_no = 0
    start = 0
    length = len(text)
    while start <= length:  # a linear walk: str.splitlines would copy every line twice
        stop = text.find("\n", start)
        if stop < 0:
            stop = length
        raw = text[start:stop]
        start = stop + 1
        line_no += 1
        if raw.endswith("\r"):
            raw = raw[:-1]
        stripped = raw.strip()
        offset = len(raw) - len(raw.lstrip())
        if stripped.endswith("\\"):
            pending.append((stripped[:-1].rstrip(), line_no, offset))
            if start > length:
                sources.append(_source(pending, label))
            continue
        if pending:
            pending.append((stripped, line_no, offset))
            sources.append(_source(pending, label))
            pending = []
        elif stripped:
            sources.append(_source([(stripped, line_no, offset)], label))
        if stop == length:
            break
    return sources


def _source(lines: list[tuple[str, int, int]], label: str) -> Source:
    text = "\n".join(line for line, _, _ in lines)
    origins = tuple((line_no, offset) for _, line_no, offset in lines)
    if not text.startswith("--"):
        return Source(label, text, origins)
    first = lines[0][1]
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:
        raise InputError(f"{label}:{first}: option line does not read ({exc})") from None
    options: dict = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise InputError(f"{label}:{first}: expected an option such as --prompt, got {word!r}")
        name = word[2:]
        if name in _A1111_ONLY:
            raise InputError(
                f"{label}:{first}: --{name} is an A1111 option that neutral-lang cannot honour; "
                f"supported: {', '.join('--' + o for o in OPTIONS)}"
            )
        if name not in OPTIONS:
            raise InputError(f"{label}:{first}: unknown option --{name}; supported: {', '.join('--' + o for o in OPTIONS)}")
        if i + 1 >= len(words):
            raise InputError(f"{label}:{first}: --{name} needs a value")
        try:
            options[name] = OPTIONS[name](words[i + 1])
        except ValueError:
            raise InputError(f"{label}:{first}: --{name} takes {OPTIONS[name].__name__}, not {words[i + 1]!r}") from None
        i += 2
    prompt = options.pop("prompt", "")
    # Point at the prompt in the line where it appears verbatim (it usually does: quotes, no escapes).
    origins = ((first, 0),)
    if prompt and "\n" not in prompt:
        for line, line_no, offset in lines:
            at = line.find(prompt)
            if at >= 0:
                origins = ((line_no, offset + at),)
                break
    elif "\n" in prompt:
        origins = tuple((line_no, offset) for _, line_no, offset in lines)
    return Source(label, prompt, origins, options)


def prompt_line(prompt: str, options: dict) -> str:
    """One prompt file line for ``prompt`` with per-line ``options``: the prompt alone, or an
    option line (``--prompt '...' --steps 20``) when there are options, in shell quoting."""
    if not options:
        return prompt
    words = ["--prompt", shlex.quote(prompt)]
    for name in OPTIONS:
        if name in options:
            value = options[name]
            words += [f"--{name}", shlex.quote(repr(value) if isinstance(value, float) else str(value))]
    return " ".join(words)
