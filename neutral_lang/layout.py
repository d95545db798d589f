"""The layout ``neutral-lang fmt`` writes: the canonical spelling, on one line or, for a nested prompt
too long for one, one part per line.

    >>> print(layout("magical tree forests, eternal city AND_PERP [electrical pole voyage AND_SALT "
    ...              "small nocturne companion] AND_SALT [electrical tornado AND_SALT electric arcs, bzzz, sparks]"))
    magical tree forests, eternal city
    AND_PERP [
        electrical pole voyage
        AND_SALT small nocturne companion
    ]
    AND_SALT [
        electrical tornado
        AND_SALT electric arcs, bzzz, sparks
    ]

The rule (docs/language.md, "The canonical format"): the canonical one-line form
(:func:`neutral_lang.format`) when it fits in :data:`WIDTH` characters or holds no group; otherwise
every part on a line of its own, its keyword first, and every group opened by ``[`` at the end of
its part's line, its parts indented by four spaces, its ``]`` (and weight) on a line of its own.
Whitespace between parts is not part of any text (docs/language.md, "A1111 syntax inside a
part"), so both layouts mean the same tree; the result is read back, and where it would mean
something else (stray brackets regrouping) the one-line form is returned. ``layout`` is a fixed
point, like ``format``. Iterative: a 10^4-deep prompt lays out without recursion.
"""

from __future__ import annotations

from .ast import Group, Part, Prompt, meaning
from .formatter import _keyword, _weight, format

__all__ = ["layout", "WIDTH", "INDENT"]

#: Longest one-line form kept on one line, in characters.
WIDTH = 120
#: Indentation of a group's parts, per level.
INDENT = "    "


def layout(prompt_or_text: Prompt | str, *, width: int = WIDTH) -> str:
    """The text ``neutral-lang fmt`` writes for a prompt (an AST, or text parsed leniently first).
    Raises what :func:`neutral_lang.format` raises (``ParseError`` for text that does not parse)."""
    from .parser import parse

    prompt = parse(prompt_or_text) if isinstance(prompt_or_text, str) else prompt_or_text
    one_line = format(prompt)
    if len(one_line) <= width or not any(isinstance(p.body, Group) for p in prompt.parts):
        return one_line
    lines = _lines(prompt)
    candidate = "\n".join(lines)
    try:
        same = meaning(parse(candidate)) == meaning(prompt)
    except ValueError:  # ParseError
        same = False
    return candidate if same else one_line


def _lines(prompt: Prompt) -> list[str]:
    out: list[str] = []
    # Frames: (parts, index of the next part, depth, the group's weight to write after its `]`).
    stack: list[tuple[tuple[Part, ...], int, int, str | None]] = [(prompt.parts, 0, 0, None)]
    while stack:
        parts, i, depth, group_weight = stack.pop()
        if i == len(parts):
            if group_weight is not None:
                out.append(INDENT * (depth - 1) + "]" + (" " + group_weight if group_weight else ""))
            continue
        part = parts[i]
        stack.append((parts, i + 1, depth, group_weight))
        head = [_keyword(part)] if i > 0 else []
        if isinstance(part.body, Group):
            out.append(INDENT * depth + " ".join(head + ["["]))
            stack.append((part.body.prompt.parts, 0, depth + 1, _weight(part)))
            continue
        words = head + [w for w in (part.body.text, _weight(part)) if w]
        if words:  # an empty first part (a leading keyword) has no line of its own
            out.append(INDENT * depth + " ".join(words))
    return out
