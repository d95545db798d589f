"""Lexical facts (neutral_lang/lexical.py), parse errors as classes, and strict parsing agreeing
with the linter on unmatched brackets."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang import errors, lexical, testing
from neutral_lang.linter import lint


@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (-1.0, "-1"), (0.4, "0.4"), (1e-5, "1e-05"), (-0.0, "0"),
    (1e15, "1000000000000000"), (9999999999999998.0, "9999999999999998"), (1e16, "1e+16"), (1.5e300, "1.5e+300"),
])
def test_format_number(value, text):
    assert lexical.format_number(value) == text
    assert float(text) == value
    assert lexical.NUMBER.fullmatch(text)


@pytest.mark.parametrize("text, expected", [
    ("a AND_TOPK(k=0.1) b", ((10, 17),)),
    ("a AND_TOPK (k=0.1) b", ()),  # after a space: text
    ("a AND_TOPK(glasses:1.3) b", ()),  # no '=': text
    ("a AND(start=1 b", ((5, 15),)),  # unclosed: to the end
    ("AND(start=1, AND(k=2)) x", ((3, 21),)),  # a keyword inside an option list is not a keyword
    ("xAND(k=1)", ()),
])
def test_option_lists(text, expected):
    assert lexical.option_lists(text) == expected


def test_option_lists_is_linear_on_unclosed_lists():
    # Each `AND(` used to search to the end of the text for its `)` and `=`: quadratic, minutes
    # at this size. Now the next `)` and `=` are found once for the whole run.
    assert lexical.option_lists("AND(" * 200_000) == ()
    assert len(lexical.option_lists("AND(=" * 200_000)) == 1


@pytest.mark.parametrize("text, tail", [
    ("x :1", True), ("x : -2.5 ", True), ("x :nan", True), ("x :Inf\n", True), ("x :1 y", False),
    ("16:9 wide", False), ("x:", False), ("a:b:1e3", True), ("x :1_0", False),
])
def test_weight_like_tail(text, tail):
    assert lexical.has_weight_like_tail(text) is tail


def test_weight_like_tail_is_linear_on_runs_of_colons():
    assert lexical.has_weight_like_tail(":" * 10**6) is False
    assert lexical.has_weight_like_tail(":" * 10**6 + "1") is True


@pytest.mark.parametrize("text, cls", [
    ("x :nan", errors.NonFiniteWeightError),
    ("x :1e999", errors.NonFiniteWeightError),
    ("a AND_TOPK(k=0.1,,) b", errors.MalformedOptionsError),
    ("a AND_TOPK(k=0.1 b", errors.UnclosedOptionsError),
    ("a AND_PERP(k=0.1) b", errors.UnknownOptionError),
    ("a AND_TOPK(k=0.1, k=0.2) b", errors.DuplicateOptionError),
    ("a AND_TOPK(k=2) b", errors.OptionRangeError),
])
def test_parse_errors_are_classes(text, cls):
    with pytest.raises(cls) as info:
        nl.parse(text)
    err = info.value
    assert isinstance(err, nl.ParseError)
    assert issubclass(cls, errors.OptionError) or cls is errors.NonFiniteWeightError
    assert err.label and err.hint and err.line == 1 and 0 <= err.pos < len(text) and "^" in err.excerpt


@pytest.mark.parametrize("text, pos", [
    ("a (castle", 2), ("goodbye]", 7), ("a AND_PERP [b AND c", 11), ("x) (y", 1),
    ("a \\[ b", None), ("(a [b) c]", None), ("a AND_TOPK(k=0.1) b", None), ("[(])", None),
])
def test_strict_parsing_reports_the_first_bracket_lint_reports(text, pos):
    reported = [d.span.start for d in lint(text, select="NP201")]
    if pos is None:
        nl.parse(text, strict=True)
        assert reported == []
    else:
        with pytest.raises(errors.UnbalancedBracketError) as info:
            nl.parse(text, strict=True)
        assert info.value.pos == pos == reported[0]


def _agree(text: str) -> None:
    reported = sorted(d.span.start for d in lint(text, select="NP201"))
    try:
        nl.parse(text, strict=True)
    except errors.UnbalancedBracketError as err:
        assert reported and err.pos == reported[0], (text, err.pos, reported)
    except nl.ParseError:
        assert not reported, (text, reported)  # the bracket check comes first
    else:
        assert not reported, (text, reported)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large])
@given(st.one_of(testing.hostile_texts(), testing.prompts(), st.text(alphabet="[]()\\ :aAND_(=)", max_size=40)))
def test_strict_parse_and_lint_agree_on_unmatched_brackets(text):
    _agree(text)


def test_parsing_keeps_no_table_cache(tmp_path, monkeypatch):
    # Lark's cache=True writes a pickle to the temp dir and loads it on the next start (issue 14).
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from neutral_lang import parser

    parser._lalr.cache_clear()
    parser._lalr_state.cache_clear()
    nl.parse("a AND_PERP [b AND_SALT c] :2")
    assert parser._lalr.cache_info().misses == 1  # the tables were built again, here
    assert list(tmp_path.iterdir()) == []
