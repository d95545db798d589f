"""Scans that several rules share: brackets, option lists, word spelling, and the prompts of a tree.

Everything here is iterative and linear (or n log n) in the length of the text: the linter must
keep up with prompts the parser handles (10^4 levels of nesting, 10^5 parts).
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from functools import lru_cache
from typing import Iterator

from ..ast import Group, Leaf, Part, Prompt
from ..keywords import KEYWORD_RE
from ..keywords import KEYWORDS as _TABLE
from ..lexical import Brackets, option_lists, scan_brackets

__all__ = [
    "KEYWORDS", "LONG_KEYWORDS", "Brackets", "scan_brackets", "option_lists", "group_brackets", "prompts",
    "WORD_RE", "classify_word", "osa_distance", "spelling", "splits_text", "in_text_brackets",
]

# The keyword table's spellings (neutral_lang/keywords.py); option lists and bracket pairing are
# lexical facts (neutral_lang/lexical.py), re-exported here for the rules that import them from scan.
KEYWORDS = tuple(k.name for k in _TABLE)
#: Keywords that can be misspelt or glued to a word (plain ``AND`` is also an English word).
LONG_KEYWORDS = tuple(k for k in KEYWORDS if k != "AND")
# Every keyword / every long one as a regex alternation, longest first.
_ALTERNATION = "(?:" + "|".join(re.escape(k) for k in sorted(KEYWORDS, key=len, reverse=True)) + ")"
_LONG_ALTERNATION = "(?:" + "|".join(re.escape(k) for k in sorted(LONG_KEYWORDS, key=len, reverse=True)) + ")"


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


def text_parts(root: Prompt) -> Iterator[tuple[Part, str, int]]:
    """``(part, text, offset)`` for every part of the tree whose body is non-empty text, with the
    source offset of the text's first character: what the rules that read inside texts walk."""
    for _, prompt in prompts(root):
        for part in prompt.parts:
            if isinstance(part.body, Leaf) and part.body.text:
                yield part, part.body.text, part.body.span.start


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

