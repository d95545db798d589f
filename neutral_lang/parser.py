"""Text -> AST: the bracket-aware lexer and the LALR parser of the neutral layer.

The original extension decides whether ``[`` opens a group by trying to parse one and backing
off when it holds fewer than two parts; nested unclosed brackets make that exponential, and its
recursion fails at ~500 levels. Here the same decisions are made in one right-to-left sweep over
the bracket positions, using three precomputed tables (next keyword, matching ``]``, next weight),
so every ``[`` is decided once, in O(1) amortised, without recursion. The lexer then emits the
terminals of ``grammar/neutral_prompt.lark`` and Lark's LALR parser builds the AST through an
inline transformer (reductions happen as the parser runs: no recursion there either).

Reading rules (docs/language.md), as the original tokenizer sees text: it splits at ``[``, ``]``,
``:`` and whole-word keywords, and ignores whitespace-only pieces between them. Deliberate
differences (docs/language.md): whitespace inside a part is kept verbatim; ``\\[ \\] \\( \\) \\:
\\\\`` are escapes, not brackets; an unclosed group reads as text; ``nan``/``inf`` and spellings
that are not decimal numbers (``1_0``) are not weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark
from lark.lexer import Lexer

from .ast import Group, Leaf, Option, Part, Prompt, Span
from .errors import (
    DuplicateOptionError, MalformedOptionsError, NonFiniteWeightError, OptionRangeError, ParseError,
    UnbalancedBracketError, UnclosedOptionsError, UnknownOptionError,
)
from .keywords import KEYWORD_PATTERN, Keyword, spec
from .lexical import NONFINITE, NUMBER_RE, option_lists, scan_brackets

__all__ = ["parse", "ParseError", "NUMBER_RE"]

# Raw token kinds.
_OPEN, _CLOSE, _COLON, _KW, _TEXT = range(5)

# Split points of the neutral layer. Escapes are matched (and skipped as text) so that `\[`
# never opens anything; the keyword group is keywords.KEYWORD_PATTERN.
_SPLIT = re.compile(r"\\[\[\]():\\]|(\[)|(\])|(:)|" + KEYWORD_PATTERN)

_WEIGHT = re.compile(r"\s*(" + NUMBER_RE + r")\s*")
_NONFINITE = re.compile(r"\s*(" + NONFINITE.pattern + r")\s*", re.IGNORECASE)

_OPTION = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(" + NUMBER_RE + r")\s*")


# ---------------------------------------------------------------------------------------------
# Lexing: raw tokens


class _Raw:
    """The original's token list, as parallel arrays (whitespace-only text pieces dropped)."""

    __slots__ = ("src", "kinds", "starts", "ends", "options", "_num")

    def __init__(self, src: str):
        self.src = src
        kinds: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        # keyword token index -> (options, '(' offset, offset after ')')
        options: dict[int, tuple[tuple[Option, ...], int, int]] = {}
        self.options = options
        kinds_append, starts_append, ends_append = kinds.append, starts.append, ends.append
        lists = {open_: end for open_, end in option_lists(src)}
        pos = 0  # start of the pending text piece
        search = _SPLIT.search
        scan = 0
        n = len(src)
        while True:
            m = search(src, scan)
            if m is None:
                break
            kind = m.lastindex
            if kind is None:  # an escape: part of the text
                scan = m.end()
                continue
            start, end = m.span()
            if start > pos and not src[pos:start].isspace():
                kinds_append(_TEXT)
                starts_append(pos)
                ends_append(start)
            list_end = lists.get(end) if kind == 4 else None
            if list_end is not None:
                if src[list_end - 1] != ")":
                    raise UnclosedOptionsError(
                        "unclosed option list", src, end, n,
                        hint=f"close the options of {m.group(4)} with ')', e.g. {spec(m.group(4)).example}",
                    )
                options[len(kinds)] = (_parse_options(src, Keyword(m.group(4)), end, list_end - 1), end, list_end)
            kinds_append(kind - 1)
            starts_append(start)
            ends_append(end)
            pos = scan = end if list_end is None else list_end
        if n > pos and not src[pos:].isspace():
            kinds_append(_TEXT)
            starts_append(pos)
            ends_append(n)
        self.kinds, self.starts, self.ends = kinds, starts, ends
        self._num: dict[int, bool] = {}

    def is_number(self, i: int) -> bool:
        """Whether token ``i`` is a text piece the original would read as a number (float())."""
        if i >= len(self.kinds) or self.kinds[i] != _TEXT:
            return False
        hit = self._num.get(i)
        if hit is None:
            s, e = self.starts[i], self.ends[i]
            hit = bool(_WEIGHT.fullmatch(self.src, s, e) or _NONFINITE.fullmatch(self.src, s, e))
            self._num[i] = hit
        return hit


