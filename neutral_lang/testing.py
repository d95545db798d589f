"""Hypothesis strategies for Neutral Prompt texts and trees: test your own prompt tools with them.

    from hypothesis import given
    import neutral_lang as nl

    @given(nl.testing.prompts())
    def test_my_tool_keeps_every_part(text):
        assert my_tool(text).count_parts() == len(nl.parse(text).parts)

- :func:`prompts` draws valid prompt texts using every feature of the language (docs/language.md): all four keywords, nested groups, every weight spelling, keyword options, A1111 leaf
  syntax, the compatibility cases, unicode, and varied whitespace.
- :func:`prompt_cases` draws the same texts together with the tree they must parse to, as
  nested tuples (see :func:`shape`), for tools that need to know what was generated.
- :func:`asts` draws :class:`~neutral_lang.ast.Prompt` trees in canonical form:
  ``parse(format(p)) == p``, spans included.
- :func:`hostile_texts` draws adversarial text: unbalanced and deeply nested brackets,
  misspelt and glued keywords, ``nan``/``inf`` and huge weights, bad option lists, control
  characters, mutated valid prompts.

Every text is built from a plan, part by part, so what a strategy promises holds by construction:
each text from :func:`prompts` parses, leniently and with ``strict=True``, to exactly its planned
tree. This module imports hypothesis and the torch-free core only. See ``docs/testing.md``.
"""

from __future__ import annotations

import re
from typing import Iterable

from hypothesis import strategies as st

from .ast import Group, Keyword, Part, Prompt
from .formatter import format as _format
from .keywords import KEYWORD_RE, KEYWORDS as _TABLE, WINDOW_OPTIONS
from .lexical import NUMBER_RE, has_weight_like_tail
from .parser import parse

__all__ = [
    "prompts", "prompt_cases", "asts", "hostile_texts", "leaf_texts", "weights", "shape", "normalized",
    "Shape", "PartShape", "KEYWORDS",
]

#: Every keyword, in the order the strategies prefer when shrinking (``AND`` first).
KEYWORDS: tuple[str, ...] = tuple(k.name for k in _TABLE)

# The shape of a parsed prompt: one tuple per part, ``(keyword, body, weight, options)``, where
# ``body`` is the leaf's trimmed text or the group's tuple of parts, and ``options`` the keyword's
# ``(name, value, is_fraction)`` triples in written order.
PartShape = tuple  # (str, Union[str, tuple[PartShape, ...]], float, tuple[tuple[str, float, bool], ...])
Shape = tuple  # tuple[PartShape, ...]


def shape(prompt: Prompt, *, normalize: bool = False) -> Shape:
    """The plain-tuple form of a parsed prompt, comparable with what :func:`prompt_cases` plans.

    ``(("AND", "a castle", 1.0, ()), ("AND_TOPK", "glasses", 0.4, (("k", 0.1, True),)))``.
    Spans are left out: they depend on the spelling, the shape does not. Options come in written
    order; ``normalize=True`` gives :func:`normalized` shapes instead. Works at any depth.
    """
    return _map_shape(prompt.parts, lambda part: (part.body.prompt.parts if isinstance(part.body, Group) else None),
                      lambda part, body: _part_shape(part, body, normalize))


def normalized(shape: Shape) -> Shape:
    """Only what a prompt means, to compare two spellings of one prompt (``nl.format`` writes
    options in a fixed order, ``k=.5`` as ``k=0.5``): options sorted by name, and ``is_fraction``
    kept only for ``start``/``end``, where ``2`` (a step) and ``2.`` (a fraction) differ."""
    return _map_shape(shape, lambda part: part[1] if isinstance(part[1], tuple) else None,
                      lambda part, body: (part[0], body, part[2], _normal_options(part[3])))


