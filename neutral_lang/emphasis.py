"""A1111's leaf layer: emphasis weights and prompt schedules, in exact agreement with A1111.

A leaf's text goes to the text encoder in A1111's own sub-language, and a diffusers backend
must read it the way AUTOMATIC1111's ``modules/prompt_parser.py`` does, or the same prompt
draws a different picture. Two readings are involved:

- :func:`parse` -- emphasis, as ``parse_prompt_attention``: ``(x)`` multiplies the attention
  of ``x`` by 1.1, ``(x:w)`` by ``w``, ``[x]`` by 1/1.1; ``\\( \\) \\[ \\] \\\\`` are literal
  characters; ``BREAK`` marks a chunk boundary for the 75-token windows.
- :func:`schedule` -- which text is in force at which step, as
  ``get_learned_conditioning_prompt_schedules`` (current scheduling, no hires pass): prompt
  editing ``[from:to:when]`` and alternation ``[a|b]``.

Both return what A1111 returns, value for value (lists of tuples instead of lists of lists), so
weights agree bit for bit: the multiplications happen in A1111's order. The only differences are
inputs on which A1111 raises instead of answering (all are lenient here, as docs/language.md asks
of malformed input):

- ``(x:.)`` or ``(x:1.2.3)`` -- a weight ``float()`` cannot read, with a ``(`` open. A1111 raises
  ``ValueError``; here the ``:`` is plain text, so the ``)`` closes with the default 1.1.
- ``[a:b:1e999]`` -- a ``when`` that overflows to infinity. A1111 raises ``OverflowError``; here
  ``+inf`` means "at the last step" (clamped to ``steps``) and ``-inf`` "never".
- Brackets nested some hundreds deep. A1111 raises ``RecursionError`` (from about 250 levels);
  here the full schedule comes out up to :data:`MAX_DEPTH` (480) levels, and deeper text is read as A1111
  reads text it cannot parse: the whole text at every step.

The schedule grammar is the leaf layer, ``grammar/a1111_leaf.lark``; the Earley parser
for it is built on the first call to :func:`schedule` that needs it (text mixing stray brackets
with edits or alternations; other text is read in one pass), so importing this module stays cheap.
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

__all__ = ["BREAK", "parse", "schedule", "variants", "text_at"]

BREAK = ("BREAK", -1.0)
"""The chunk-boundary marker in :func:`parse` output, exactly as A1111 emits it."""

_ROUND = 1.1  # (x)
_SQUARE = 1 / 1.1  # [x]

# One token of A1111's emphasis scanner. Alternatives are tried in order: escapes before a lone
# backslash, and a weighted close before a plain colon. `\d` is Unicode-aware on purpose, like
# A1111's: float() reads other scripts' digits too.
_EMPHASIS_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\])       # \( \) \[ \] \\  -> the character itself
    | (?P<backslash>\\)              # any other backslash vanishes
    | (?P<open>[(\[])
    | (?P<weighted>:\s*(?P<weight>[+-]?[.\d]+)\s*\))
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<colon>:)
    """,
    re.X,
)

# A1111 splits every run of text on this, so `xBREAK` and `BREAKy` stay words.
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


# ---------------------------------------------------------------------------------------------
# Emphasis


def parse(text: str) -> list[tuple[str, float]]:
    """``(text, weight)`` runs of ``text``, as A1111's ``parse_prompt_attention`` returns them.

    Each closing bracket multiplies the weights of everything since its opening bracket, in the
    order the brackets close; brackets still open at the end multiply outermost first, round
    ones before square ones. That order is what makes ``(((house:1.3))`` come out as
    ``1.5730000000000004`` here as in A1111. Unmatched closers are text. Adjacent runs of equal
    weight merge, so a result never has two neighbours with ``==`` weights.
    ``BREAK`` is the entry ``("BREAK", -1.0)`` (its weight is multiplied like any other).
    Never raises: see the module docstring for the one reading that differs from A1111's.
    """
    runs: list[list] = []  # [text, weight], mutated in place as brackets close
    round_opens: list[int] = []
    square_opens: list[int] = []
    pos = 0
    while pos < len(text):
        m = _EMPHASIS_TOKEN.match(text, pos)
        pos = m.end()
        kind = m.lastgroup  # the outer group: "weighted", never "weight"
        if kind == "escape":
            runs.append([m.group()[1], 1.0])
        elif kind == "backslash":
            runs.append(["", 1.0])
        elif kind == "open":
            (round_opens if m.group() == "(" else square_opens).append(len(runs))
        elif kind == "weighted" and round_opens:
            weight = _float_or_none(m.group("weight"))
            if weight is None:  # A1111 raises here; read the colon as text and go on
                _add_text(runs, ":")
                pos = m.start() + 1
            else:
                _scale(runs, round_opens.pop(), weight)
        elif m.group() == ")" and round_opens:
            _scale(runs, round_opens.pop(), _ROUND)
        elif m.group() == "]" and square_opens:
            _scale(runs, square_opens.pop(), _SQUARE)
        else:
            _add_text(runs, m.group())
    for start in round_opens:
        _scale(runs, start, _ROUND)
    for start in square_opens:
        _scale(runs, start, _SQUARE)
    return _merge_equal_neighbours(runs or [["", 1.0]])


