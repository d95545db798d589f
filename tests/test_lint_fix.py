"""Fixes and hints: ``nl.fix`` applies the safe fixes; every fix and every hint's suggestion
re-lints clean; the fixes of one prompt never contradict each other.

A hint's suggestion is the text in backticks: a replacement for the diagnostic's span, as a fix
is (docs/lint.md, "Fixes and hints"). "Re-lints clean" means: put in place of the span, it leaves
no diagnostic of the same code at that place, and brings no diagnostic there that was not there
before.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang.ast import iter_parts
from neutral_lang.linter import RULES, apply_fixes, fix_all
from neutral_lang.linter.scan import scan_brackets
from neutral_lang.testing import hostile_texts, prompts
from test_lint import FIXTURES

_SUGGESTION = re.compile(r"`([^`]*)`")
_CONSEQUENCES = ("NP105", "NP404", "NP405")
# An escaped bracket (NP201's `\[`) no longer hides the colons after it from the weight rules.
# A keyword fixed ends the part before it, whose weight-like tail is then judged as a weight's,
# and starts the next, whose parenthesis is then judged as its options'.
_WEIGHTS = ("NP403", "NP407", "NP408")
_KEYWORD = _WEIGHTS + ("NP203", "NP304", "NP402", "NP301", "NP302", "NP303", "NP305")  # and the pieces of a split word
_CONSEQUENCES_OF = {"NP201": _WEIGHTS, "NP301": _KEYWORD, "NP302": _KEYWORD, "NP303": _KEYWORD, "NP305": _KEYWORD}


def assert_relints_clean(text: str, d, replacement: str, before) -> None:
    fixed = text[:d.span.start] + replacement + text[d.span.end:]
    lo, hi = d.span.start, d.span.start + len(replacement)
    shift = d.span.end - hi
    old = {(b.code, b.span.start, b.span.end) for b in before}

    def existed(e) -> bool:
        """Whether ``e`` is a diagnostic of the text before, moved by the edit."""
        if e.span.start >= hi:
            return (e.code, e.span.start + shift, e.span.end + shift) in old
        if e.span.end <= lo:
            return (e.code, e.span.start, e.span.end) in old
        return False

    # Touching the edit: overlapping it, or (for an insertion or deletion) at its place.
    touching = [e for e in nl.lint(fixed) if e.severity != "info" and e.span.start <= hi and e.span.end >= lo
                and not existed(e)]
    # Of its own code, none over the edit (one ending right before it is a neighbour's).
    assert not [e for e in touching if e.code == d.code and e.span.end > lo or e.code == d.code and e.span.start == lo], \
        (text, d, replacement, fixed, touching)
    # What the prompt, read as its author meant it, says of itself is not the fix's doing: a weight
    # `:0,` fixed to `:0` is a zero weight (NP404), a keyword fixed may make two parts equal (NP105).
    allowed = set(_CONSEQUENCES + _CONSEQUENCES_OF.get(d.code, ()))
    around = {b.code for b in before if b.span.start <= d.span.end and b.span.end >= d.span.start}
    new = [e for e in touching if e.code not in allowed and e.code not in around]
    assert not new, (text, d.code, replacement, fixed, new)


def check_prompt(text: str) -> None:
    before = nl.lint(text)
    edits = sorted((d.span.start, d.span.end) for d in before if d.fix is not None)
    for (a0, a1), (b0, b1) in zip(edits, edits[1:]):
        assert a1 <= b0 and a0 != b0, f"contradicting fixes on {text!r}: {edits}"
    # Each check lints the whole text again: a dozen diagnostics per prompt keep the test linear.
    for d in before[:12]:
        if d.fix is not None:
            assert d.applicability == RULES[d.code].fix and d.applicability in ("safe", "unsafe"), d
            assert_relints_clean(text, d, d.fix, before)
        if d.severity != "info":
            for suggestion in _SUGGESTION.findall(d.hint):
                assert_relints_clean(text, d, suggestion, before)


def _fixture_prompts():
    return [prompt for cases in FIXTURES.values() for prompt, _ in cases]


@pytest.mark.parametrize("text", _fixture_prompts(), ids=lambda t: t[:30])
def test_fixes_and_hints_of_the_fixtures_relint_clean(text):
    check_prompt(text)


# Pieces that make every kind of diagnostic with a fix or a suggestion, among ordinary text.
_PIECES = st.sampled_from([
    "a", "b c", " ", "\n", "[", "]", "(", ")", ":", "1", "0.5", ",", " AND ", " AND_PERP ", " AND_SALT ",
    " AND_TOPK ", "AND_TOPK (k=0.1)", " :0 ", " :2 ", ":1,5", " :- 1", " :−1", " ：１.５", " ::-1", ", 16:9",
    " 12:30", " cat:dog:0.5", " swing:1.2 grass", "<lora:x:0.8>", "AND_PREP", "AND_PERPP", "and_perp",
    "AND_PERPx", "ＡＮＤ＿ＰＥＲＰ", "城堡", "AND PERP", "\\[", "[x] :0.5", "(red AND blue)", "x :1 y",
])
_TEXTS = st.lists(_PIECES, max_size=14).map("".join)


def _paired(text: str) -> bool:
    """Whether the parser's groups are A1111 bracket pairs. Where they are not (unmatched or
    crossing brackets, `[[AND[0]:0]:0 AND]`), which text a bracket belongs to is not one fact, and
    the fixes there are left to the fixed-point test below."""
    if len(text) >= 300:
        return False
    brackets = scan_brackets(text)
    if brackets.unmatched:
        return False
    try:
        tree = nl.parse(text)
    except nl.ParseError:
        return True
    pairs = {(a, b) for a, b, _ in brackets.pairs}
    return all((part.body.span.start, part.body.span.end - 1) in pairs
               for _, part in iter_parts(tree) if isinstance(part.body, nl.Group))


@settings(max_examples=150, deadline=None)
@given(st.one_of(_TEXTS, prompts(max_depth=2, max_parts=4), hostile_texts(max_pieces=10)).filter(_paired))
def test_fixes_and_hints_of_generated_prompts_relint_clean(text):
    check_prompt(text)


@settings(max_examples=100, deadline=None)
@given(st.one_of(_TEXTS, hostile_texts(max_pieces=10).filter(lambda t: len(t) < 300)))
def test_fix_reaches_a_fixed_point(text):
    for unsafe in (False, True):
        done = fix_all(text, unsafe=unsafe)
        kinds = ("safe", "unsafe") if unsafe else ("safe",)
        assert not [d for d in nl.lint(done.text) if d.applicability in kinds], (text, done.text)
        assert nl.fix(done.text, unsafe=unsafe) == done.text
        if not done.applied:
            assert done.text == text


# --- what the issue named ----------------------------------------------------------------------


@pytest.mark.parametrize("text,fixed", [
    ("a castle AND_PERPP monster", "a castle AND_PERP monster"),  # not `AND_PERP P`
    ("a castle AND_PREP monster :−1", "a castle AND_PERP monster :-1"),
    ("a castle AND_PERP monster :- 1", "a castle AND_PERP monster :-1"),
    ("a castle ＡＮＤ＿ＰＥＲＰ monster ：－１", "a castle AND_PERP monster :-1"),
    ("a castle, 16:9 AND_PERP fog :-0.5", "a castle, 16:9 :1 AND_PERP fog :-0.5"),
    ("[a AND_SALT b] tail", "[a AND_SALT b] AND tail"),
    ("a castle <lora:add_detail:0.8>", "a castle <lora:add_detail:0.8>"),
    # unsafe fixes stay out unless asked for
    ("a AND AND b", "a AND AND b"),
    ("girl on a swing:1.2 green grass:1.0 pink trousers:0.8", "girl on a swing:1.2 green grass:1.0 pink trousers:0.8"),
])
def test_fix_applies_the_safe_fixes(text, fixed):
    assert nl.fix(text) == fixed
    assert [d for d in nl.lint(fixed) if d.applicability == "safe"] == []


@pytest.mark.parametrize("text", [":NANAND_TOPK0", "x:NANAND_TOPK0", "x :infAND_SALT y", "x:1e999AND_PERPy"])
def test_glued_keyword_offers_no_fix_that_would_make_a_non_finite_weight(text):
    # found by hypothesis: `:NANAND_TOPK0` was fixed to `:NAN AND_TOPK 0`, a NaN weight (NP401)
    glued = [d for d in nl.lint(text) if d.code == "NP303"]
    assert glued and all(d.fix is None for d in glued)
    assert nl.fix(text) == text
    check_prompt(text)


def test_unsafe_fixes_on_request():
    assert nl.fix("a AND AND b", unsafe=True) == "a  AND b"
    assert nl.fix("girl on a swing:1.2 green grass:1.0 pink trousers:0.8", unsafe=True) == \
        "(girl on a swing:1.2) (green grass:1.0) pink trousers:0.8"
    assert nl.fix("a castle, (red AND blue:1.2) banners", unsafe=True) == "a castle, (red and blue:1.2) banners"


def test_the_effect_of_the_traps_is_what_the_messages_say():
    # `:- 1` gave the part weight +1; fixed, -1
    assert nl.parse("a castle AND_PERP monster :- 1").parts[1].weight == 1
    assert nl.parse(nl.fix("a castle AND_PERP monster :- 1")).parts[1].weight == -1
    # `16:9` weighted "a castle, 16" by 9; fixed, the text keeps 16:9 and the weight is 1
    part = nl.parse("a castle, 16:9 AND_PERP fog :-0.5").parts[0]
    assert (part.body.text, part.weight) == ("a castle, 16", 9)
    part = nl.parse(nl.fix("a castle, 16:9 AND_PERP fog :-0.5")).parts[0]
    assert (part.body.text, part.weight) == ("a castle, 16:9", 1)
    # glued mid-text weights: only the last one weights the part
    (part,) = nl.parse("girl on a swing:1.2 green grass:1.0 pink trousers:0.8").parts
    assert part.weight == 0.8 and "swing:1.2" in part.body.text
    (d, _) = nl.lint("girl on a swing:1.2 green grass:1.0 pink trousers:0.8")
    assert "0.8" in d.message and "all of it" in d.message


def test_np104_and_np201_do_not_contradict():
    found = nl.lint("[a AND b]] tail")
    assert [(d.code, d.fix) for d in found] == [("NP201", None), ("NP104", None)]
    assert "closes nothing" in found[1].hint


def test_np202_hint_does_not_rewrite_the_prompt():
    (d,) = nl.lint("a castle, (red AND blue:1.2) banners")
    assert _SUGGESTION.findall(d.hint) == ["and"] and d.fix == "and"
    assert "[b AND c]" not in d.hint


def test_a_fix_is_withheld_where_it_would_contradict_a_higher_priority_one():
    # the zero weight belongs to "AND_PREP c" once NP301 is fixed: deleting the part would lose "b"
    text = "a AND_PERP b AND_PREP c :0"
    found = {d.code: d for d in nl.lint(text)}
    assert found["NP301"].fix == "AND_PERP" and found["NP404"].fix is None
    assert nl.fix(text) == "a AND_PERP b AND_PERP c :0"
    assert nl.fix(text, unsafe=True) == "a AND_PERP b "


def test_apply_fixes_refuses_overlapping_edits():
    d = nl.lint("a AND_PREP b")[0]
    with pytest.raises(ValueError, match="overlapping"):
        apply_fixes("a AND_PREP b", [d, d])