def _parse_options(src: str, keyword: Keyword, open_pos: int, close_pos: int) -> tuple[Option, ...]:
    """Read ``(name=value, ...)`` between ``open_pos`` and ``close_pos``; validate every entry
    against the keyword's row in :mod:`neutral_lang.keywords`."""
    row = spec(keyword)
    result: list[Option] = []
    seen: set[str] = set()
    item_start = open_pos + 1
    while True:
        comma = src.find(",", item_start, close_pos)
        item_end = close_pos if comma < 0 else comma
        m = _OPTION.fullmatch(src, item_start, item_end)
        if m is None:
            at = item_start + (len(src[item_start:item_end]) - len(src[item_start:item_end].lstrip()))
            raise MalformedOptionsError(
                "invalid option list", src, min(at, item_end), max(item_end, at + 1),
                hint=f"write options as name=number pairs separated by commas, e.g. {row.example}",
            )
        name, text = m.group(1), m.group(2)
        span = Span(m.start(1), m.end(2))
        option = row.option(name)
        if option is None:
            raise UnknownOptionError(
                "unknown option", src, span.start, m.end(1),
                hint=f"{keyword.value} accepts: {', '.join(o.name for o in row.options)}",
            )
        if name in seen:
            raise DuplicateOptionError("duplicate option", src, span.start, span.end, hint=f"give {name} once")
        seen.add(name)
        value = float(text)
        if not option.accepts(value, text):
            raise OptionRangeError(
                "option out of range", src, m.start(2), m.end(2),
                hint=f"{name} must be {option.describe}",
            )
        result.append(Option(name, value, text, span))
        if comma < 0:
            return tuple(result)
        item_start = comma + 1


# ---------------------------------------------------------------------------------------------
# Structure: which `[` open groups, where parts and weights are


@dataclass(slots=True)
class _Item:
    """One part as the structure sweep finds it (token indices into _Raw)."""

    kw: int  # keyword token index; -1 first part; -2 implicit AND after a group
    group: int  # index of the `[` token of a group body, or -1 for a text body
    first: int  # text body: token range [first, last)
    last: int
    wcolon: int  # token index of the weight's ':' or -1


@dataclass(slots=True)
class _GroupInfo:
    items: list
    close: int  # token index of `]`
    wcolon: int
    end: int  # token index after the group (and its weight)


class _Structure:
    """Decides groups and weights exactly as the original's recursive descent did, in O(n)."""

    def __init__(self, raw: _Raw):
        self.raw = raw
        kinds = raw.kinds
        n = self.n = len(kinds)
        # next_kw[i]: first keyword at or after i; match_close[i]: first `]` that takes the
        # bracket balance below its value at i; next_strong[i]: first ':' at or after i that
        # is a weight whatever the depth (a number followed by a keyword or the end).
        next_kw = [n] * (n + 1)
        match_close = [n] * (n + 1)
        next_strong = [n] * (n + 1)
        balance = [0] * (n + 1)
        b = 0
        for i, k in enumerate(kinds):
            balance[i] = b
            if k == _OPEN:
                b += 1
            elif k == _CLOSE:
                b -= 1
        balance[n] = b
        first_close_at: dict[int, int] = {}
        is_number = raw.is_number
        nk, ns = n, n
        for i in range(n - 1, -1, -1):
            k = kinds[i]
            if k == _KW:
                nk = i
            elif k == _CLOSE:
                first_close_at[balance[i + 1]] = i
            elif k == _COLON and is_number(i + 1) and (i + 2 == n or kinds[i + 2] == _KW):
                ns = i
            next_kw[i] = nk
            next_strong[i] = ns
            match_close[i] = first_close_at.get(balance[i] - 1, n)
        self.next_kw, self.match_close, self.next_strong = next_kw, match_close, next_strong
        # Decide every `[`, right to left: a group's decision only depends on tokens after it.
        groups: dict[int, _GroupInfo] = {}
        self.groups = groups
        for p in range(n - 1, -1, -1):
            if kinds[p] != _OPEN:
                continue
            q = p + 1
            inner = groups.get(q)
            if inner is not None:
                several = inner.end < n and kinds[inner.end] != _CLOSE
            else:
                several = q < n and next_kw[q] < match_close[q]
            if not several:
                continue
            items, r = self._parts(q, nested=True)
            if r < n and kinds[r] == _CLOSE and len(items) >= 2:
                end, wcolon = r + 1, -1
                if end + 1 < n and kinds[end] == _COLON and is_number(end + 1):
                    wcolon, end = end, end + 2
                groups[p] = _GroupInfo(items, r, wcolon, end)
        self.root, _ = self._parts(0, nested=False)

    def _parts(self, i: int, *, nested: bool) -> tuple[list[_Item], int]:
        kinds, n, groups = self.raw.kinds, self.n, self.groups
        items: list[_Item] = []
        kw = -1
        while True:
            g = groups.get(i) if i < n else None
            if g is not None:
                items.append(_Item(kw, i, i, i, g.wcolon))
                i = g.end
            else:
                first = i
                i, last, wcolon = self._text(i, nested)
                items.append(_Item(kw, -1, first, last, wcolon))
            if i >= n or (nested and kinds[i] == _CLOSE):
                return items, i
            if kinds[i] == _KW:
                kw = i
                i += 1
            else:
                kw = -2

    def _text(self, i: int, nested: bool) -> tuple[int, int, int]:
        """Scan a text body from token i: (next token, end of text, weight colon or -1)."""
        kinds, n, is_number = self.raw.kinds, self.n, self.raw.is_number
        if nested:
            close = self.match_close[i]
            e = min(self.next_kw[i], close)
            c = self.next_strong[i]
            if c < e:
                return c + 2, c, c
            if e == close < n and e - 2 >= i and kinds[e - 2] == _COLON and is_number(e - 1):
                return e, e - 2, e - 2
            return e, e, -1
        depth = 0
        j = i
        while j < n:
            k = kinds[j]
            if k == _KW:
                break
            if k == _COLON:
                if is_number(j + 1) and (
                    j + 2 == n or kinds[j + 2] == _KW or (kinds[j + 2] == _CLOSE and depth == 0)
                ):
                    return j + 2, j, j
            elif k == _OPEN:
                depth += 1
            elif k == _CLOSE and depth:
                depth -= 1
            j += 1
        return j, j, -1