def _float_or_none(number: str) -> float | None:
    """A weight as A1111 reads it, or None where its ``float()`` would raise (``.``, ``1.2.3``)."""
    try:
        return float(number)
    except ValueError:
        return None


def _add_text(runs: list[list], text: str) -> None:
    """Append plain text at weight 1, with a BREAK marker wherever A1111 splits it."""
    for i, piece in enumerate(_BREAK_SPLIT.split(text)):
        if i:
            runs.append(list(BREAK))
        runs.append([piece, 1.0])


def _scale(runs: list[list], start: int, factor: float) -> None:
    """Multiply every run from ``start`` on; one multiplication per close, as A1111 does it."""
    for run in runs[start:]:
        run[1] *= factor


def _merge_equal_neighbours(runs: list[list]) -> list[tuple[str, float]]:
    """Join adjacent runs whose weights compare equal; the first run's weight is kept."""
    merged = [runs[0]]
    for text, weight in runs[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, float(weight)) for text, weight in merged]


# ---------------------------------------------------------------------------------------------
# Scheduling


@dataclass(frozen=True)
class _Edit:
    """``[before:after:when]``: ``before`` up to and including step ``when``, then ``after``."""

    before: _Pieces
    after: _Pieces
    when: float  # an int, or +-inf / nan where A1111 would have raised


@dataclass(frozen=True)
class _Alternation:
    """``[a|b|...]``: option ``(step - 1) % n`` at step ``step``."""

    options: tuple[_Pieces, ...]


# A leaf's text as a tuple of fixed strings and step-dependent pieces.
_Pieces = tuple[Union[str, _Edit, _Alternation], ...]


def schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """``(end_at_step, text)`` pairs, as A1111's ``get_learned_conditioning_prompt_schedules``.

    ``[from:to:when]`` shows ``from`` up to step ``when`` and ``to`` after it; ``[to:when]`` and
    ``[from::when]`` leave one side empty. A ``when`` with a decimal point is a fraction of
    ``steps`` (``int(when * steps)``), otherwise a step number; either is capped at ``steps``,
    and only values >= 1 start a new entry. ``[a|b|...]`` cycles through its options at every
    step, the empty option included (``[fe|]male``). Entry ``(t, s)`` is evaluated at step
    ``t``; the last entry always ends at ``steps``. When the text does not parse as A1111's
    grammar (e.g. ``a|b`` outside brackets, or an unbalanced ``[``), the whole text is in force
    throughout: ``[(steps, text)]``. Brackets nested deeper than :data:`MAX_DEPTH` levels are
    read that way too (A1111 itself runs out of stack from about 250). See :func:`text_at` for
    which entry a sampling step uses.

    Time: linear in ``len(text)`` for text that cannot hold an edit or an alternation and for
    text that is one well-formed run (every bracket paired and valid, no ``:`` or ``|`` outside
    brackets); text that mixes stray brackets with edits or alternations is read by the Earley
    parse of the whole text (docs/emphasis.md, "Time").
    """
    if not _may_schedule(text):
        return [(steps, text)]
    # The one-pass reading allocates a list per open bracket and a node per edit; the cyclic
    # collector's full passes would re-walk all of them (a 10^5-deep text took 1.7x as long), and
    # they hold no cycles. The Earley parse below runs with the collector on: its forest has cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        pieces = _run_pieces(text, steps)
        if pieces is _TOO_DEEP:
            return [(steps, text)]
        if pieces is not None:
            return _entries(pieces, steps)
    finally:
        if collecting:
            gc.enable()
    try:
        pieces = _parse_schedule(text, steps)
    except RecursionError:  # nesting beyond Python's stack, where A1111 raises too
        return [(steps, text)]
    return [(steps, text)] if pieces is None else _entries(pieces, steps)


MAX_DEPTH = 480
"""Brackets nested deeper than this are not scheduled: the whole text is in force at every step
(A1111 raises ``RecursionError`` from about 250 levels)."""