def _map_shape(parts, children, make):
    """Rebuild a tree of parts bottom-up with ``make(part, body)``, without recursion.

    ``children(part)`` gives a group part's child parts, or ``None`` for a leaf (whose body is
    then the leaf's text)."""
    frames: list[tuple] = [(parts, [])]
    done: tuple | None = None
    while True:
        parts, out = frames[-1]
        if done is not None:
            out.append(make(parts[len(out)], done))
            done = None
        while len(out) < len(parts):
            inner = children(parts[len(out)])
            if inner is not None:
                break
            part = parts[len(out)]
            out.append(make(part, part.body.text if isinstance(part, Part) else part[1]))
        if len(out) < len(parts):
            frames.append((inner, []))
            continue
        frames.pop()
        done = tuple(out)
        if not frames:
            return done


def _normal_options(options: tuple) -> tuple:
    return tuple(sorted((name, value, fraction and name in WINDOW_OPTIONS) for name, value, fraction in options))


def _part_shape(part: Part, body, normalize: bool) -> PartShape:
    opts = tuple((o.name, o.value, o.is_fraction) for o in part.options)
    return (part.keyword.value, body, part.weight, _normal_options(opts) if normalize else opts)


# ---------------------------------------------------------------------------------------------
# Drawing. Strategies are built once, at import; the helpers below take hypothesis' ``draw`` and
# call it on them (building strategies inside a draw costs milliseconds per example).

_NUMBER = re.compile(NUMBER_RE)
_SIGN = st.sampled_from(("", "-", "+"))
_DIGITS = st.integers(0, 999)
_MANTISSA_FORM = st.sampled_from(("int", "int.", ".frac", "int.frac"))
_EXP = st.integers(-6, 6)
_E = st.sampled_from(("e", "E", "e+", "E-"))
_ONE_IN_4 = st.integers(0, 3)
_BOOL = st.booleans()
_WEIGHT_SAMPLES = st.sampled_from(
    ("1", "-1", "0.5", "-0.5", "+.4", "2.", "1e-3", "-1E+2", "0", "1e6", "-1000000", "0.001", "-0"))


def _draw_number(draw) -> str:
    """A decimal number in one of the spellings the language accepts: 1, -0.5, +.4, 2., 1e-3."""
    whole, frac = draw(_DIGITS), draw(_DIGITS)
    form = draw(_MANTISSA_FORM)
    body = {"int": f"{whole}", "int.": f"{whole}.", ".frac": f".{frac}", "int.frac": f"{whole}.{frac}"}[form]
    if draw(_ONE_IN_4) == 0:
        exp, e = draw(_EXP), draw(_E)
        body += e + str(abs(exp) if e[-1] in "+-" else exp)
    text = draw(_SIGN) + body
    assert _NUMBER.fullmatch(text), text
    return text


def _draw_weight(draw) -> str:
    return draw(_WEIGHT_SAMPLES) if draw(_BOOL) else _draw_number(draw)


@st.composite
def _weights(draw) -> str:
    return _draw_weight(draw)


def weights() -> st.SearchStrategy[str]:
    """Weight spellings (the number after ``:``): ``1``, ``-0.5``, ``+.4``, ``2.``, ``1e-3``, ``1e6``."""
    return _weights()


# Keyword options (docs/language.md, "Keyword options"): valid values for every option, in varied spellings. A value
# with a decimal point or an exponent is a fraction for start/end, an integer a step index.
_FRACTIONS = ("0.0", "0.", ".5", "0.25", "1.0", "1.", "1e-1", "5e-2", "0.05", "0.999", ".1", "2.5e-1")
_STEPS = tuple(str(i) for i in range(0, 12)) + ("+3", "20", "50", "999")
_OPTION_VALUES: dict[str, st.SearchStrategy[str]] = {
    "start": st.sampled_from(_STEPS + _FRACTIONS),
    "end": st.sampled_from(_STEPS + _FRACTIONS),
    "k": st.sampled_from(tuple(f for f in _FRACTIONS if float(f) > 0) + ("1",)),
    "per_channel": st.sampled_from(("0", "1", "1.0", "0.")),
    "momentum": st.sampled_from(("0", "0.1", "0.5", "1", "2.", "1e3", ".25", "0.999")),
    "beta": st.sampled_from(tuple(f for f in _FRACTIONS if float(f) < 1) + ("0",)),
}
# The keyword table says which options a keyword takes; every value above is valid for it.
assert all(o.name in _OPTION_VALUES for row in _TABLE for o in row.options)
_OPTION_NAMES = {row.name: st.lists(st.sampled_from(tuple(o.name for o in row.options)), min_size=1, unique=True)
                 for row in _TABLE}
