"""Text -> AST: the bracket-aware lexer and the LALR parser of the neutral layer.

Three steps, each linear in the text and free of recursion (docs/architecture.md, "The front end"):

1. :class:`_Raw` splits the text at ``[``, ``]``, weight-like ``:number`` and keywords (one
   regex pass) and reads option lists;
2. :class:`_Classes` decides what the grammar cannot: which ``[`` opens a group (the original
   extension tried to parse one and backed off when it held fewer than two parts: exponential on
   nested unclosed brackets) and where a text part inside a group ends; :func:`_terminals` reads
   the prompt from the start with those tables, deciding which ``:`` starts a weight, and emits
   the terminals of ``grammar/neutral_prompt.lark`` in source order;
3. Lark's LALR parser (its parser state, fed the terminals one by one) reduces the grammar's
   rules and :class:`_ToAst`, one method per rule, builds the AST at each reduction.

Where the time goes on a typical prompt (``benchmarks/bench_parse.py``): about a third in steps
1-2, the rest in Lark's LALR loop and the transformer's node building.

Reading rules (docs/language.md), as the original tokenizer sees text: it splits at ``[``, ``]``,
``:`` and whole-word keywords, and ignores whitespace-only pieces between them. Deliberate
differences (docs/language.md): whitespace inside a part is kept verbatim; ``\\[ \\] \\( \\) \\:
\\\\`` are escapes, not brackets; an unclosed group reads as text; ``nan``/``inf`` and spellings
that are not decimal numbers (``1_0``) are not weights.
"""

from __future__ import annotations

import dataclasses
import gc
import re
from functools import lru_cache
from importlib import resources
from math import isfinite
from pathlib import Path
from typing import Iterator

from lark import Lark, Transformer
from lark.lexer import Lexer

from .ast import Group, Leaf, Option, Part, Prompt, Span
from .errors import (
    DuplicateOptionError, MalformedOptionsError, NonFiniteWeightError, OptionRangeError, ParseError,
    UnbalancedBracketError, UnclosedOptionsError, UnknownOptionError,
)
from .keywords import KEYWORDS, Keyword, spec
from .lexical import NONFINITE, NUMBER_RE, option_lists, scan_brackets

__all__ = ["parse", "ParseError", "NUMBER_RE"]

# Raw token kinds. A `_WEIGHTISH` token is a `:` and the number after it, up to the next split
# point: the only colons that can start a weight. Every other colon is text.
_OPEN, _CLOSE, _WEIGHTISH, _KW, _TEXT = range(5)
_KIND_OF_FIRST = {"[": _OPEN, "]": _CLOSE, ":": _WEIGHTISH, "\\": None}  # anything else: a keyword


def _split_pattern() -> re.Pattern:
    """Where the neutral layer splits, as the original tokenizer splits: at ``[``, ``]``, ``:``
    and whole-word keywords (keywords.KEYWORD_PATTERN, longest first).

    - Escapes (``\\[ \\] \\( \\) \\: \\\\``) are matched, and skipped as text, so that ``\\[``
      never opens anything.
    - A colon is matched only with the number that follows it up to the next split point (the
      original's next piece, whitespace around it included): only such a colon can be a weight.
    - Each alternative starts with a literal character, so the regex engine skips text between
      split points at C speed (a leading ``\\b`` or group would make it try every alternative
      at every character: ~4x slower on a typical prompt). ``\\bAND`` is written as ``AND``
      followed by a look-behind for a word character before it, which means the same.
    """
    names = sorted((k.name for k in KEYWORDS), key=lambda name: -len(name))
    keyword_ahead = r"\b(?:" + "|".join(re.escape(name) for name in names) + r")\b"
    number = r"\s*(?:" + NUMBER_RE + r"|(?i:" + NONFINITE.pattern + r"))\s*"
    return re.compile("|".join([
        r"\\[\[\]():\\]",
        r"\[",
        r"\]",
        ":" + number + r"(?=[\[\]:]|" + keyword_ahead + r"|\Z)",
        *(re.escape(name) + r"(?<!\w" + re.escape(name) + r")\b" for name in names),
    ]))