# Where an edit can end: a colon, optional space, a number as LEAF_NUMBER reads it, space, `]`.
_EDIT_END = re.compile(
    r":\s*[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)\s*\]"
)
_NUMBER = re.compile(_EDIT_END.pattern[len(r":\s*"):-len(r"\s*\]")])
_SPACE = re.compile(r"\s+")


def _may_schedule(text: str) -> bool:
    """False when no reading of ``text`` holds an edit or an alternation, so that every reading
    (and a failed parse) gives ``[(steps, text)]``: no ``[``, or no ``|`` and nothing that can end
    an edit. One pass of C-level searches; the common case for prompts and for hostile text."""
    return "[" in text and ("|" in text or _EDIT_END.search(text) is not None)


_TOO_DEEP = object()


def _run_pieces(text: str, steps: int):
    """The pieces of ``text`` when the whole text is one run of the leaf grammar, else None
    (``_TOO_DEEP`` beyond :data:`MAX_DEPTH`); one pass, a stack of open brackets.

    A run is what ``leaf_run`` derives: plain text, ``(x)``, ``(x:y)``, ``[x]``, edits and
    alternations, nested, with every bracket closed by its own kind and no ``:`` or ``|`` outside
    brackets. Its reading is unique (what a bracket is follows from the ``:`` and ``|`` at its own
    level), and when the whole text is a run, the Earley parse picks that reading first: rule
    order puts ``leaf_run`` before stray brackets. ``tests/test_emphasis.py`` compares this with
    the Earley parse on every short text over the grammar's characters.
    """
    # Each open bracket: [kind, segments, bars]; a segment is a list of pieces, cut at `:` or `|`.
    stack: list[list] = []
    top: list = []  # the pieces of the run itself
    plain_start = 0
    too_deep = False
    n = len(text)
    i = 0

    def flush(upto: int) -> None:
        if upto > plain_start:
            (stack[-1][1][-1] if stack else top).append(text[plain_start:upto])

    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n or text[i + 1] == "\n":
                return None  # LEAF_CHARS cannot read it: no parse at all
            i += 2
            continue
        if c not in "[]():|":
            i += 1
            continue
        flush(i)
        plain_start = i + 1
        if c in "([":
            if len(stack) >= MAX_DEPTH:
                too_deep = True
            stack.append([c, [[]], 0])
        elif c in ":|":
            if not stack or (c == "|" and stack[-1][0] == "("):
                return None
            if c == "|":
                stack[-1][2] += 1
            stack[-1][1].append([c])  # the separator leads its segment
        else:
            if not stack:
                return None
            kind, segments, bars = stack.pop()
            if (kind == "(") != (c == ")"):
                return None
            made = _close(kind, segments, bars, steps)
            if made is None:
                return None
            (stack[-1][1][-1] if stack else top).extend(made)
        i += 1
    if stack:
        return None
    if too_deep:
        return _TOO_DEEP
    flush(n)
    return tuple(top)


def _close(kind: str, segments: list[list], bars: int, steps: int) -> list | None:
    """The pieces of one closed bracket from its segments (each after the first led by its `:` or
    `|`), or None when the leaf grammar has no reading of it as a run."""
    colons = len(segments) - 1 - bars
    if kind == "(":
        if colons > 1:
            return None
        return ["(", *_joined(segments), ")"]
    if bars:
        if colons:
            return None
        return [_Alternation(tuple(tuple(segment[1:] if k else segment) for k, segment in enumerate(segments)))]
    if not colons:
        return ["[", *segments[0], "]"]
    if colons > 2:
        return None
    when = segments[-1][1:]
    if len(when) > 1 or (when and not isinstance(when[0], str)):
        return None  # a bracket between the last `:` and the `]`
    number = _when_text(when[0] if when else "")
    if number is None:
        return None
    if colons == 1:
        return [_Edit((), tuple(segments[0]), _when(number, steps))]
    return [_Edit(tuple(segments[0]), tuple(segments[1][1:]), _when(number, steps))]


def _when_text(text: str) -> str | None:
    """The number in ``[WS] NUMBER [WS]`` as the grammar's terminals read it, else None."""
    pos = 0
    space = _SPACE.match(text)
    if space:
        pos = space.end()
    number = _NUMBER.match(text, pos)
    if number is None:
        return None
    space = _SPACE.match(text, number.end())
    end = space.end() if space else number.end()
    return number.group() if end == len(text) else None


def _joined(segments: list[list]) -> list:
    """The pieces of all segments, separators included, as the text reads."""
    out: list = []
    for segment in segments:
        out.extend(segment)
    return out