_OPTION_SPACE = st.sampled_from(("", "", " "))


def _draw_options(draw, keyword: str) -> tuple[str, tuple]:
    """``(text, planned options)`` of a non-empty option list, e.g. ``("(k=0.1, start=2)", ...)``."""
    items, planned = [], []
    for name in draw(_OPTION_NAMES[keyword]):
        value = draw(_OPTION_VALUES[name])
        before, around, after = draw(_OPTION_SPACE), draw(_OPTION_SPACE), draw(_OPTION_SPACE)
        items.append(f"{before}{name}{around}={around}{value}{after}")
        planned.append((name, float(value), "." in value or "e" in value.lower()))
    return "(" + ",".join(items) + ")", tuple(planned)


# Leaf text: words and the A1111 sub-language.
_KEYWORD_RE = KEYWORD_RE
_ASCII_WORDS = (
    "a", "castle", "blue hair", "1girl", "masterpiece", "forest", "x", "night sky", "cat", "dog",
    "ruin", "tree", "dusk", "red", "8k", "photo", "a_b",
)
_UNICODE_WORDS = (
    "café", "naïve", "城堡", "夜空", "мост", "Ωμέγα", "ñandú", "straße", "東京タワー", "🙂", "☃",
)
# Look like keywords, are not: case differs, or a word character is glued on.
_NEAR_KEYWORDS = ("and", "And", "and_perp", "ANDROID", "BAND", "AND_PERPmonster", "AND_", "xAND", "AND2",
                  "AND_TOPKS", "_AND_SALT")
_PUNCTUATION = (",", ".", "!", "'s", "-", "/", "#", "&", "*", "{x}", '"quoted"', "%", "~", "@", "$", "+")
_ESCAPES = ("\\(", "\\)", "\\[", "\\]", "\\\\")
_LEAF_EXTRAS = ("BREAK", "<lora:detail:0.8>", "hello :abc", "16:9 wide", "score_9, score_8_up", "x:y")
_OTHER_PIECES = st.sampled_from(_NEAR_KEYWORDS + _PUNCTUATION + _LEAF_EXTRAS + _ESCAPES)


def _random_words(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec=alphabet, categories=("L", "N")), min_size=1, max_size=6).filter(
        lambda w: not _KEYWORD_RE.search(w))


_WORDS = {
    False: st.one_of(st.sampled_from(_ASCII_WORDS), _OTHER_PIECES, _random_words("ascii")),
    True: st.one_of(st.sampled_from(_ASCII_WORDS + _UNICODE_WORDS), _OTHER_PIECES, _random_words("utf-8")),
}
_LEAF_SEPARATOR = st.sampled_from((" ", " ", " ", ", ", "  ", "\n", "\t", ""))
# Pieces per run: up to 4 at the top of a leaf, fewer inside brackets (examples stay small).
_RUN_LENGTH = {2: st.integers(1, 4), 1: st.integers(1, 2), 0: st.integers(1, 2)}
_BRACKET_FORM = st.sampled_from(("(x)", "(x:w)", "[x]", "[a:b:when]", "[b:when]", "[a::when]", "[a|b]", "((x))"))
_WHEN = st.sampled_from(("0.5", "3", "10", "0.25", ".8", "1"))
_EMPHASIS = st.sampled_from(("1.2", "0.5", "1.1", ".8", "2", "1e-1", "1."))
_ALTERNATIVES = st.integers(2, 3)
_GLUE_RE = re.compile(r"[\w\\]")