# ---------------------------------------------------------------------------------------------
# Tokens for Lark, and the LALR parser


class _Tok:
    """A terminal for Lark's LALR parser. Duck-types ``lark.Token`` (type, value, positions) at
    a fraction of its construction cost, which dominates on 10^5-part prompts."""

    __slots__ = ("type", "value", "start_pos", "end_pos", "line", "column", "end_line", "end_column", "options")

    def __init__(self, type_: str, value: str, start_pos: int, end_pos: int, options=None):
        self.type = type_
        self.value = value
        self.start_pos = start_pos
        self.end_pos = end_pos
        self.line = self.column = self.end_line = self.end_column = None
        self.options = options

    def __repr__(self) -> str:
        return f"Token({self.type}, {self.value!r}, {self.start_pos})"


def _tokens(structure: _Structure):
    """Yield the neutral layer's terminals for the whole prompt, iteratively."""
    Token = _Tok
    raw = structure.raw
    src, starts, ends, kinds = raw.src, raw.starts, raw.ends, raw.kinds
    groups = structure.groups
    stack: list[tuple[list[_Item], int, _GroupInfo | None]] = [(structure.root, 0, None)]
    # Where an empty part sits: right after whatever precedes it.
    prev_end = 0
    while stack:
        items, idx, group = stack.pop()
        if idx == len(items):
            if group is not None:
                close = group.close
                yield Token("RBRACKET", "]", starts[close], ends[close])
                prev_end = ends[close]
                if group.wcolon >= 0:
                    yield _weight_token(raw, group.wcolon)
                    prev_end = ends[group.wcolon + 1]
            continue
        stack.append((items, idx + 1, group))
        item = items[idx]
        if item.kw >= 0:
            kwpos = item.kw
            yield Token("KEYWORD", src[starts[kwpos]:ends[kwpos]], starts[kwpos], ends[kwpos])
            prev_end = ends[kwpos]
            opts = raw.options.get(kwpos)
            if opts is not None:
                options, a, b = opts
                yield Token("OPTIONS", src[a:b], a, b, options)
                prev_end = b
        elif item.kw == -2:
            yield Token("IMPLICIT_AND", "", prev_end, prev_end)
        if item.group >= 0:
            open_ = item.group
            yield Token("LBRACKET", "[", starts[open_], ends[open_])
            prev_end = ends[open_]
            stack.append((groups[open_].items, 0, groups[open_]))
            continue
        a = b = prev_end  # an empty part sits right after whatever precedes it
        stripped = ""
        if item.first < item.last:
            text = src[starts[item.first]:ends[item.last - 1]]
            stripped = text.strip()
            if stripped:
                a = starts[item.first] + len(text) - len(text.lstrip())
                b = a + len(stripped)
        yield Token("TEXT", stripped, a, b)
        prev_end = b
        if item.wcolon >= 0:
            yield _weight_token(raw, item.wcolon)
            prev_end = ends[item.wcolon + 1]