_SPLIT = _split_pattern()


_OPTION = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(" + NUMBER_RE + r")\s*")


# ---------------------------------------------------------------------------------------------
# Lexing: raw tokens


class _Raw:
    """The original's token list, as parallel arrays: keywords, ``[``, ``]``, weight-like ``:``
    with their number, and the text pieces between them (whitespace-only pieces dropped, as the
    original drops them). A colon that no number follows is text here; every decision the
    original makes about it is the one it makes about text (it never starts a weight), so
    leaving it inside its text piece keeps the reading and spares a token."""

    __slots__ = ("src", "kinds", "starts", "ends", "options", "on_nonfinite")

    def __init__(self, src: str, on_nonfinite=None):
        self.src = src
        self.on_nonfinite = on_nonfinite
        kinds: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        # keyword token index -> (options, '(' offset, offset after ')')
        options: dict[int, tuple[tuple[Option, ...], int, int]] = {}
        self.options = options
        lists = None  # option list starts -> their ends, read when a keyword is followed by '('
        pos = 0  # start of the pending text piece
        n = len(src)
        # No match runs past the `)` of an option list (none holds a `)` but an escape, which
        # ends with it), so the matches after a list are those a search from its end would find.
        for m in _SPLIT.finditer(src):
            start, end = m.span()
            if start < pos:  # inside an option list
                continue
            kind = _KIND_OF_FIRST.get(src[start], _KW)
            if kind is None:  # an escape: part of the text
                continue
            if start > pos and not src[pos:start].isspace():
                kinds.append(_TEXT)
                starts.append(pos)
                ends.append(start)
            list_end = None
            if kind == _KW and end < n and src[end] == "(":
                if lists is None:
                    lists = dict(option_lists(src))
                list_end = lists.get(end)
                if list_end is not None:
                    if src[list_end - 1] != ")":
                        raise UnclosedOptionsError(
                            "unclosed option list", src, end, n,
                            hint=f"close the options of {m.group()} with ')', e.g. {spec(m.group()).example}",
                        )
                    options[len(kinds)] = (
                        _parse_options(src, Keyword(m.group()), end, list_end - 1), end, list_end,
                    )
            kinds.append(kind)
            starts.append(start)
            ends.append(end)
            pos = end if list_end is None else list_end
        if n > pos and not src[pos:].isspace():
            kinds.append(_TEXT)
            starts.append(pos)
            ends.append(n)
        self.kinds, self.starts, self.ends = kinds, starts, ends


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
# Classifying: which `[` opens a group, which `:` starts a weight


