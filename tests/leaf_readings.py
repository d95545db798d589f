"""Every reading A1111's leaf grammar allows, as a reference for ``emphasis.schedule``.

Imported by name (``from leaf_readings import readings``): pytest puts ``tests/`` on ``sys.path``.
The grammar (``grammar/a1111_leaf.lark``) is ambiguous wherever brackets are stray; Lark's Earley
parser with ``ambiguity="explicit"`` keeps every derivation, and :func:`readings` turns each into
the schedule it gives. ``emphasis.schedule`` must answer with one of them (docs/emphasis.md, "Stray
brackets"), or with the whole text when there is none. Exponential in the worst case: for short
texts only.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

from lark import Lark
from lark.exceptions import LarkError

from neutral_lang import emphasis


@lru_cache(maxsize=2)
def _parser(ambiguity: str) -> Lark:
    return Lark(emphasis.leaf_grammar(), start="leaf_prompt", parser="earley", ambiguity=ambiguity)


def _alternatives(node, steps: int) -> set[tuple]:
    """The flattened pieces of every derivation below ``node`` (edits and alternations kept)."""
    if node is None:  # an absent optional part, e.g. `from` in `[to:when]`
        return {()}
    if isinstance(node, str):  # a Token
        return {(str(node),)}
    if node.data == "_ambig":
        found: set[tuple] = set()
        for child in node.children:
            found |= _alternatives(child, steps)
        return found
    if node.data == "leaf_edit":
        before, after, _, when, _ = node.children
        when_step = emphasis._when(when, steps)
        return {
            (emphasis._Edit(b, a, when_step),)
            for b in _alternatives(before, steps)
            for a in _alternatives(after, steps)
        }
    if node.data == "leaf_alternate":
        options = [_alternatives(option, steps) for option in node.children]
        return {(emphasis._Alternation(chosen),) for chosen in itertools.product(*options)}
    sequences: set[tuple] = {()}
    for child in node.children:
        tails = _alternatives(child, steps)
        sequences = {_joined(head, tail) for head in sequences for tail in tails}
    return sequences


def _joined(head: tuple, tail: tuple) -> tuple:
    """``head + tail`` with the strings where they meet merged: derivations that only cut the same
    text into other tokens (stray runs, spaces, plain text) come out equal and are counted once."""
    if head and tail and isinstance(head[-1], str) and isinstance(tail[0], str):
        return (*head[:-1], head[-1] + tail[0], *tail[1:])
    return head + tail


def readings(text: str, steps: int) -> set[tuple] | None:
    """The schedules (as tuples of entries) of every reading of ``text``; None if it has none."""
    try:
        tree = _parser("explicit").parse(text)
    except LarkError:
        return None
    return {tuple(emphasis._entries(pieces, steps)) for pieces in _alternatives(tree, steps)}


def earley_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """The schedule of the one reading Lark's ``ambiguity="resolve"`` picks (the whole text if none)."""
    try:
        tree = _parser("resolve").parse(text)
    except LarkError:
        return [(steps, text)]
    (pieces,) = _alternatives(tree, steps)
    return emphasis._entries(pieces, steps)


def is_a_reading(text: str, steps: int) -> bool:
    """Whether ``emphasis.schedule(text, steps)`` is one of the grammar's readings of ``text``."""
    found = readings(text, steps)
    ours = emphasis.schedule(text, steps)
    return ours == [(steps, text)] if found is None else tuple(ours) in found
