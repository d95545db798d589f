"""AST -> canonical text. ``format`` is a fixed point and preserves meaning:
``parse(format(x))`` has the same parts, keywords, options, weights and leaf texts as ``parse(x)``.

The canonical spelling: one space around every keyword, keywords always explicit (text after a
group gets its ``AND``), ``:w`` only when the weight is not 1 (or when the text itself ends in
something a reader would take for a weight, as in ``x :1 :1``), options in a fixed order.
Written iteratively: a 10^4-deep prompt formats without recursion.
"""

from __future__ import annotations

import gc

from .ast import Group, Leaf, Option, Part, Prompt, meaning
from .keywords import OPTION_ORDER
from .lexical import format_number, has_weight_like_tail

__all__ = ["format", "format_number"]

_OPTION_ORDER = {name: i for i, name in enumerate(OPTION_ORDER)}


def _format_option(opt: Option) -> str:
    if opt.name in ("start", "end"):
        # The spelling carries meaning: a step index or a fraction of the steps.
        if opt.is_fraction:
            text = repr(opt.value)
            return f"{opt.name}={text if ('.' in text or 'e' in text) else text + '.0'}"
        return f"{opt.name}={int(opt.value)}"
    return f"{opt.name}={format_number(opt.value)}"


def _keyword(part: Part) -> str:
    if not part.options:
        return part.keyword.value
    opts = sorted(part.options, key=lambda o: _OPTION_ORDER.get(o.name, len(_OPTION_ORDER)))
    return f"{part.keyword.value}({', '.join(_format_option(o) for o in opts)})"


def _weight(part: Part) -> str:
    body = part.body
    needed = isinstance(body, Leaf) and has_weight_like_tail(body.text)
    if part.weight == 1.0 and not needed:
        return ""
    return f":{format_number(part.weight)}"


_OPEN, _CLOSE = object(), object()


def format(prompt_or_text: Prompt | str) -> str:
    """The canonical text of a prompt (an AST, or text to parse leniently first).

    Leaf texts with unmatched brackets (lenient input such as ``[[a AND b]:2]``) can pair up
    differently once the parts around them are respaced and their implicit ``AND`` written out.
    The result is therefore read back, and where it would mean something else, the source text
    is returned unchanged: it is the only spelling known to mean the tree (and it is again what
    ``format`` returns for it, so ``format`` stays a fixed point). A tree built by hand, without
    a source, raises ``ValueError`` in that case.
    """
    # Rendering, reading back and comparing build large acyclic structures; the cyclic collector's
    # full passes would re-walk them all, which made format superlinear (ratio 13-17 per 10x at
    # 10^6 characters, 10.0-10.5 without them). Reference counting still frees everything.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _format(prompt_or_text)
    finally:
        if collecting:
            gc.enable()


def _format(prompt_or_text: Prompt | str) -> str:
    from .parser import ParseError, parse

    prompt = parse(prompt_or_text) if isinstance(prompt_or_text, str) else prompt_or_text
    want = meaning(prompt)

    def reads_as_tree(candidate: str) -> bool:
        try:
            return meaning(parse(candidate)) == want
        except ParseError:
            return False

    text = _render(prompt)
    if reads_as_tree(text):
        return text
    # The source, unless the tree was edited after parsing (dataclasses.replace keeps `source`).
    if prompt.source is not None and reads_as_tree(prompt.source):
        return prompt.source
    raise ValueError(
        "this prompt has unmatched brackets whose reading depends on its exact spelling; "
        "it has no canonical form (neutral-lang lint reports the brackets)"
    )


def _render(prompt: Prompt) -> str:
    # First the pieces, in order, then one space between pieces except just inside brackets.
    pieces: list[object] = []
    # Frames: (parts, index of the next part, the group's weight to write after its `]`).
    stack: list[tuple[tuple[Part, ...], int, str | None]] = [(prompt.parts, 0, None)]
    while stack:
        parts, i, group_weight = stack.pop()
        if i == len(parts):
            if group_weight is not None:
                pieces.append(_CLOSE)
                if group_weight:
                    pieces.append(group_weight)
            continue
        part = parts[i]
        stack.append((parts, i + 1, group_weight))
        if i > 0:
            pieces.append(_keyword(part))
        if isinstance(part.body, Group):
            pieces.append(_OPEN)
            stack.append((part.body.prompt.parts, 0, _weight(part)))
            continue
        if part.body.text:
            pieces.append(part.body.text)
        weight = _weight(part)
        if weight:
            pieces.append(weight)
    out: list[str] = []
    prev: object = _OPEN
    for piece in pieces:
        # A text ending in a backslash keeps a space before `]`, or `\]` would be an escape.
        glued = prev is _OPEN or (piece is _CLOSE and not (isinstance(prev, str) and prev.endswith("\\")))
        if not glued:
            out.append(" ")
        out.append("[" if piece is _OPEN else "]" if piece is _CLOSE else piece)  # type: ignore[arg-type]
        prev = piece
    return "".join(out)
