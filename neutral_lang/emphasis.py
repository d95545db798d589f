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
  reads text it cannot parse: the whole text at every step. :func:`parse` refuses text inside more
  than :data:`MAX_DEPTH` brackets at once (:class:`EmphasisTooDeepError`), where A1111's reading
  costs quadratic time.

And one place where A1111 has no single answer: text with stray brackets (``[a:1]]``) has several
readings, and A1111's parser picks among them in an order that changes from launch to launch.
:func:`schedule` always takes the reading that keeps every construct (docs/emphasis.md, "Stray
brackets").

The schedule grammar is the leaf layer, ``grammar/a1111_leaf.lark``. :func:`schedule` reads it in
one pass without a parser generator; ``tests/leaf_readings.py`` enumerates the grammar's readings
with Lark's Earley parser, and the tests check that the answer is always one of them.
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass
from typing import Union

__all__ = ["BREAK", "MAX_DEPTH", "EmphasisTooDeepError", "depth_error", "parse", "schedule", "variants", "text_at"]

BREAK = ("BREAK", -1.0)
"""The chunk-boundary marker in :func:`parse` output, exactly as A1111 emits it."""


class EmphasisTooDeepError(ValueError):
    """Text inside more than :data:`MAX_DEPTH` brackets open at once, which :func:`parse` refuses.

    ``position`` is the 0-based character index of the first such text, ``depth`` the number of
    brackets open there.
    """

    def __init__(self, text: str, position: int, depth: int):
        self.position = position
        self.depth = depth
        super().__init__(
            f"text at character {position} is inside {depth} brackets at once (nested or left open); "
            f"emphasis reads at most {MAX_DEPTH}, where the weight is already 1.1**{MAX_DEPTH} = "
            f"{_ROUND ** MAX_DEPTH:.1e}: remove brackets, or escape them as \\( \\) \\[ \\] to keep them as text"
        )

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
    See the module docstring for the one reading that differs from A1111's.

    Time: each closing bracket multiplies every run since its opening one, so the work is the
    number of runs times the brackets around each; that is why text inside more than
    :data:`MAX_DEPTH` (480) brackets at once, nested or left open, is refused.

    Raises:
        EmphasisTooDeepError: (a ``ValueError``) text inside more than :data:`MAX_DEPTH` brackets
            open at once (at 480 the weight is already 1.1**480 = 7.4e19); the message names the
            character position.
    """
    texts: list[str] = []
    weights: list[float] = []  # one per text
    closes: list[tuple[int, int, float]] = []  # (first run, end, factor) of each closing bracket, in order
    opens: dict[str, list[int]] = {"(": [], "[": []}
    for kind, value, position in _events(text):
        if kind == "open":
            opens[value].append(len(weights))
        elif kind == "close":
            closes.append((opens[value[0]].pop(), len(weights), value[1]))
        else:
            depth = len(opens["("]) + len(opens["["])
            if depth > MAX_DEPTH:
                raise EmphasisTooDeepError(text, position, depth)
            if kind == "run":
                texts.append(value)
                weights.append(1.0)
            else:
                _add_text(texts, weights, value)
    _apply_closes(weights, closes)
    _close_left_open(weights, opens["("], opens["["])
    if not texts:
        return [("", 1.0)]
    return _merge_equal_neighbours(texts, weights)


_BLOCK = 4096  # runs multiplied together: a block's weights stay in the CPU's cache


def _apply_closes(weights: list[float], closes: list[tuple[int, int, float]]) -> None:
    """Multiply ``weights[first:end]`` by ``factor`` for each close, in order: what A1111 does at
    each closing bracket, done afterwards. Every weight gets the same multiplications in the same
    order, but block by block (all closes of one block of runs, then the next), so a text with
    hundreds of brackets around 10^5 runs does not stream every weight through memory once per
    bracket (that made 10^6 characters 17x slower than 10^5, not 10x)."""
    if not closes:
        return
    blocks: list[list[int]] = [[] for _ in range((len(weights) + _BLOCK - 1) // _BLOCK)]
    for index, (first, end, _) in enumerate(closes):
        for block in range(first // _BLOCK, (end - 1) // _BLOCK + 1) if end > first else ():
            blocks[block].append(index)
    for block, indices in enumerate(blocks):
        low, high = block * _BLOCK, (block + 1) * _BLOCK
        for index in indices:
            first, end, factor = closes[index]
            a, b = max(first, low), min(end, high)
            weights[a:b] = [weight * factor for weight in weights[a:b]]


def _close_left_open(weights: list[float], rounds: list[int], squares: list[int]) -> None:
    """What A1111 does with brackets still open at the end: each round one multiplies everything
    after it by 1.1, outermost first, then each square one by 1/1.1. So run ``j`` is multiplied
    by 1.1 once per round bracket opened before it, then by 1/1.1 once per square one: done run
    by run here, the same multiplications in the same order, with the result kept for the next
    run of the same weight and counts (one pass over the runs instead of one per bracket)."""
    if not rounds and not squares:
        return
    known: dict[tuple[float, int, int], float] = {}
    r = s = 0
    for j, weight in enumerate(weights):
        while r < len(rounds) and rounds[r] <= j:
            r += 1
        while s < len(squares) and squares[s] <= j:
            s += 1
        if not r and not s:
            continue
        key = (weight, r, s)
        result = known.get(key) if weight else None  # 0.0 == -0.0 as keys, but not as results
        if result is None:
            result = weight
            for _ in range(r):
                result *= _ROUND
            for _ in range(s):
                result *= _SQUARE
            known[key] = result
        weights[j] = result


def depth_error(text: str) -> EmphasisTooDeepError | None:
    """The error :func:`parse` would raise for ``text``, found without multiplying any weight (the
    same reading, one linear pass); None when it would not raise. For the linter (NP204), which
    reports instead of raising."""
    depth = 0
    for kind, value, position in _events(text):
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif depth > MAX_DEPTH:
            return EmphasisTooDeepError(text, position, depth)
    return None


def _events(text: str):
    """A1111's emphasis scanner as events ``(kind, value, position)``: ``("open", "(" or "[", i)``;
    ``("close", (bracket, factor), i)`` for a closer that closes an open bracket of its kind;
    ``("run", text, i)`` for one run of its own (an escape, a vanishing backslash) and
    ``("text", text, i)`` for text :func:`_add_text` splits at BREAK (unmatched closers, plain
    text, stray colons). ``i`` is where the token starts in ``text``."""
    rounds = squares = 0
    pos = 0
    while pos < len(text):
        m = _EMPHASIS_TOKEN.match(text, pos)
        start = m.start()
        pos = m.end()
        kind = m.lastgroup  # the outer group: "weighted", never "weight"
        if kind == "escape":
            yield "run", m.group()[1], start
        elif kind == "backslash":
            yield "run", "", start
        elif kind == "open":
            if m.group() == "(":
                rounds += 1
            else:
                squares += 1
            yield "open", m.group(), start
        elif kind == "weighted" and rounds:
            weight = _float_or_none(m.group("weight"))
            if weight is None:  # A1111 raises here; read the colon as text and go on
                pos = start + 1
                yield "text", ":", start
            else:
                rounds -= 1
                yield "close", ("(", weight), start
        elif m.group() == ")" and rounds:
            rounds -= 1
            yield "close", ("(", _ROUND), start
        elif m.group() == "]" and squares:
            squares -= 1
            yield "close", ("[", _SQUARE), start
        else:
            yield "text", m.group(), start


def _float_or_none(number: str) -> float | None:
    """A weight as A1111 reads it, or None where its ``float()`` would raise (``.``, ``1.2.3``)."""
    try:
        return float(number)
    except ValueError:
        return None


def _add_text(texts: list[str], weights: list[float], text: str) -> None:
    """Append plain text at weight 1, with a BREAK marker wherever A1111 splits it."""
    for i, piece in enumerate(_BREAK_SPLIT.split(text)):
        if i:
            texts.append(BREAK[0])
            weights.append(BREAK[1])
        texts.append(piece)
        weights.append(1.0)


def _merge_equal_neighbours(texts: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """Join adjacent runs whose weights compare equal; the first run's weight is kept. The texts
    of a group are joined once (adding them one by one was quadratic on 10^6 colons)."""
    merged: list[tuple[str, float]] = []
    group = [texts[0]]
    weight = weights[0]
    for text, next_weight in zip(texts[1:], weights[1:]):
        if next_weight == weight:
            group.append(text)
        else:
            merged.append(("".join(group), float(weight)))
            group = [text]
            weight = next_weight
    merged.append(("".join(group), float(weight)))
    return merged


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

    Text with stray brackets (``[a:1]]``, ``a [b:2] (c``) has several readings under A1111's
    grammar, and A1111's own choice among them changes from one launch to the next; here every
    bracket pair that can be emphasis, an edit or an alternation is read so, and the other
    brackets are text (docs/emphasis.md, "Stray brackets").

    Time and memory: linear in ``len(text)`` (one pass; no Earley parse).
    """
    if not _may_schedule(text):
        return [(steps, text)]
    # The reading allocates a node per edit and a few list entries per bracket; the cyclic
    # collector's full passes would re-walk all of them (a 10^5-deep text took 1.7x as long), and
    # they hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        pieces = _read(text, steps)
        if pieces is None or pieces is _TOO_DEEP:
            return [(steps, text)]
        return _entries(pieces, steps)
    finally:
        if collecting:
            gc.enable()


MAX_DEPTH = 480
"""Brackets nested deeper than this are not scheduled: the whole text is in force at every step
(A1111 raises ``RecursionError`` from about 250 levels)."""

# Where an edit can end: a colon, optional space, a number as LEAF_NUMBER reads it, space, `]`.
_EDIT_END = re.compile(
    r":\s*[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)\s*\]"
)
_NUMBER = re.compile(_EDIT_END.pattern[len(r":\s*"):-len(r"\s*\]")])
_SPACE = re.compile(r"\s+")
# LEAF_CHARS: anything but brackets, colons and bars; a backslash takes the next character along.
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")


def _may_schedule(text: str) -> bool:
    """False when no reading of ``text`` holds an edit or an alternation, so that every reading
    (and a failed parse) gives ``[(steps, text)]``: no ``[``, or no ``|`` and nothing that can end
    an edit. One pass of C-level searches; the common case for prompts and for hostile text."""
    return "[" in text and ("|" in text or _EDIT_END.search(text) is not None)


_TOO_DEEP = object()


def _read(text: str, steps: int):
    """The pieces of ``text`` in the reading described in docs/emphasis.md ("Stray brackets"): every
    bracket pair that can be emphasis, an edit or an alternation is read so, every other bracket
    and every ``:`` outside them is text. None when the leaf grammar has no reading at all (a ``|``
    outside every alternation, a backslash at the end or before a newline); ``_TOO_DEEP`` when
    brackets are read nested deeper than :data:`MAX_DEPTH`.

    One pass with a stack of open brackets. The pieces go to one list, ``out``, as they are read,
    each open bracket and separator as its own one-character string; a bracket that closes as
    emphasis leaves ``out`` as it is, an edit or alternation replaces its stretch of ``out`` by
    one object, and a bracket that cannot close is text already, so nothing is ever moved twice.

    Why this is a reading of the grammar, and which: inside a construct there is no stray bracket,
    so the only bracket a `]` or `)` can pair with is the innermost open one, if it is of its kind;
    a closer that cannot pair, or a pair that is no construct, leaves every bracket still open
    unpairable (each would enclose a stray), and those all become text at once. The ``|`` is no
    stray: one outside every alternation means no parse.
    """
    out: list = []  # the pieces read so far, top level and open brackets alike
    kinds: list[str] = []  # the open brackets, innermost last ...
    starts: list[int] = []  # ... where each sits in `out`
    depths: list[int] = []  # ... the deepest construct read inside each so far
    separators: list[int] = []  # positions in `out` of the `:` and `|` inside open brackets
    separator_base: list[int] = []  # ... where each open bracket's own separators begin
    open_bars = 0  # `|` among `separators`
    n = len(text)
    i = 0
    while i < n:
        plain = _PLAIN.match(text, i)
        if plain is not None:
            out.append(plain.group())
            i = plain.end()
            if i == n:
                break
        c = text[i]
        i += 1
        if c == "\\":
            return None  # at the end or before a newline: LEAF_CHARS cannot read it, no parse at all
        if c in "([":
            kinds.append(c)
            starts.append(len(out))
            depths.append(0)
            separator_base.append(len(separators))
            out.append(c)
        elif c in ":|":
            if not kinds:
                if c == "|":
                    return None  # `|` is no stray: it must be inside an alternation
                out.append(c)
            elif c == "|" and kinds[-1] == "(":
                return None  # this `|` can only be inside this `(`, or at the top level
            else:
                open_bars += c == "|"
                separators.append(len(out))
                out.append(c)
        else:  # `)` or `]`
            if kinds and (kinds[-1] == "(") == (c == ")"):
                base = separator_base[-1]
                own = separators[base:]
                bars = sum(out[p] == "|" for p in own)
                made = _close(out, starts[-1], own, bars, steps)
                if made is not None:
                    depth = depths.pop() + 1
                    if depth > MAX_DEPTH:
                        return _TOO_DEEP
                    open_bars -= bars
                    del separators[base:]
                    separator_base.pop()
                    kinds.pop()
                    start = starts.pop()
                    if made is _EMPHASIS:
                        out.append(c)
                    else:
                        del out[start:]
                        out.append(made)
                    if depths and depths[-1] < depth:
                        depths[-1] = depth
                    continue
            # No pair: this closer is text, and so is every bracket still open.
            if open_bars:
                return None
            del kinds[:], starts[:], depths[:], separators[:], separator_base[:]
            out.append(c)
    if open_bars:
        return None
    return tuple(out)


_EMPHASIS = object()  # from _close: the bracket is emphasis, its pieces stay where they are


def _close(out: list, start: int, own: list[int], bars: int, steps: int):
    """What the open bracket at ``out[start]`` is when its closer comes next: ``_EMPHASIS``, an
    :class:`_Edit` or :class:`_Alternation` built from ``out[start + 1:]``, or None when the leaf
    grammar has no construct for it. ``own`` holds the positions of its own ``:`` and ``|`` in
    ``out``, ``bars`` how many of them are ``|``."""
    colons = len(own) - bars
    if out[start] == "(":
        return _EMPHASIS if colons <= 1 else None
    if bars:
        if colons:
            return None
        bounds = [start, *own, len(out)]
        return _Alternation(tuple(tuple(out[a + 1:b]) for a, b in zip(bounds, bounds[1:])))
    if not colons:
        return _EMPHASIS
    if colons > 2:
        return None
    when = out[own[-1] + 1:]
    if len(when) > 1 or (when and not isinstance(when[0], str)):
        return None  # a bracket between the last `:` and the `]`
    number = _when_text(when[0] if when else "")
    if number is None:
        return None
    if colons == 1:
        return _Edit((), tuple(out[start + 1:own[0]]), _when(number, steps))
    return _Edit(tuple(out[start + 1:own[0]]), tuple(out[own[0] + 1:own[1]]), _when(number, steps))


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