class _Classes:
    """What the lexer decides that a context-free grammar cannot: which ``[`` would open a group
    if a part started there (with its ``]``, its weight and the token after it), and where a text
    part read from a token inside a group ends. Token indices into :class:`_Raw`.

    The original extension decides a ``[`` by trying to parse a group there and backing off when
    it holds fewer than two parts (docs/language.md, "Groups"): exponential on nested unclosed
    brackets. The same decision is made here for every ``[`` in one right-to-left sweep: where the
    parts read from a token on end, and whether they are two or more, depends only on the tokens
    after it, so each is computed once, in O(1), from the values of later tokens. The reading
    (:func:`_terminals`) then keeps the decisions it reaches. Linear in the number of tokens,
    whatever their shape; no recursion. The sweep starts at the last token and stops at the first
    ``[``: before it the reading is at the top level, where no table is needed.
    """

    __slots__ = ("group_close", "group_next", "group_weight", "text_end", "text_weight")

    def __init__(self, kinds: list[int], first: int):
        n = len(kinds)
        # For every token i from the first `[` on, as if a text part inside a group started there:
        # the token after it (a keyword, its group's `]`, or after its weight) and its weight-like
        # ':' (-1: none). A weight is a number followed by a keyword or the end ("strong",
        # whatever the depth), or one right before the group's `]`.
        text_end = [n] * (n + 1)
        text_weight = [-1] * (n + 1)
        # For every token i, as if a group's parts started there: the token where they end (a `]`
        # or the end) and how many parts they are (counted up to 2).
        parts_end = [n] * (n + 1)
        parts_count = [1] * (n + 1)
        group_close: dict[int, int] = {}  # every `[` that would open a group if a part started there
        group_next: dict[int, int] = {}  # token after that group and its weight
        group_weight: dict[int, int] = {}
        # The `]` that closes what is open at i is the nearest `]` after which the count of `[`
        # minus `]` from there to the end is one more than from i on (``depth``).
        close_at_depth: dict[int, int] = {}
        depth = 0
        next_kw = next_strong = n
        for i in range(n - 1, first - 1, -1):
            k = kinds[i]
            if k == _KW:
                next_kw = i
            elif k == _CLOSE:
                close_at_depth[depth] = i
                depth -= 1
            elif k == _OPEN:
                depth += 1
                r = parts_end[i + 1]
                if r < n and kinds[r] == _CLOSE and parts_count[i + 1] >= 2:
                    group_close[i] = r
                    nxt = r + 1
                    if nxt < n and kinds[nxt] == _WEIGHTISH:
                        group_weight[i] = nxt
                        nxt += 1
                    group_next[i] = nxt
            elif k == _WEIGHTISH and (i + 1 == n or kinds[i + 1] == _KW):
                next_strong = i
            close = close_at_depth.get(depth + 1, n)
            e = next_kw if next_kw < close else close
            if next_strong < e:
                text_end[i], text_weight[i] = next_strong + 1, next_strong
            elif e == close < n and e > i and kinds[e - 1] == _WEIGHTISH:
                text_end[i], text_weight[i] = e, e - 1
            else:
                text_end[i] = e
            nxt = group_next[i] if i in group_next else text_end[i]
            if nxt >= n or kinds[nxt] == _CLOSE:
                parts_end[i] = nxt
            else:
                j = nxt + 1 if kinds[nxt] == _KW else nxt  # a keyword, or an implicit AND
                parts_end[i], parts_count[i] = parts_end[j], 2
        self.group_close, self.group_next, self.group_weight = group_close, group_next, group_weight
        self.text_end, self.text_weight = text_end, text_weight


# ---------------------------------------------------------------------------------------------
# Tokens for Lark


class _Tok:
    """A terminal for Lark's LALR parser. Duck-types ``lark.Token`` (type, value, positions) at
    a fraction of its construction cost. Lark reads line and column only for its own error
    messages, which a terminal stream from :func:`_terminals` never causes; they are None
    (offsets are what we use). ``options``: an ``OPTIONS`` terminal's parsed options."""

    __slots__ = ("type", "value", "start_pos", "end_pos", "options")
    line = column = end_line = end_column = None

    def __init__(self, type_: str, value: str, start_pos: int, end_pos: int, options=None):
        self.type = type_
        self.value = value
        self.start_pos = start_pos
        self.end_pos = end_pos
        self.options = options

    def __repr__(self) -> str:
        return f"Token({self.type}, {self.value!r}, {self.start_pos})"


