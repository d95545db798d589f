"""Scans that several rules share: brackets, option lists, word spelling, and the prompts of a tree.

Everything here is iterative and linear (or n log n) in the length of the text: the linter must
keep up with prompts the parser handles (10^4 levels of nesting, 10^5 parts).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from ..ast import Group, Prompt
from ..keywords import KEYWORDS as _TABLE
from ..lexical import Brackets, option_lists, scan_brackets

__all__ = [
    "KEYWORDS", "LONG_KEYWORDS", "Brackets", "scan_brackets", "option_lists", "group_brackets", "prompts",
    "WORD_RE", "classify_word", "osa_distance", "spelling",
]

# The keyword table's spellings (neutral_lang/keywords.py); option lists and bracket pairing are
# lexical facts (neutral_lang/lexical.py), re-exported here for the rules that import them from scan.
KEYWORDS = tuple(k.name for k in _TABLE)
#: Keywords that can be misspelt or glued to a word (plain ``AND`` is also an English word).
LONG_KEYWORDS = tuple(k for k in KEYWORDS if k != "AND")


def prompts(root: Prompt) -> Iterator[tuple[int, Prompt]]:
    """Every prompt of the tree, the root (depth 0) and each group's inner prompt (depth = how
    many groups enclose it), pre-order, without recursion."""
    stack = [(0, root)]
    while stack:
        depth, prompt = stack.pop()
        yield depth, prompt
        for part in reversed(prompt.parts):
            if isinstance(part.body, Group):
                stack.append((depth + 1, part.body.prompt))


def group_brackets(root: Prompt) -> set[int]:
    """Offsets of the ``[`` and ``]`` that open and close groups (the others are A1111 text)."""
    out: set[int] = set()
    for _, prompt in prompts(root):
        for part in prompt.parts:
            if isinstance(part.body, Group):
                out.add(part.body.span.start)
                out.add(part.body.span.end - 1)
    return out


# ---------------------------------------------------------------------------------------------
# Spelling: one classification of words serves the three keyword-spelling rules (NP301-NP303).

WORD_RE = re.compile(r"\w+")
_SEPARATED_RE = re.compile(r"\bAND(?:[ \t]+_?|[ \t]*[-.][ \t]*)("
                           + "|".join(re.escape(k[len("AND_"):]) for k in LONG_KEYWORDS) + r")\b")
_GLUED_RE = re.compile("|".join(LONG_KEYWORDS))


def osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
    adjacent characters (``AND_PREP`` is one swap from ``AND_PERP``)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _nearest_keyword(word: str) -> str | None:
    upper = word.upper()
    scored = sorted((osa_distance(upper, kw), kw) for kw in LONG_KEYWORDS)
    (best, kw), (second, _) = scored[0], scored[1]
    return kw if best <= 2 and best < second else None


def classify_word(word: str) -> tuple[str, str] | None:
    """What a ``\\w+`` word that is not a keyword says about keywords: ``("case", fix)`` for a
    keyword in the wrong case, ``("glued", fix)`` for a keyword run together with other word
    characters, ``("misspelt", fix)`` for a near miss; ``None`` for an ordinary word.

    Plain ``and``/``And`` is English and never flagged; a near miss must look like an attempt at
    a keyword (start with ``AND``, or start with ``a``/``A`` and hold an underscore).
    """
    if word in KEYWORDS:
        return None
    upper = word.upper()
    if upper in LONG_KEYWORDS:
        return "case", upper
    if _GLUED_RE.search(word):
        pieces = [p for p in re.split(f"({_GLUED_RE.pattern})", word) if p]
        return "glued", " ".join(pieces)
    if 5 <= len(word) <= 11 and (word.startswith("AND") or (word[0] in "aA" and "_" in word)):
        kw = _nearest_keyword(word)
        if kw is not None:
            return "misspelt", kw
    return None


@lru_cache(maxsize=4)  # NP301-NP303 classify the same words; results are immutable
def _spelling(text: str) -> tuple[tuple[str, int, int, str, str], ...]:
    out = []
    for m in WORD_RE.finditer(text):
        word = m.group()
        if "a" not in word and "A" not in word:  # every keyword-like word has one
            continue
        found = classify_word(word)
        if found is not None:
            out.append((found[0], m.start(), m.end(), word, found[1]))
    for m in _SEPARATED_RE.finditer(text):
        out.append(("misspelt", m.start(), m.end(), m.group(), "AND_" + m.group(1)))
    return tuple(out)


def spelling(text: str, kind: str) -> Iterator[tuple[int, int, str, str]]:
    """``(start, end, word, fix)`` for every word of ``text`` that :func:`classify_word` puts in
    ``kind``; for ``misspelt`` also the separated spellings ``AND PERP``, ``AND-PERP``."""
    for found_kind, start, end, word, fix in _spelling(text):
        if found_kind == kind:
            yield start, end, word, fix
