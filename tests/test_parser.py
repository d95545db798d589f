"""The parser: the original extension's tree for every case of docs/language.md, spans, errors.

Expected trees are written as nested tuples: a leaf is ``(keyword, text, weight)``, a group is
``(keyword, [children], weight)``. The original's trees were established by running its parser;
its leaf texts differ only in whitespace it dropped (see docs/language.md).
"""

from __future__ import annotations

import re
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang.ast import Group, Leaf, iter_parts
from neutral_lang.keywords import KEYWORD_PATTERN


def tree(prompt):
    out = []
    for part in prompt.parts:
        if isinstance(part.body, Leaf):
            out.append((part.keyword.value, part.body.text, part.weight))
        else:
            out.append((part.keyword.value, tree(part.body.prompt), part.weight))
    return out


CASES = {
    # plain parts and weights
    "a castle :1.5": [("AND", "a castle", 1.5)],
    "a castle : -0.5": [("AND", "a castle", -0.5)],
    "x : 1.5": [("AND", "x", 1.5)],
    "x :1e-3": [("AND", "x", 0.001)],
    "x :+.4 AND y :2.": [("AND", "x", 0.4), ("AND", "y", 2.0)],
    "x :1 :2": [("AND", "x :1", 2.0)],
    "hello :abc": [("AND", "hello :abc", 1.0)],
    "(glasses:1.3)": [("AND", "(glasses:1.3)", 1.0)],
    "hello :1.0 AND :2.0": [("AND", "hello", 1.0), ("AND", "", 2.0)],
    "": [("AND", "", 1.0)],
    # keywords
    "beautiful castle landscape AND_PERP monster house castle :-1": [
        ("AND", "beautiful castle landscape", 1.0), ("AND_PERP", "monster house castle", -1.0)],
    "1girl, blue hair AND_TOPK (glasses:1.3),(smile:1.3) :0.4": [
        ("AND", "1girl, blue hair", 1.0), ("AND_TOPK", "(glasses:1.3),(smile:1.3)", 0.4)],
    "a AND_PERPmonster": [("AND", "a AND_PERPmonster", 1.0)],
    "a and_perp b": [("AND", "a and_perp b", 1.0)],
    # compatibility cases
    "AND_PERP x": [("AND", "", 1.0), ("AND_PERP", "x", 1.0)],
    "a AND AND b": [("AND", "a", 1.0), ("AND", "", 1.0), ("AND", "b", 1.0)],
    "a AND": [("AND", "a", 1.0), ("AND", "", 1.0)],
    "[b AND c] tail": [("AND", [("AND", "b", 1.0), ("AND", "c", 1.0)], 1.0), ("AND", "tail", 1.0)],
    "a [b AND c] d": [("AND", "a [b", 1.0), ("AND", "c] d", 1.0)],
    "a [b :2 AND c] d": [("AND", "a [b", 2.0), ("AND", "c] d", 1.0)],
    # single-part brackets are A1111 text
    "[x]": [("AND", "[x]", 1.0)],
    "[x:0.5]": [("AND", "[x:0.5]", 1.0)],
    "[a:b:0.5]": [("AND", "[a:b:0.5]", 1.0)],
    "[a|b]": [("AND", "[a|b]", 1.0)],
    "[[x]]": [("AND", "[[x]]", 1.0)],
    "[]": [("AND", "[]", 1.0)],
    # groups
    "[a AND_SALT b] :0.5": [("AND", [("AND", "a", 1.0), ("AND_SALT", "b", 1.0)], 0.5)],
    "[a AND_SALT b]:0.5 AND c": [
        ("AND", [("AND", "a", 1.0), ("AND_SALT", "b", 1.0)], 0.5), ("AND", "c", 1.0)],
    "[a AND [b AND_PERP c] :-1] :2": [
        ("AND", [("AND", "a", 1.0), ("AND", [("AND", "b", 1.0), ("AND_PERP", "c", 1.0)], -1.0)], 2.0)],
    "[[a AND b] AND c]": [("AND", [("AND", [("AND", "a", 1.0), ("AND", "b", 1.0)], 1.0), ("AND", "c", 1.0)], 1.0)],
    "[[x] AND c]": [("AND", [("AND", "[x]", 1.0), ("AND", "c", 1.0)], 1.0)],
    "[[[[a AND b]]]]": [("AND", "[[[[a", 1.0), ("AND", "b]]]]", 1.0)],
    "[a [b AND c] AND d]": [("AND", [("AND", "a [b", 1.0), ("AND", "c", 1.0)], 1.0), ("AND", "d]", 1.0)],
    "[AND x]": [("AND", [("AND", "", 1.0), ("AND", "x", 1.0)], 1.0)],
    "magical tree forests, eternal city\nAND_PERP [\n    electrical pole voyage\n    AND_SALT small nocturne companion\n]\n"
    "AND_SALT [\n    electrical tornado\n    AND_SALT electric arcs, bzzz, sparks\n]": [
        ("AND", "magical tree forests, eternal city", 1.0),
        ("AND_PERP", [("AND", "electrical pole voyage", 1.0), ("AND_SALT", "small nocturne companion", 1.0)], 1.0),
        ("AND_SALT", [("AND", "electrical tornado", 1.0), ("AND_SALT", "electric arcs, bzzz, sparks", 1.0)], 1.0),
    ],
    # malformed input, lenient: as the original where it has an answer
    "hello :1.0 AND_PERP goodbye] :2.0": [("AND", "hello", 1.0), ("AND_PERP", "goodbye]", 2.0)],
    "x :1 ]": [("AND", "x", 1.0), ("AND", "]", 1.0)],
    # deliberate differences (docs/language.md): an unclosed group is text ...
    "a AND_PERP [b AND c": [("AND", "a", 1.0), ("AND_PERP", "[b", 1.0), ("AND", "c", 1.0)],
    # ... escaped brackets are not brackets ...
    "[x \\] AND y]": [("AND", [("AND", "x \\]", 1.0), ("AND", "y", 1.0)], 1.0)],
    # ... whitespace inside a part is kept, and 1_0 is not a decimal number
    "[x] [y] AND z": [("AND", "[x] [y]", 1.0), ("AND", "z", 1.0)],
    "x :1_0": [("AND", "x :1_0", 1.0)],
    # keyword options
    "a AND_TOPK(k=0.1, start=2) b": [("AND", "a", 1.0), ("AND_TOPK", "b", 1.0)],
    "AND_TOPK(glasses:1.3)": [("AND", "", 1.0), ("AND_TOPK", "(glasses:1.3)", 1.0)],
    "AND_TOPK (k=1)": [("AND", "", 1.0), ("AND_TOPK", "(k=1)", 1.0)],
}