def _terminals(raw: _Raw) -> Iterator[_Tok]:
    """The terminals of ``grammar/neutral_prompt.lark`` for the whole prompt, in source order.

    Reads the prompt from its first token as the original does, keeping the groups and weights
    the reading meets (:class:`_Classes` has decided every ``[`` beforehand), and emits each
    part's terminals as it reads them: a group's ``[`` and ``]``, a text, a weight, a keyword and
    its options. Zero-width terminals mark what is not written: an empty text (``AND_PERP``
    first, two keywords in a row) and an implicit AND (text after a group, or after a weighted
    part and a stray ``]``).
    """
    Token = _Tok
    src, kinds, starts, ends, options = raw.src, raw.kinds, raw.starts, raw.ends, raw.options
    n = len(kinds)
    try:
        classes = _Classes(kinds, kinds.index(_OPEN))
    except ValueError:  # no `[`: no group can open, the whole reading is at the top level
        group_close = group_next = group_weight = {}
        text_end = text_weight = None
    else:
        group_close, group_next, group_weight = classes.group_close, classes.group_next, classes.group_weight
        text_end, text_weight = classes.text_end, classes.text_weight
    open_groups: list[int] = []  # the `[` of the groups the reading is inside
    prev_end = 0  # an empty text or implicit AND sits right after whatever precedes it
    i = 0
    while True:
        if i in group_close:  # a group part: read its parts
            yield Token("LBRACKET", "[", starts[i], ends[i])
            prev_end = ends[i]
            open_groups.append(i)
            i += 1
            continue
        if open_groups:
            stop, colon = text_end[i], text_weight[i]
        else:  # top level: a weight is a number before a keyword, the end or a stray `]`
            colon, depth, stop = -1, 0, i
            while stop < n:
                k = kinds[stop]
                if k == _KW:
                    break
                if k == _WEIGHTISH:
                    if stop + 1 == n or kinds[stop + 1] == _KW or (kinds[stop + 1] == _CLOSE and depth == 0):
                        colon = stop
                        stop += 1
                        break
                elif k == _OPEN:
                    depth += 1
                elif k == _CLOSE and depth:
                    depth -= 1
                stop += 1
        text_stop = colon if colon >= 0 else stop
        if text_stop > i:  # the text: every token up to the weight or the part's end, trimmed
            text = src[starts[i]:ends[text_stop - 1]]
            stripped = text.strip()
            a = starts[i] + len(text) - len(text.lstrip())
            prev_end = a + len(stripped)
            yield Token("TEXT", stripped, a, prev_end)
        else:
            yield Token("TEXT", "", prev_end, prev_end)
        if colon >= 0:
            yield _weight_token(raw, colon)
            prev_end = ends[colon]
        i = stop
        while open_groups and (i >= n or kinds[i] == _CLOSE):  # a group's parts end at its `]`
            group = open_groups.pop()
            yield Token("RBRACKET", "]", starts[i], ends[i])
            prev_end = ends[i]
            weight = group_weight.get(group)
            if weight is not None:
                yield _weight_token(raw, weight)
                prev_end = ends[weight]
            i = group_next[group]
        if i >= n:
            return
        if kinds[i] == _KW:
            yield Token("KEYWORD", src[starts[i]:ends[i]], starts[i], ends[i])
            prev_end = ends[i]
            opts = options.get(i)
            if opts is not None:
                yield Token("OPTIONS", src[opts[1]:opts[2]], opts[1], opts[2], opts[0])
                prev_end = opts[2]
            i += 1
        else:
            yield Token("IMPLICIT_AND", "", prev_end, prev_end)


def _weight_token(raw: _Raw, colon: int) -> _Tok:
    """The ``WEIGHT`` terminal of the weight-like token ``colon`` (``:`` and its number)."""
    src, start = raw.src, raw.starts[colon]
    text = src[start + 1:raw.ends[colon]]
    number = text.strip()  # the split matched `\s*number\s*`; strip() removes that same whitespace
    at = start + 1 + len(text) - len(text.lstrip())
    if isfinite(float(number)):  # a decimal number (or nan/inf, which float() reads too)
        return _Tok("WEIGHT", number, start, at + len(number))
    err = NonFiniteWeightError(
        "non-finite weight", src, at, at + len(number),
        hint="a weight is a finite decimal number such as 0.5, -1 or 1e-3; "
        "nan or inf would make the whole image NaN",
    )
    if raw.on_nonfinite is None:
        raise err
    # Read on as if the weight were the finite number written in its place (same length).
    return _Tok("WEIGHT", raw.on_nonfinite(err), start, at + len(number))


# ---------------------------------------------------------------------------------------------
# The tree: Lark reduces the grammar's rules, this transformer builds their AST nodes


_KEYWORDS = {k.value: k for k in Keyword}
_AND = Keyword.AND