def _draw_run(draw, unicode: bool, depth: int) -> str:
    """A run of leaf pieces joined by separators; bracket syntax nests up to ``depth`` deep."""
    out = ""
    for _ in range(draw(_RUN_LENGTH[depth])):
        piece = _draw_piece(draw, unicode, depth)
        sep = draw(_LEAF_SEPARATOR) if out else ""
        # Glue two pieces only where no two words could run together and form a keyword.
        if out and sep == "" and _GLUE_RE.match(out[-1]) and _GLUE_RE.match(piece[0]):
            sep = " "
        out += sep + piece
    return out


def _draw_piece(draw, unicode: bool, depth: int) -> str:
    if depth == 0 or draw(_ONE_IN_4):
        return draw(_WORDS[unicode])
    form = draw(_BRACKET_FORM)
    inner = lambda: _draw_run(draw, unicode, depth - 1)  # noqa: E731
    if form == "(x)":
        return f"({inner()})"
    if form == "((x))":
        return f"(({inner()}))"
    if form == "(x:w)":
        return f"({inner()}:{draw(_EMPHASIS)})"
    if form == "[x]":
        return f"[{inner()}]"
    if form == "[a:b:when]":
        return f"[{inner()}:{inner()}:{draw(_WHEN)}]"
    if form == "[b:when]":
        return f"[{inner()}:{draw(_WHEN)}]"
    if form == "[a::when]":
        return f"[{inner()}::{draw(_WHEN)}]"
    return "[" + "|".join(inner() for _ in range(draw(_ALTERNATIVES))) + "]"


_PLAIN = re.compile(r"[\[\]()\\:<>]")


def _draw_leaf(draw, a1111: bool, unicode: bool) -> str:
    if a1111:
        text = _draw_run(draw, unicode, 2)
    else:
        text = " ".join(_PLAIN.sub(" ", _draw_run(draw, unicode, 0)).split()) or "x"
    assert not _KEYWORD_RE.search(text) and "=" not in text, text
    return text


@st.composite
def _leaf_texts(draw, a1111: bool, unicode: bool) -> str:
    return _draw_leaf(draw, a1111, unicode)


def leaf_texts(*, a1111: bool = True, unicode: bool = True) -> st.SearchStrategy[str]:
    """One part's text: words, punctuation, unicode, and (``a1111=True``) A1111 leaf syntax:
    emphasis ``(x)`` ``(x:1.2)`` ``[x]``, escapes ``\\( \\) \\[ \\] \\\\``, editing
    ``[a:b:0.5]`` ``[a:3]``, alternation ``[a|b]``, ``BREAK``. Never empty, never a keyword, never
    ``=`` (which would make a ``(`` right after a keyword an option list); brackets balance.
    """
    return _leaf_texts(a1111, unicode)


# Prompts: a plan, rendered.

_SPACES = (" ", " ", " ", "  ", "\n", "\t", " \n  ", "\r\n")
_SPACE = {False: st.sampled_from(_SPACES), True: st.sampled_from(_SPACES + ("\u3000",))}
_MAYBE_SPACE = {False: st.sampled_from(("", "") + _SPACES), True: st.sampled_from(("", "") + _SPACES + ("\u3000",))}
_WEIGHT_BEFORE = st.sampled_from(("", " ", " ", "  ", "\n"))
_WEIGHT_AFTER = st.sampled_from(("", "", " "))
_ONE_IN_3 = st.integers(0, 2)
_ONE_IN_10 = st.integers(0, 9)
_LEAD = st.sampled_from(("", "", "", " ", "\n"))
_TRAIL = st.sampled_from(("", "", "", " ", "\n", "  \n"))