@pytest.mark.parametrize("text", list(CASES), ids=lambda t: repr(t)[:40])
def test_tree(text):
    assert tree(nl.parse(text)) == CASES[text]


def test_options_are_read_with_their_spelling():
    part = nl.parse("a AND_TOPK(k=0.1, per_channel=1, start=10, end=0.5) b").parts[1]
    assert [(o.name, o.value, o.is_fraction) for o in part.options] == [
        ("k", 0.1, True), ("per_channel", 1.0, False), ("start", 10.0, False), ("end", 0.5, True)]
    assert part.option("k") == 0.1 and part.option("momentum", 0.0) == 0.0


def test_spans_point_at_the_source():
    text = "a castle :1.5 AND_PERP [monster AND_SALT house] :-1"
    prompt = nl.parse(text)
    first, second = prompt.parts
    assert text[first.body.span.start:first.body.span.end] == "a castle"
    assert text[first.weight_span.start:first.weight_span.end] == ":1.5"
    assert text[second.keyword_span.start:second.keyword_span.end] == "AND_PERP"
    assert text[second.body.span.start:second.body.span.end] == "[monster AND_SALT house]"
    assert text[second.span.start:second.span.end] == "AND_PERP [monster AND_SALT house] :-1"
    inner = second.body.prompt.parts[1]
    assert text[inner.body.span.start:inner.body.span.end] == "house"
    assert prompt.span == nl.Span(0, len(text))


def test_implicit_keywords_have_no_span():
    prompt = nl.parse("[b AND c] tail")
    assert prompt.parts[0].keyword_span is None and prompt.parts[1].keyword_span is None


ERRORS = [
    # (text, strict, label, offset of the caret)
    ("x :nan", False, "non-finite weight", 3),
    ("x :-inf AND y", False, "non-finite weight", 3),
    ("[a AND b] :nan", False, "non-finite weight", 11),
    ("x :1e999", False, "non-finite weight", 3),
    ("a AND_TOPK(k=2) b", False, "option out of range", 13),
    ("a AND_TOPK(k=0) b", False, "option out of range", 13),
    ("a AND_TOPK(per_channel=0.5) b", False, "option out of range", 23),
    ("a AND_PERP(start=1.5) b", False, "option out of range", 17),
    ("a AND_PERP(start=-1) b", False, "option out of range", 17),
    ("a AND_PERP(k=0.1) b", False, "unknown option", 11),
    ("a AND_TOPK(k=0.1, k=0.2) b", False, "duplicate option", 18),
    ("a AND_TOPK(k=0.1,, start=1) b", False, "invalid option list", 17),
    ("a AND_TOPK(k=) b", False, "invalid option list", 11),
    ("a AND_TOPK(k=0.1 b", False, "unclosed option list", 10),
    ("a [b AND c", True, "unclosed '['", 2),
    ("a b] AND c", True, "unmatched ']'", 3),
    ("(a AND b", True, "unclosed '('", 0),
    ("a) AND b", True, "unmatched ')'", 1),
    ("[a)]", True, "unmatched ')'", 2),
]