# Building nodes. The AST's frozen dataclasses store each field through ``object.__setattr__`` in
# their generated ``__init__``; a typical prompt builds about 25 nodes, which took about as long
# as Lark's whole LALR loop. These functions build the same nodes by storing each field through
# its slot's descriptor: about 2x faster. Unpacking one setter per field (in the dataclass's field order)
# fails at import if a field is added; tests/test_parser.py checks that they equal the
# constructors' nodes.
_new = object.__new__


def _setters(cls) -> tuple:
    return tuple(getattr(cls, f.name).__set__ for f in dataclasses.fields(cls))


_SPAN_START, _SPAN_END = _setters(Span)
_LEAF_TEXT, _LEAF_SPAN = _setters(Leaf)
_GROUP_PROMPT, _GROUP_SPAN = _setters(Group)
_PROMPT_PARTS, _PROMPT_SPAN, _PROMPT_SOURCE = _setters(Prompt)
(_PART_KEYWORD, _PART_BODY, _PART_WEIGHT, _PART_SPAN, _PART_OPTIONS, _PART_KEYWORD_SPAN,
 _PART_WEIGHT_SPAN) = _setters(Part)


def _span(start: int, end: int) -> Span:
    span = _new(Span)
    _SPAN_START(span, start)
    _SPAN_END(span, end)
    return span


def _leaf(text: str, start: int, end: int) -> Leaf:
    span = _new(Span)
    _SPAN_START(span, start)
    _SPAN_END(span, end)
    leaf = _new(Leaf)
    _LEAF_TEXT(leaf, text)
    _LEAF_SPAN(leaf, span)
    return leaf


def _group(parts: list[Part], start: int, end: int) -> Group:
    span = _new(Span)
    _SPAN_START(span, start)
    _SPAN_END(span, end)
    group = _new(Group)
    _GROUP_PROMPT(group, _prompt(parts))
    _GROUP_SPAN(group, span)
    return group


def _prompt(parts: list[Part], source: str | None = None) -> Prompt:
    """A list of parts (as the ``prompt`` rule collects them) as a :class:`Prompt`."""
    span = _new(Span)
    _SPAN_START(span, parts[0].span.start)
    _SPAN_END(span, parts[-1].span.end)
    prompt = _new(Prompt)
    _PROMPT_PARTS(prompt, tuple(parts))
    _PROMPT_SPAN(prompt, span)
    _PROMPT_SOURCE(prompt, source)
    return prompt


def _part(keyword: Keyword, body, weight: float, start: int, end: int, options: tuple, keyword_span,
          weight_span) -> Part:
    span = _new(Span)
    _SPAN_START(span, start)
    _SPAN_END(span, end)
    part = _new(Part)
    _PART_KEYWORD(part, keyword)
    _PART_BODY(part, body)
    _PART_WEIGHT(part, weight)
    _PART_SPAN(part, span)
    _PART_OPTIONS(part, options)
    _PART_KEYWORD_SPAN(part, keyword_span)
    _PART_WEIGHT_SPAN(part, weight_span)
    return part


class _ToAst(Transformer):
    """Called by the LALR parser at each reduction (inline: no parse tree, no recursion), one
    method per rule of ``grammar/neutral_prompt.lark``.

    ``part`` returns its body, weight and extent; ``prompt`` reductions make it a :class:`Part`
    (with the keyword that joins it) and append it to the list of parts so far (the rule is
    left-recursive); :func:`_prompt` turns such a list into a :class:`Prompt`, for a group in
    ``part`` and for the root in :func:`parse`.
    """

    def part(self, children):
        """``TEXT WEIGHT?`` or ``LBRACKET prompt RBRACKET WEIGHT?`` -> (body, weight, weight span,
        start, end)."""
        first, last = children[0], children[-1]
        start = first.start_pos
        if first.type == "TEXT":
            body = _leaf(first.value, start, first.end_pos)
        else:
            body = _group(children[1], start, children[2].end_pos)
        if last.type == "WEIGHT":
            end = last.end_pos
            return body, float(last.value), _span(last.start_pos, end), start, end
        return body, 1.0, None, start, last.end_pos

    def prompt(self, children):
        """``part`` or ``prompt (KEYWORD OPTIONS? | IMPLICIT_AND) part`` -> list of :class:`Part`."""
        body, weight, weight_span, start, end = children[-1]
        if len(children) == 1:
            return [_part(_AND, body, weight, start, max(start, end), (), None, weight_span)]
        parts, joint = children[0], children[1]
        if joint.type == "IMPLICIT_AND":
            parts.append(_part(_AND, body, weight, start, max(start, end), (), None, weight_span))
            return parts
        at = joint.start_pos
        if len(children) == 4:  # with an option list
            options = children[2]
            keyword_span = _span(at, options.end_pos)
            options = options.options
        else:
            options, keyword_span = (), _span(at, joint.end_pos)
        parts.append(_part(_KEYWORDS[joint.value], body, weight, at, end, options, keyword_span, weight_span))
        return parts