def _draw_plan(draw, depth: int, cfg: dict, min_parts: int) -> list:
    """A list of planned parts: ``[keyword, body, weight text or None, (options text, options)]``.

    ``body`` is a leaf text (possibly empty) or a nested list of parts (a group of >= 2 parts).
    """
    parts = []
    for i in range(draw(cfg["part_counts"][min_parts])):
        keyword = "AND" if i == 0 else draw(cfg["keyword"])
        options = None
        if i > 0 and cfg["options"] and draw(_ONE_IN_4) == 0:
            options = _draw_options(draw, keyword)
        if depth < cfg["max_depth"] and draw(_ONE_IN_4) == 0:
            body: object = _draw_plan(draw, depth + 1, cfg, 2)
        elif cfg["compat"] and draw(_ONE_IN_10) == 0:
            body = ""  # an empty part: a keyword first, two in a row, or one last
        else:
            body = _draw_leaf(draw, cfg["a1111"], cfg["unicode"])
        weight = _draw_weight(draw) if cfg["weights"] and draw(_ONE_IN_3) == 0 else None
        if isinstance(body, str) and weight is None and has_weight_like_tail(body):
            weight = _draw_weight(draw)  # `x :1` needs a weight after it to stay text: `x :1 :2`
        parts.append([keyword, body, weight, options])
    return parts


def _glueable(out: list[str]) -> bool:
    """Whether a keyword may touch what precedes it: nothing that could make one word with it."""
    tail = next((piece for piece in reversed(out) if piece), "")
    return tail == "" or tail[-1] in "[])"


def _render(plan: list, draw, cfg: dict, out: list[str]) -> Shape:
    """Append the text of ``plan`` to ``out``, spacing varied by ``draw``; return its shape."""
    space, maybe_space = _SPACE[cfg["unicode"]], _MAYBE_SPACE[cfg["unicode"]]
    expected = []
    for i, (keyword, body, weight, options) in enumerate(plan):
        implicit = False
        if i > 0:
            prev_body, prev_weight = plan[i - 1][1], plan[i - 1][2]
            implicit = (cfg["compat"] and keyword == "AND" and options is None and isinstance(prev_body, list)
                        and prev_weight is None and isinstance(body, str) and body != "" and draw(_BOOL))
            if implicit:  # `[b AND c] tail`: text after a group is an AND part
                out.append(draw(maybe_space))
            else:
                out.append(draw(maybe_space) if _glueable(out) else draw(space))
                out.append(keyword + (options[0] if options else ""))
        if isinstance(body, list):
            if i > 0 and not implicit:
                out.append(draw(maybe_space))
            out.append("[" + draw(maybe_space))
            shaped: object = _render(body, draw, cfg, out)
            out.append(draw(maybe_space) + "]")
        else:
            if i > 0 and not implicit:
                glue = body[:1] in ("[", "(") or body == ""
                out.append(draw(maybe_space) if glue else draw(space))
            out.append(body)
            shaped = body.strip()
        if weight is not None:
            before = draw(_WEIGHT_BEFORE) if body != "" or i == 0 else " "
            out.append(before + ":" + draw(_WEIGHT_AFTER) + weight)
        planned_options = options[1] if options else ()
        expected.append((keyword, shaped, 1.0 if weight is None else float(weight), planned_options))
    return tuple(expected)


@st.composite
def _cases(draw, cfg: dict) -> tuple[str, Shape]:
    plan = _draw_plan(draw, 0, cfg, 1)
    out = [draw(_LEAD)]
    expected = _render(plan, draw, cfg, out)
    out.append(draw(_TRAIL))
    return "".join(out), expected


def _config(max_depth, max_parts, keywords, options, weights, a1111, unicode, compat) -> dict:
    keywords = tuple(k.value if isinstance(k, Keyword) else str(k) for k in keywords)
    if not keywords or not set(keywords) <= set(KEYWORDS):
        raise ValueError(f"keywords must be a non-empty subset of {KEYWORDS}, got {keywords!r}")
    if max_depth < 0 or max_parts < 1:
        raise ValueError(f"Expected max_depth >= 0 and max_parts >= 1, but got {max_depth} and {max_parts}.")
    if max_parts < 2 and max_depth > 0:
        raise ValueError("A group holds two parts or more: use max_parts >= 2, or max_depth=0.")
    return dict(
        max_depth=max_depth, options=options, weights=weights, a1111=a1111, unicode=unicode, compat=compat,
        keyword=st.sampled_from(keywords),
        part_counts={1: st.integers(1, max_parts), 2: st.integers(2, max(2, max_parts))},
    )