def _weight_token(raw: _Raw, colon: int) -> _Tok:
    src, num = raw.src, colon + 1
    s, e = raw.starts[num], raw.ends[num]
    m = _WEIGHT.fullmatch(src, s, e)
    if m is None or abs(float(m.group(1))) == float("inf"):
        bad = (m or _NONFINITE.fullmatch(src, s, e)).group(1)
        at = src.index(bad, s)
        raise NonFiniteWeightError(
            "non-finite weight", src, at, at + len(bad),
            hint="a weight is a finite decimal number such as 0.5, -1 or 1e-3; "
            "nan or inf would make the whole image NaN",
        )
    return _Tok("WEIGHT", m.group(1), raw.starts[colon], m.end(1))


_KEYWORDS = {k.value: k for k in Keyword}


class _Builder:
    """Inline LALR transformer: builds AST nodes at each reduction (no tree, no recursion).

    ``prompt`` reductions accumulate parts in a list; ``part`` (for a group's inside) and
    :func:`parse` (for the root) turn such a list into a :class:`Prompt`.
    """

    def part(self, children):
        first = children[0]
        if first.type == "TEXT":
            body = Leaf(first.value, Span(first.start_pos, first.end_pos))
        else:
            close = children[2]
            body = Group(_prompt(children[1]), Span(first.start_pos, close.end_pos))
        last = children[-1]
        if last.type == "WEIGHT":
            return (body, float(last.value), Span(last.start_pos, last.end_pos))
        return (body, 1.0, None)

    def prompt(self, children):
        if len(children) == 1:
            return [_part(None, None, children[0])]
        parts = children[0]
        parts.append(_part(children[1], children[2] if len(children) == 4 else None, children[-1]))
        return parts


def _part(joint, options, part) -> Part:
    body, weight, wspan = part
    start = body.span.start
    end = wspan.end if wspan is not None else body.span.end
    if joint is None or joint.type == "IMPLICIT_AND":
        return Part(Keyword.AND, body, weight, Span(start, max(start, end)), (), None, wspan)
    if options is None:
        opts, kspan_end = (), joint.end_pos
    else:
        opts, kspan_end = options.options, options.end_pos
    return Part(
        _KEYWORDS[joint.value], body, weight, Span(joint.start_pos, end), opts,
        Span(joint.start_pos, kspan_end), wspan,
    )


def _prompt(parts: list[Part]) -> Prompt:
    return Prompt(tuple(parts), Span(parts[0].span.start, parts[-1].span.end))


def grammar_text() -> str:
    """The text of ``grammar/neutral_prompt.lark`` (shipped as ``neutral_lang.grammar``)."""
    try:
        return resources.files("neutral_lang.grammar").joinpath("neutral_prompt.lark").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree, not installed
        return (Path(__file__).resolve().parent.parent / "grammar" / "neutral_prompt.lark").read_text("utf-8")


class _StructureLexer(Lexer):
    """Lark's view of our lexer: "text" is a :class:`_Structure`, already analysed."""

    def __init__(self, lexer_conf):
        pass

    def lex(self, structure):
        return _tokens(structure)


@lru_cache(maxsize=1)
def _lalr() -> Lark:
    return Lark(
        grammar_text(),
        start="prompt",
        parser="lalr",
        lexer=_StructureLexer,
        transformer=_Builder(),
        # No table cache: Lark's is a pickle in the shared temp dir, which another user could plant
        # (docs/reliability.md). Building the tables costs tens of milliseconds, once per process.
        cache=False,
    )


# ---------------------------------------------------------------------------------------------
# Strict mode: brackets must balance


def _check_balanced(text: str) -> None:
    """Raise for the first unmatched bracket, as :func:`lexical.scan_brackets` pairs them (the
    brackets the linter reports as NP201)."""
    unmatched = scan_brackets(text).unmatched
    if not unmatched:
        return
    pos, ch = unmatched[0]
    if ch in "[(":
        close = "]" if ch == "[" else ")"
        raise UnbalancedBracketError(
            f"unclosed '{ch}'", text, pos, hint=f"close it with '{close}', or write \\{ch} for a literal bracket",
        )
    opener = "[" if ch == "]" else "("
    raise UnbalancedBracketError(
        f"unmatched '{ch}'", text, pos,
        hint=f"remove it, add the '{opener}' it closes, or write \\{ch} for a literal bracket",
    )


def parse(text: str, *, strict: bool = False) -> Prompt:
    """Parse a Neutral Prompt into its AST.

    Lenient (default): never fails on malformed brackets; unmatched ones are text, as A1111 reads
    them. ``strict=True``: unbalanced ``[ ]`` or ``( )`` raise :class:`ParseError`. In both modes a
    ``nan``/``inf`` weight or an invalid keyword option list raises :class:`ParseError`.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() takes a str, not {type(text).__name__}")
    if strict:
        _check_balanced(text)
    structure = _Structure(_Raw(text))
    parts = _lalr().parse(structure)  # type: ignore[arg-type]
    return Prompt(tuple(parts), Span(parts[0].span.start, parts[-1].span.end), text)