@pytest.mark.parametrize("text,strict,label,pos", ERRORS, ids=lambda v: repr(v)[:30])
def test_errors_have_label_position_caret_and_hint(text, strict, label, pos):
    with pytest.raises(nl.ParseError) as info:
        nl.parse(text, strict=strict)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.label == label
    assert err.pos == pos
    assert (err.line, err.column) == (1, pos + 1)
    assert err.hint
    excerpt_line, caret_line = err.excerpt.split("\n")
    assert caret_line.index("^") == pos and excerpt_line == text
    assert label in str(err) and "hint:" in str(err)


def test_strict_mode_accepts_what_is_balanced():
    assert tree(nl.parse("a [b AND c] d", strict=True)) == CASES["a [b AND c] d"]
    assert nl.parse("a \\[ b", strict=True).parts[0].body.text == "a \\[ b"
    # lenient mode reads the same malformed texts as text
    assert tree(nl.parse("a b] AND c")) == [("AND", "a b]", 1.0), ("AND", "c", 1.0)]


def test_error_on_second_line_reports_line_and_column():
    with pytest.raises(nl.ParseError) as info:
        nl.parse("a castle\nAND_TOPK(k=5) x")
    assert (info.value.line, info.value.column) == (2, 12)


def test_scale_deep_nesting_and_many_parts():
    depth = 10_000
    prompt = nl.parse("a AND [" * depth + "b" + "]" * depth)
    # the innermost bracket holds one part, `[b]`: A1111 text, so depth - 1 group levels
    assert max(d for d, _ in iter_parts(prompt)) == depth - 1
    parts = nl.parse(" AND ".join(f"x{i} :{i}" for i in range(10_000))).parts
    assert len(parts) == 10_000 and parts[-1].weight == 9999.0
    # the original's exponential case is just text and empty parts here
    assert len(nl.parse("x AND " + "[[ AND " * 22).parts) == 24  # x, 22 x "[[", a trailing empty part
    assert sys.getrecursionlimit() <= 10_000  # nothing above raised it


def test_format_canonical_and_fixed_point():
    assert nl.format("a castle : 1.5   AND_PERP  monster:-1") == "a castle :1.5 AND_PERP monster :-1"
    assert nl.format("[b AND c] tail") == "[b AND c] AND tail"
    assert nl.format("x :1 :1") == "x :1 :1"  # the text keeps its weight-like tail
    assert nl.format("a AND_TOPK( start=2 ,k=0.1) b") == "a AND_TOPK(start=2, k=0.1) b"
    assert nl.format("[ a AND_SALT b ] : 0.50") == "[a AND_SALT b] :0.5"
    assert nl.format("x AND_PERP(end=.5) y") == "x AND_PERP(end=0.5) y"
    for text in CASES:
        once = nl.format(text)
        assert nl.format(once) == once
        assert tree(nl.parse(once)) == tree(nl.parse(text))
        assert _options(nl.parse(once)) == _options(nl.parse(text))


def _options(prompt):
    return [sorted((o.name, o.value, o.is_fraction) for o in part.options) for _, part in iter_parts(prompt)]


# --- properties ------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["a", "b c", " ", "\n", "[", "]", "(", ")", ":", "1", "0.5", "-2", "1e-3", "AND", " AND ", " AND_PERP ",
     " AND_SALT ", "AND_TOPK", "AND_TOPK(k=0.5)", " AND_PERP(start=2, end=0.5) ", "x", ",", "\\[", "\\", "|",
     ":1", " :2 ", "é", "(x:1.2)", "[a:b:0.5]", "BREAK"])
_TEXTS = st.one_of(st.lists(_PIECES, max_size=16).map("".join), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_format_round_trip(text):
    try:
        prompt = nl.parse(text)
    except nl.ParseError:
        return
    once = nl.format(prompt)
    again = nl.parse(once)
    assert tree(again) == tree(prompt)
    assert _options(again) == _options(prompt)
    assert nl.format(again) == once


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "éß中", max_size=60))
def test_lenient_parse_raises_only_for_weights_and_options(text):
    try:
        nl.parse(text)
    except nl.ParseError as err:
        assert err.label in {"non-finite weight", "invalid option list", "unclosed option list",
                             "unknown option", "duplicate option", "option out of range"}
        assert "=" in text or ":" in text


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_strict_parse_raises_only_parse_error(text):
    try:
        nl.parse(text, strict=True)
    except nl.ParseError as err:
        assert 0 <= err.pos <= len(text)


