"""Every operator is known to every stage that must know it, from one row of neutral_lang/keywords.py.

Parametrised over ``keywords.KEYWORDS``: a new row is checked here without editing this file. Each
test names the stage it proves (docs/architecture.md, "Add a keyword"); stages owned by the
compiler (plan builder, executor, reference oracle) add their own checks over the same list.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang import ir, keywords, lower, testing
from neutral_lang.formatter import format as nl_format
from neutral_lang.linter import lint
from neutral_lang.linter import scan

ROWS = keywords.KEYWORDS
NAMES = [row.name for row in ROWS]


def test_the_table_and_the_enum_agree():
    assert [k.value for k in keywords.Keyword] == NAMES
    assert nl.Keyword is keywords.Keyword
    assert len(set(NAMES)) == len(NAMES)
    assert NAMES[0] == "AND"  # the implicit keyword


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_keyword_regex_finds_it_as_a_whole_word_only(row):
    assert [m.group(1) for m in keywords.KEYWORD_RE.finditer(f"a {row.name} b")] == [row.name]
    assert keywords.KEYWORD_RE.search(f"x{row.name}") is None
    assert keywords.KEYWORD_RE.search(f"{row.name}x") is None
    assert keywords.KEYWORD_RE.search(row.name.lower()) is None


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_parser_reads_it_with_every_option(row):
    opts = ", ".join(f"{o.name}={_valid_value(o)}" for o in row.options)
    prompt = nl.parse(f"a {row.name}({opts}) b :0.5")
    part = prompt.parts[1]
    assert part.keyword is keywords.Keyword[row.name]
    assert [o.name for o in part.options] == [o.name for o in row.options]
    assert part.weight == 0.5


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_parser_rejects_an_option_it_does_not_take(row):
    taken = {o.name for o in row.options}
    foreign = next(o for other in ROWS for o in other.options if o.name not in taken) if any(
        o.name not in taken for other in ROWS for o in other.options) else None
    name = foreign.name if foreign else "no_such_option"
    with pytest.raises(nl.errors.UnknownOptionError):
        nl.parse(f"a {row.name}({name}=0.5) b")


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_formatter_writes_options_in_the_table_order(row):
    reversed_opts = ", ".join(f"{o.name}={_valid_value(o)}" for o in reversed(row.options))
    out = nl_format(f"a {row.name}({reversed_opts}) b")
    names = re.findall(r"(\w+)=", out)
    assert names == [o.name for o in row.options]
    assert names == [n for n in keywords.OPTION_ORDER if n in names]


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_lowering_knows_its_operator_and_defaults(row):
    module = lower.lower([nl.parse(f"a {row.name} b")])
    part = module.roots[0].parts[1]
    assert part.op is ir.Op[row.op]
    assert part.options == ir.DEFAULT_OPTIONS
    for option in row.options:
        if option.default is not None:
            assert getattr(ir.DEFAULT_OPTIONS, option.name) == option.default


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_linter_knows_it(row):
    assert row.name in scan.KEYWORDS
    assert lint(f"a {row.name} b") == []
    if row.name != "AND":  # plain AND is English: never guessed at
        assert row.name in scan.LONG_KEYWORDS
        assert [d.code for d in lint(f"a {row.name.lower()} b")] == ["NP302"]
        assert [d.code for d in lint(f"a {row.name}x b")] == ["NP303"]
        swapped = row.name[:-2] + row.name[-1] + row.name[-2]  # one swap of neighbours
        found = lint(f"a {swapped} b")
        assert [(d.code, d.fix) for d in found] == [("NP301", row.name)]


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_strategies_use_it_with_its_options(row):
    assert row.name in testing.KEYWORDS
    seen: set = set()

    @settings(max_examples=60, database=None, deadline=None)
    @given(testing.prompt_cases(max_depth=0, max_parts=3, keywords=[row.name], a1111=False))
    def draw(case):
        text, expected = case
        assert testing.shape(nl.parse(text)) == expected
        for kw, _, _, opts in expected[1:]:
            assert kw == row.name
            seen.update(name for name, _, _ in opts)

    draw()
    assert seen <= {o.name for o in row.options}


def _valid_value(option: keywords.OptionSpec) -> str:
    """A value every option accepts, spelt so that it is valid (a fraction for start/end)."""
    for text in ("0.5", "0.", "1", "0"):
        if option.accepts(float(text), text):
            return text
    raise AssertionError(f"no test value for {option.name}")


@given(st.sampled_from(ROWS), st.data())
@settings(max_examples=100, database=None, deadline=None)
def test_option_ranges_match_the_parser(row, data):
    option = data.draw(st.sampled_from(row.options))
    text = data.draw(st.sampled_from(("0", "1", "0.5", "2", "1.5", "-1", "0.", "1e3", "10", "1e-3")))
    source = f"a {row.name}({option.name}={text}) b"
    if option.accepts(float(text), text):
        assert nl.parse(source).parts[1].options[0].value == float(text)
    else:
        with pytest.raises(nl.errors.OptionRangeError):
            nl.parse(source)