# Word characters, and the full-width low line of a full-width AND＿PERP.
WORD_RE = re.compile(r"[\w\uff3f]+")
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
    characters, ``("misspelt", fix)`` for a near miss, ``("width", fix)`` for a keyword written in
    full-width (or other compatibility) letters, ``ＡＮＤ＿ＰＥＲＰ``; ``None`` for an ordinary word.

    Plain ``and``/``And`` is English and never flagged; a near miss must look like an attempt at
    a keyword (start with ``AND``, or start with ``a``/``A`` and hold an underscore). A keyword
    whose last letter is doubled (``AND_PERPP``, ``AND_SALTTT``) is a typo, not a keyword next to
    the word ``P``: the fix drops the extra letters.
    """
    if word in KEYWORDS:
        return None
    if not word.isascii():
        wide = _compatibility_keyword(word)
        if wide is not None:
            return "width", wide
    upper = word.upper()
    if upper in LONG_KEYWORDS:
        return "case", upper
    if _GLUED_RE.search(word):
        pieces = [p for p in re.split(f"({_GLUED_RE.pattern})", word) if p]
        keywords = [p for p in pieces if p in LONG_KEYWORDS]
        if len(keywords) == 1 and pieces[-1] != keywords[0] and set(pieces[-1]) == {keywords[0][-1]} \
                and len(pieces[-1]) <= 2:
            pieces.pop()  # the key held down, AND_PERPP: a typo, dropped
            if len(pieces) == 1:
                return "misspelt", keywords[0]
        return "glued", " ".join(pieces)
    if 5 <= len(word) <= 11 and (word.startswith("AND") or (word[0] in "aA" and "_" in word)):
        kw = _nearest_keyword(word)
        if kw is not None:
            return "misspelt", kw
    return None


# A long keyword anywhere; a bare AND only between characters that are not ASCII word
# characters once folded (CJK text around it), so that ＨＡＮＤ stays a word.
_FOLDED_KEYWORD_RE = re.compile(_LONG_ALTERNATION + r"|(?<![A-Za-z0-9_])AND(?![A-Za-z0-9_])")


def _compatibility_keyword(word: str) -> str | None:
    """The word with its keywords in ASCII, when NFKC folds some of its letters into a keyword
    (``ＡＮＤ＿ＰＥＲＰ`` -> ``AND_PERP``; ``城堡ＡＮＤ怪物`` -> ``城堡 AND 怪物``); else ``None``.

    Folded one character at a time, so the rest of the word keeps its own spelling."""
    folded = [unicodedata.normalize("NFKC", ch) for ch in word]
    flat = "".join(ch if len(ch) == 1 else "\0" for ch in folded)  # a one-to-one image of the word
    out, pos = [], 0
    for m in _FOLDED_KEYWORD_RE.finditer(flat):
        if word[m.start():m.end()] == m.group():
            continue  # already ASCII: NP303 (glued) speaks for it
        before = word[pos:m.start()]
        out.append(before + (" " if before else "") + m.group())
        pos = m.end()
        if pos < len(word):
            out.append(" ")
    if not out:
        return None
    return "".join(out) + word[pos:]


@lru_cache(maxsize=4)  # NP301-NP303 classify the same words; results are immutable
def _spelling(text: str) -> tuple[tuple[str, int, int, str, str], ...]:
    out = []
    for m in WORD_RE.finditer(text):
        word = m.group()
        if word.isascii() and "a" not in word and "A" not in word:  # every ASCII keyword-like word has one
            continue
        found = classify_word(word)
        if found is not None:
            out.append((found[0], m.start(), m.end(), word, found[1]))
    for m in _SEPARATED_RE.finditer(text):
        out.append(("misspelt", m.start(), m.end(), m.group(), "AND_" + m.group(1)))
    return tuple(out)


def spelling(text: str, kind: str) -> Iterator[tuple[int, int, str, str, bool]]:
    """``(start, end, word, fix, splits)`` for every word of ``text`` that :func:`classify_word`
    puts in ``kind``; for ``misspelt`` also the separated spellings ``AND PERP``, ``AND-PERP``.
    ``splits``: whether the keyword of the fix would have text on both sides (:func:`splits_text`);
    where it would not, a fix would only trade this finding for an empty part."""
    for found_kind, start, end, word, fix in _spelling(text):
        if found_kind == kind:
            yield start, end, word, fix, splits_text(text, start, end, fix)


_KEYWORD_IN_FIX_RE = KEYWORD_RE
_BARE_WEIGHT_RE = re.compile(r"(?:^|(\b" + _ALTERNATION + r"|\[))\s*:\s*[+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?$")
_KEYWORD_BEFORE_RE = re.compile(r"\b" + _ALTERNATION + r"(?:\([^()]*\))?$")


def splits_text(text: str, start: int, end: int, fix: str) -> bool:
    """Whether each keyword of ``fix``, put in place of ``text[start:end]``, has a part's text before
    and after it: a non-space character that is not ``[`` before, and one that is not ``]`` after.
    Looks no further than the spaces around the span (linear over all words of a text)."""
    i, j = start - 1, end
    while i >= 0 and text[i].isspace():
        i -= 1
    while j < len(text) and text[j].isspace():
        j += 1
    before, after = text[i:i + 1] if i >= 0 else "", text[j:j + 1]
    # A keyword right before or after (`AND AND_PREP b`) or a bare weight after (`AND_PREP :0`)
    # would leave an empty part between them.
    if _KEYWORD_BEFORE_RE.search(text[max(0, i - 200):i + 1]) or _KEYWORD_IN_FIX_RE.match(text, j):
        before = after = ""
    window = text[max(0, i - 60):i + 1]
    bare = _BARE_WEIGHT_RE.search(window)
    if bare is not None and (bare.group(1) or bare.start() > 0 or i < 60):
        before = ""  # ` :0 AND_PREP b`: only a weight before it, the part's text is empty
    if text[end:end + 1] == "(" and fix.endswith(("AND", "_PERP", "_SALT", "_TOPK")):
        return False  # the parenthesis would become an option list, valid or not
    found = list(_KEYWORD_IN_FIX_RE.finditer(fix))
    if any(not fix[a.end():b.start()].strip() for a, b in zip(found, found[1:])):
        return False  # two keywords in a row: an empty part between them
    if found and _nonfinite_weight_at_end(text[max(0, start - 60):start] + fix[:found[0].start()].rstrip()):
        return False  # `x:NANAND_TOPK b` -> `x:NAN AND_TOPK b` would make a non-finite weight (NP401)
    for m in found:
        left = fix[:m.start()].rstrip()[-1:] or before
        right = fix[m.end():].lstrip()[:1] or after
        if left in ("", "[") or right in ("", "]", ":"):
            return False
    return True


_WEIGHT_TAIL_RE = re.compile(r":\s*([+-]?(?:[0-9.]+(?:[eE][+-]?[0-9]+)?|nan|inf(?:inity)?))$", re.IGNORECASE)


def _nonfinite_weight_at_end(head: str) -> bool:
    """Whether ``head`` ends in ``:w`` with ``w`` NaN, infinite, or too large for a float: text that
    a split right after it would turn into a non-finite weight."""
    m = _WEIGHT_TAIL_RE.search(head)
    if m is None:
        return False
    try:
        return not math.isfinite(float(m.group(1)))
    except ValueError:
        return False


def in_text_brackets(text: str, root: Prompt | None):
    """A predicate ``inside(pos)``: whether offset ``pos`` lies inside a matched pair of A1111
    brackets that a keyword there would split (NP202): any ``( )``, and any ``[ ]`` that neither is
    a group nor starts a part (a keyword inside a part-starting ``[`` makes it a group, as meant).
    O(n log n) to build, O(log n) per query."""
    starts: set[int] = set()
    if root is not None:
        for _, prompt in prompts(root):
            for part in prompt.parts:
                body = part.body
                starts.add(body.span.start)
    events: list[tuple[int, int]] = []
    for open_, close, ch in scan_brackets(text).pairs:
        if ch == "(" or open_ not in starts:
            events.append((open_ + 1, 1))
            events.append((close + 1, -1))
    events.sort()
    positions = [p for p, _ in events]
    depth, running = [], 0
    for _, delta in events:
        running += delta
        depth.append(running)

    def inside(pos: int) -> bool:
        i = bisect.bisect_right(positions, pos)
        return i > 0 and depth[i - 1] > 0

    return inside
