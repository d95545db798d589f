"""Rewriting the prompts of a prompt file in place: what ``neutral-lang fmt -i`` and ``lint --fix``
write, with everything else of the file kept byte for byte.

A prompt file holds one prompt per line, a line ending in ``\\`` continuing on the next
(:mod:`neutral_lang.prompt_file`). :func:`rewrite` replaces the lines of each prompt whose text
changes and nothing else: blank lines, unchanged lines, the file's line endings (``\\r\\n`` stays
``\\r\\n``, line by line) and its final newline stay as they are. A
prompt of several lines is written with `` \\`` at the end of every line but its last, each line
after the first indented as the new text says (the layout's four spaces per group level) on top of
the first line's indentation, or, where the new line brings none (a fix), as it was in the file.
An option line (``--prompt "..." --steps 20``) whose prompt changes is written again on one line in
shell quoting (:func:`~neutral_lang.prompt_file.prompt_line`).
Linear in the size of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .inputs import Source

__all__ = ["Rewritten", "rewrite"]


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The new text of a file, and the first file line (1-based) of each prompt that changed."""

    text: str
    changed: tuple[int, ...]


def _writable(lines: list[str]) -> bool:
    """Whether new prompt lines read back as one prompt: no line but the last may be blank or end
    in a backslash, and the first may not start like an option line."""
    if lines[0].lstrip().startswith("--"):
        return False
    return all(line.strip() and not line.rstrip().endswith("\\") for line in lines[:-1]) and \
        not lines[-1].rstrip().endswith("\\")


def rewrite(text: str, label: str, change: Callable[[Source], str]) -> Rewritten:
    """``text`` (a prompt file) with the text of each prompt ``p`` (a :class:`~neutral_lang.inputs.Source`)
    replaced by ``change(p)``. A prompt whose new
    text could not be written back as the same prompt (a line ending in ``\\``, a blank line) is
    left as it is. Raises what :func:`~neutral_lang.prompt_file.read_prompt_file` or ``change``
    raise."""
    from .prompt_file import prompt_line, read_prompt_file

    lines = text.split("\n")  # a "\r" before each "\n" stays with its line
    out: list[str] = []
    changed: list[int] = []
    done = 0  # file lines copied so far
    for source in read_prompt_file(text, label):
        first, last = source.origins[0][0], source.origins[-1][0]
        raw_first = lines[first - 1]
        new = change(source)
        if new == source.text:
            continue
        if raw_first.lstrip().startswith("--"):
            # An option line: written again with the new prompt, in shell quoting, on one line.
            new = prompt_line(" ".join(line.strip() for line in new.split("\n")), source.options)
        new_lines = new.split("\n")
        if not (raw_first.lstrip().startswith("--") or _writable(new_lines)):
            continue
        cr = "\r" if raw_first.endswith("\r") else ""
        if raw_first.lstrip().startswith("--"):  # origins point at the prompt inside the option line
            indents = [raw_first[:len(raw_first) - len(raw_first.lstrip())]]
        else:
            indents = [lines[n - 1][:offset] for n, offset in source.origins]

        def indent(k: int, line: str) -> str:
            # A line of the layout brings its own indentation (on top of the first line's); a fixed
            # line keeps the one it had in the file.
            if k == 0 or line[:1].isspace() or k >= len(indents):
                return indents[0]
            return indents[k]

        written = [indent(k, line) + line + (" \\" if k < len(new_lines) - 1 else "") + cr
                   for k, line in enumerate(new_lines)]
        if written == lines[first - 1:last]:
            continue  # the same text once the file's own spacing is taken into account
        out.extend(lines[done:first - 1])
        out.extend(written)
        done = last
        changed.append(first)
    if not changed:
        return Rewritten(text, ())
    out.extend(lines[done:])
    return Rewritten("\n".join(out), tuple(changed))