def prompt_cases(
    max_depth: int = 3,
    max_parts: int = 5,
    *,
    keywords: Iterable[str | Keyword] = KEYWORDS,
    options: bool = True,
    weights: bool = True,
    a1111: bool = True,
    unicode: bool = True,
    compat: bool = True,
) -> st.SearchStrategy[tuple[str, Shape]]:
    """``(text, expected)`` pairs: a valid prompt text and the :func:`shape` it parses to.

    ``max_depth``: levels of groups (0: none); ``max_parts``: most parts per prompt or group;
    ``keywords``: which keywords to use (the first part of a prompt is always an ``AND``);
    ``options``: keyword option lists such as ``AND_TOPK(k=0.1, start=2)``; ``weights``: ``:w``
    after parts and groups; ``a1111``: A1111 leaf syntax in texts (off: plain words); ``unicode``:
    non-ASCII words; ``compat``: the compatibility cases (empty parts, text after a group).
    """
    return _cases(_config(max_depth, max_parts, keywords, options, weights, a1111, unicode, compat))


def prompts(
    max_depth: int = 3,
    max_parts: int = 5,
    *,
    keywords: Iterable[str | Keyword] = KEYWORDS,
    options: bool = True,
    weights: bool = True,
    a1111: bool = True,
    unicode: bool = True,
    compat: bool = True,
) -> st.SearchStrategy[str]:
    """Valid prompt texts using every feature of the language; each parses (also with
    ``strict=True``) to the tree it was planned as. Arguments as for :func:`prompt_cases`."""
    return prompt_cases(max_depth, max_parts, keywords=keywords, options=options, weights=weights,
                        a1111=a1111, unicode=unicode, compat=compat).map(lambda case: case[0])


def _canonical(text: str) -> Prompt:
    return parse(_format(parse(text)))


def asts(
    max_depth: int = 3,
    max_parts: int = 5,
    *,
    keywords: Iterable[str | Keyword] = KEYWORDS,
    options: bool = True,
    weights: bool = True,
    a1111: bool = True,
    unicode: bool = True,
    compat: bool = True,
) -> st.SearchStrategy[Prompt]:
    """Prompt trees in canonical form: ``parse(format(p)) == p``, spans included (they point into
    ``format(p)``). Arguments as for :func:`prompt_cases`."""
    return prompts(max_depth, max_parts, keywords=keywords, options=options, weights=weights,
                   a1111=a1111, unicode=unicode, compat=compat).map(_canonical)


# ---------------------------------------------------------------------------------------------
# Hostile text

_HOSTILE_PIECES = (
    # brackets, balanced or not
    "[", "]", "(", ")", "[[", "]]", "[ ]", "[]", "()", "\\", "\\[", "\\]", "\\(", "\\\\", "|", ":", "::", ",",
    # keywords: real, glued, misspelt, lowercase, with broken option lists
    "AND", " AND ", "AND_PERP", " AND_SALT ", " AND_TOPK ", "ANDAND", "AND_PREP", "AND_PER", "and", "and_perp",
    "AND_TOPKx", "xAND_SALT", "AND_", "_AND", "AND-", "AND.", "AND(", "AND_TOPK(", "AND_TOPK()", "AND_TOPK(=)",
    "AND_TOPK(k=2)", "AND_TOPK(k=0)", "AND_TOPK(k=)", "AND_TOPK(k=0.1", "AND_TOPK(k=0.1,,)", "AND_TOPK(k=nan)",
    "AND_TOPK(k=0.1, k=0.2)", "AND_PERP(k=0.1)", "AND_SALT(start=-1)", "AND_TOPK(start=1.5)", "AND_TOPK(x=1)",
    "AND_TOPK(per_channel=0.5)", "AND_TOPK(beta=1)", "AND_TOPK(momentum=-1)", "AND_TOPK(k=1e999)",
    "AND(start=2,end=1)", "AND_TOPK(k = .5 , start = 3)", "AND_SALT(end=0.)",
    # weights: non-finite, huge, tiny, malformed
    ":nan", ": NaN", ":-inf", ":+Infinity", ":inf", ":1e999", ":-1e308", ":1e308", ":9" + "9" * 400, ":1e-400",
    ":1e6", ":-0", ":+", ":-", ":.", ":e5", ":1_0", ":0x10", ":1e", ":١", ":1.5.5", " :1 :2", ":",
    # A1111 leaf syntax, whole and broken
    "(x:1.2)", "(x:", "[a:b:0.5]", "[a:b:", "[a|b]", "[a|", "BREAK", "<lora:x:0.8>", "((((", "))))",
    # control characters, odd whitespace and code points
    "\x00", "\x07", "\x1b[31m", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u3000", "\ufeff",
    "\u200b", "\u202e", "\ud800", "\U0010ffff", "é", "城", "🙂", "\t",
)