def test_group_nodes_carry_their_prompt():
    body = nl.parse("x AND_PERP [a AND_SALT b]").parts[1].body
    assert isinstance(body, Group) and len(body.prompt.parts) == 2


def test_format_keeps_the_source_when_stray_brackets_would_regroup():
    # '[[a' AND 'b]':2 AND ']' would read as one group once respaced: the source is the only
    # spelling that means this tree; a tree with no source cannot be formatted.
    import dataclasses

    prompt = nl.parse("[[a AND b]:2]")
    assert nl.format(prompt) == "[[a AND b]:2]"
    with pytest.raises(ValueError, match="no canonical form"):
        nl.format(dataclasses.replace(prompt, source=None))


# The lexer's shortcuts, checked against what they stand for (neutral_lang/parser.py).

_ORIGINAL_SPLIT = re.compile(r"\\[\[\]():\\]|(\[)|(\])|(:)|" + KEYWORD_PATTERN)
_SPLIT_ALPHABET = ["[", "]", ":", "\\", " ", "\t", "a", "é", "_", "1", "0.5", "-2", "1e3", "nan", "-INF", ".", "AND",
                   "AND_PERP", "AND_SALT", "AND_TOPK", "xAND", "AND_x", "ANDx", "1AND"]


def _original_pieces(text):
    """The split as the original tokenizer splits: (kind, start, end) for every split point and
    every piece between them, kinds '[', ']', ':', 'KW', 'text'."""
    out, pos = [], 0
    for m in _ORIGINAL_SPLIT.finditer(text):
        if m.lastindex is None:  # an escape is text
            continue
        if m.start() > pos:
            out.append(("text", pos, m.start()))
        out.append(({1: "[", 2: "]", 3: ":", 4: "KW"}[m.lastindex], m.start(), m.end()))
        pos = m.end()
    if pos < len(text):
        out.append(("text", pos, len(text)))
    return out


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_SPLIT_ALPHABET), max_size=14).map("".join))
def test_split_finds_the_original_split_points(text):
    # The split regex finds the keywords and brackets the original's finds, and a colon exactly
    # where the original's next piece (up to its next split point) is a number, finite or not;
    # such a colon's match ends where that piece ends.
    from neutral_lang.lexical import NONFINITE, NUMBER
    from neutral_lang.parser import _SPLIT

    pieces = _original_pieces(text)
    expected = []
    for k, (kind, start, end) in enumerate(pieces):
        if kind in ("[", "]", "KW"):
            expected.append((start, end))
        elif kind == ":" and k + 1 < len(pieces) and pieces[k + 1][0] == "text":
            number = text[pieces[k + 1][1]:pieces[k + 1][2]].strip()
            if NUMBER.fullmatch(number) or NONFINITE.fullmatch(number):
                expected.append((start, pieces[k + 1][2]))
    found = [m.span() for m in _SPLIT.finditer(text) if text[m.start()] != "\\"]
    assert found == expected


def test_nodes_built_by_the_parser_equal_the_constructors_nodes():
    # The parser stores fields through slot descriptors (fast); the nodes are the same.
    from dataclasses import fields

    from neutral_lang.ast import Option, Part, Prompt, Span

    text = "a :2 AND_TOPK(k=0.5) [b AND_SALT c] :-1 d"
    tree_ = nl.parse(text)
    for _, part in iter_parts(tree_):
        for node in (part, part.body, part.span, part.body.span):
            rebuilt = type(node)(*(getattr(node, f.name) for f in fields(node)))
            assert rebuilt == node and repr(rebuilt) == repr(node) and hash(rebuilt) == hash(node)
    assert tree_ == Prompt(tree_.parts, Span(0, len(text)), text)
    assert tree_.parts[1].options == (Option("k", 0.5, "0.5", Span(14, 19)),)
    assert isinstance(tree_.parts[1], Part) and tree_.parts[1].keyword_span == Span(5, 20)


def test_parse_leaves_the_cyclic_gc_as_it_found_it():
    # parse pauses the cyclic GC while it builds the tree (linear time on 10^5 parts); it must
    # hand it back as it was, also when the text is refused.
    import gc

    assert gc.isenabled()
    nl.parse("a AND [b AND c] :2")
    assert gc.isenabled()
    with pytest.raises(nl.ParseError):
        nl.parse("a :nan")
    assert gc.isenabled()
    gc.disable()
    try:
        nl.parse("a AND b")
        assert not gc.isenabled()
    finally:
        gc.enable()