def grammar_text(name: str = "neutral_prompt.lark") -> str:
    """The text of a grammar file of ``grammar/`` (shipped as ``neutral_lang.grammar``)."""
    try:
        return resources.files("neutral_lang.grammar").joinpath(name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree, not installed
        return (Path(__file__).resolve().parent.parent / "grammar" / name).read_text("utf-8")


class _NeutralLexer(Lexer):
    """Lark's view of the lexer: the "text" it is given is a :class:`_Raw` token list."""

    def __init__(self, lexer_conf):
        pass

    def lex(self, raw):
        return _terminals(raw)


@lru_cache(maxsize=1)
def _lalr() -> Lark:
    return Lark(
        grammar_text(),
        start="prompt",
        parser="lalr",
        lexer=_NeutralLexer,
        transformer=_ToAst(),
        # No table cache: Lark's is a pickle in the shared temp dir, which another user could plant
        # (docs/reliability.md). Building the tables costs tens of milliseconds, once per process.
        cache=False,
    )


@lru_cache(maxsize=1)
def _lalr_state():
    """The class and configuration of the LALR parser's state (Lark's ``ParserState``, reached
    through its interactive parser), to feed our terminals to a fresh one per parse.

    ``Lark.parse`` does the same through a lexer thread and a parser front end; feeding the
    terminals to the state directly spares that per-call setup, about 15% of a typical prompt's
    parse time. The tables, the reductions and the transformer's calls are Lark's either way."""
    state = _lalr().parse_interactive().parser_state
    return type(state), state.parse_conf


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
    them. ``strict=True``: unbalanced ``[ ]`` or ``( )`` raise :class:`UnbalancedBracketError`. In
    both modes a ``nan``/``inf`` weight raises :class:`NonFiniteWeightError` and an invalid keyword
    option list an :class:`OptionError`; every error is a :class:`ParseError` with a position,
    a caret excerpt and a hint (docs/language.md). ``TypeError`` for a text that is not a ``str``.
    Linear time in the length of the text; no recursion at any depth.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() takes a str, not {type(text).__name__}")
    if strict:
        _check_balanced(text)
    return _parse(_Raw(text))


def parse_recovering(text: str, on_nonfinite) -> Prompt:
    """Parse leniently, reporting each non-finite weight to ``on_nonfinite(err)`` instead of
    raising, and reading on as if the number text it returns (as long as the one written, e.g.
    ``"111"`` for ``nan``) were written there. Option errors still raise. One pass, however many
    such weights: the linter uses it to report them all (neutral_lang/linter/engine.py)."""
    return _parse(_Raw(text, on_nonfinite))


def _parse(raw: _Raw) -> Prompt:
    state_class, conf = _lalr_state()
    feed = state_class(conf, None).feed_token
    # The cyclic GC is paused while the tree is built, as compile pauses it (compiler.py): the
    # parse makes no reference cycles, and the collector's full collections, each walking every
    # node built so far, made a 10^5-part prompt ~30% slower (growth 13.9x per 10x, 10.4x
    # paused). An inline pause: a context manager would cost more than it on a short prompt.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for token in _terminals(raw):
            feed(token)
        end = len(raw.src)
        return _prompt(feed(_Tok("$END", "", end, end), True), raw.src)
    finally:
        if collecting:
            gc.enable()