_RUN_PIECE = st.sampled_from(("[", "]", "(", "[[ AND ", "[a AND ", "AND ", ":", "\\", ":1 ", "[x:", "\\["))
_RUN_LENGTH_HOSTILE = st.integers(10, 2000)
_DEPTH = st.integers(1, 600)
_DEEP_INNER = st.sampled_from(("a AND b", "a", "", "a AND_PERP b :-1", "x :1e6 AND_TOPK y", "AND"))
_DEEP_OPEN = st.sampled_from(("[", "[x AND ", "[ AND ", "(", "[[", "[a AND_SALT "))
_DEEP_CLOSE = st.sampled_from(("]", "] :2", "", ")", "]]", "] AND x"))
_HOSTILE_PIECE = st.sampled_from(_HOSTILE_PIECES)
_MUTATIONS = st.integers(1, 4)
_MUTATION = st.integers(0, 2)


@st.composite
def _runs(draw) -> str:
    return draw(_RUN_PIECE) * draw(_RUN_LENGTH_HOSTILE)


@st.composite
def _deep(draw) -> str:
    depth = draw(_DEPTH)
    return draw(_DEEP_OPEN) * depth + draw(_DEEP_INNER) + draw(_DEEP_CLOSE) * draw(st.integers(0, depth + 2))


_SMALL_PROMPTS = prompts(max_depth=2, max_parts=3)


@st.composite
def _mutated(draw) -> str:
    text = draw(_SMALL_PROMPTS)
    for _ in range(draw(_MUTATIONS)):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 8)))
        op = draw(_MUTATION)
        if op == 0:
            text = text[:i] + text[j:]  # delete a slice
        elif op == 1:
            text = text[:i] + draw(_HOSTILE_PIECE) + text[i:]  # insert a piece
        else:
            text = text[:i] + text[i:j] * 2 + text[j:]  # duplicate a slice
    return text


_ANY_PIECE = st.one_of(
    _HOSTILE_PIECE, _HOSTILE_PIECE, st.text(max_size=6), st.sampled_from(_ASCII_WORDS + _UNICODE_WORDS))


def hostile_texts(max_pieces: int = 24) -> st.SearchStrategy[str]:
    """Adversarial text for robustness tests: unbalanced brackets, glued, misspelt and lowercase
    keywords, ``nan``/``inf``/huge weights, invalid option lists, control characters and lone
    surrogates, long runs of ``[`` (up to 2000), deep nesting (up to 600 levels), and valid prompts
    with slices deleted, duplicated or replaced. Some are valid prompts; many must fail to parse
    (``nan`` weights, bad options) or read as text (unbalanced brackets)."""
    pieces = st.lists(_ANY_PIECE, max_size=max_pieces).map("".join)
    return st.one_of(pieces, pieces, _mutated(), _runs(), _deep(), st.text(max_size=80))