def _entries(pieces: _Pieces, steps: int) -> list[tuple[int, str]]:
    """The schedule of parsed text: an entry at every ``when`` and, with alternation, every step."""
    ends = {steps}
    ends.update(when for when in _edit_steps(pieces) if when >= 1)
    if _has_alternation(pieces):
        ends.update(range(1, steps + 1))
    return [(end, _render(pieces, end)) for end in sorted(ends)]


def variants(text: str, steps: int) -> tuple[str, ...]:
    """The distinct texts of ``schedule(text, steps)``, in order of first use: what to encode."""
    return tuple(dict.fromkeys(entry for _, entry in schedule(text, steps)))


def text_at(entries: list[tuple[int, str]], step: int) -> str:
    """The text in force at 0-based sampling step ``step``, by A1111's ``reconstruct_cond_batch``.

    A1111's denoiser counts its calls from 0 and uses the first entry with
    ``step <= end_at_step``, so the entry ``(t, s)`` covers steps up to and including ``t``:
    in ``schedule("a [b:3]", 10) == [(3, "a "), (10, "a b")]`` the text ``"a "`` is used at
    steps 0-3 (four steps), ``"a b"`` at 4-9. Pass the index of a diffusers loop
    (``for i, t in enumerate(timesteps)``) as ``step`` to reproduce A1111 exactly. Past the
    last entry A1111 falls back to the first entry, and so does this function.
    """
    for end, entry in entries:
        if step <= end:
            return entry
    return entries[0][1]


def _parse_schedule(text: str, steps: int) -> _Pieces | None:
    """The pieces of ``text`` with each ``when`` resolved for ``steps``; None if it does not parse."""
    from lark.exceptions import LarkError

    try:
        tree = _leaf_parser().parse(text)
    except LarkError:
        return None
    return _pieces(tree, steps)


def _pieces(node, steps: int) -> _Pieces:
    """Flatten a parse tree into pieces; only edits and alternations keep their structure."""
    if node is None:  # an absent optional part, e.g. `from` in `[to:when]`
        return ()
    if isinstance(node, str):  # a lark Token
        return (str(node),)
    if node.data == "leaf_edit":
        before, after, _, when, _ = node.children
        return (_Edit(_pieces(before, steps), _pieces(after, steps), _when(when, steps)),)
    if node.data == "leaf_alternate":
        options = []
        for option in node.children:
            options.append(_pieces(option, steps))
        return (_Alternation(tuple(options)),)
    flat: list = []
    for child in node.children:  # a loop, not a generator: one stack frame per tree level
        flat.extend(_pieces(child, steps))
    return tuple(flat)


def _when(number: str, steps: int) -> float:
    """The last step of ``from`` for ``when`` as written: a fraction if it has a ``.``, else a step."""
    value = float(number)
    if "." in number:
        value *= steps
    if not math.isfinite(value):  # A1111 raises in int(); +inf clamps to steps, -inf never ends
        return min(steps, value)
    return min(steps, int(value))


def _edit_steps(pieces: _Pieces):
    """Every ``when`` in the text, inside unchosen branches too (A1111 visits the whole tree)."""
    for piece in pieces:
        if isinstance(piece, _Edit):
            yield piece.when
            yield from _edit_steps(piece.before)
            yield from _edit_steps(piece.after)
        elif isinstance(piece, _Alternation):
            for option in piece.options:
                yield from _edit_steps(option)


def _has_alternation(pieces: _Pieces) -> bool:
    """Whether any ``[a|b]`` occurs, at any depth."""
    for piece in pieces:
        if isinstance(piece, _Alternation):
            return True
        if isinstance(piece, _Edit) and (_has_alternation(piece.before) or _has_alternation(piece.after)):
            return True
    return False


def _render(pieces: _Pieces, step: int) -> str:
    """The text at schedule step ``step`` (A1111 numbers these from 1)."""
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, _Edit):
            out.append(_render(piece.before if step <= piece.when else piece.after, step))
        else:
            out.append(_render(piece.options[(step - 1) % len(piece.options)], step))
    return "".join(out)


def leaf_grammar() -> str:
    """The leaf layer's grammar: the text of ``grammar/a1111_leaf.lark``, a file of its own, so a
    directive of the neutral layer cannot change how leaf text is read."""
    from .parser import grammar_text

    return grammar_text("a1111_leaf.lark")


@lru_cache(maxsize=1)
def _leaf_parser():
    """The Earley parser of the leaf layer, built once on first use (the only cached state)."""
    from lark import Lark

    return Lark(leaf_grammar(), start="leaf_prompt", parser="earley")
