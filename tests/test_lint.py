"""The linter: one fixture per rule code (prompt -> code, span, fix), good prompts stay clean,
fixes do what they say, the registry and the rule pages agree, and lint never raises.
"""

from __future__ import annotations

import importlib
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang import examples
from neutral_lang.linter import RULES, Diagnostic
from neutral_lang.linter.scan import osa_distance

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules"

# code -> [(prompt, [(span text, fix) or (span text, fix, start)])]. Each prompt is linted with
# select=code, so the expectations list every diagnostic of that code and nothing else.
FIXTURES = {
    "NP101": [
        ("AND_PERP monster", [("AND_PERP", None)]),
        ("AND monster", [("AND ", "")]),
        ("  AND_SALT [a AND b]", [("AND_SALT", None)]),
        ("a AND_PERP monster", []),
    ],
    "NP102": [
        ("a AND AND b", [("AND", "", 2)]),
        ("a AND AND_PERP b", [("AND", "", 2)]),
        ("a castle AND_SALT", [("AND_SALT", "")]),
        ("hello :1.0 AND :2.0", [("AND", None)]),  # the empty part has a weight of its own
        ("x AND_PERP [a AND] AND y", [("AND", None, 14)]),  # a fix would leave `[a ]`, A1111 text
        ("x AND_PERP [a AND b AND] AND y", [("AND", "", 20)]),
        ("a AND b", []),
    ],
    "NP103": [
        ("x AND_PERP [AND_SALT a AND b]", [("AND_SALT", None)]),
        ("[AND x] AND y", [("AND", None, 1)]),
        ("x AND_PERP [a AND_SALT b]", []),
    ],
    "NP104": [
        ("[a AND_SALT b] tail", [("tail", "AND tail")]),
        # the ']' is unmatched (NP201, remove it): keeping it with an explicit AND would contradict that
        ("[a AND b]] tail", [("] tail", None)]),
        ("[a AND_SALT b] c]", [("c]", None)]),
        ("x AND_PERP [a AND b] , masterpiece", [(", masterpiece", "AND , masterpiece")]),
        ("[a AND_SALT b] AND tail", []),
    ],
    "NP105": [
        ("a AND_PERP b AND_PERP b", [("AND_PERP b", None, 13)]),
        ("a AND_SALT b AND_SALT  b :2", [("AND_SALT  b :2", None)]),
        ("x AND_PERP [a AND b] AND_PERP [a AND  b]", [("AND_PERP [a AND  b]", None)]),
        ("a AND b AND b AND b", [("AND b", None, 8), ("AND b", None, 14)]),
        ("a AND_TOPK(k=0.1) b AND_TOPK b", []),  # different options
        ("a AND_PERP b AND_SALT b", []),  # different keywords
        ("x AND_PERP [a AND b] AND_PERP [a AND b :2]", []),
    ],
    "NP106": [
        ("a AND [b AND [c AND [d AND e]]]", [("[d AND e]", None)]),
        ("a AND [b AND [c AND [d AND [e AND f]]]]", [("[d AND [e AND f]]", None)]),
        ("a AND [b AND [c AND d]]", []),
    ],
    "NP107": [
        ("a AND b AND_PERP a", [("a AND b AND_PERP a", None)]),
    ],
    "NP201": [
        ("a (castle", [("(", None)]),
        ("goodbye] AND x", [("]", None)]),
        ("a AND_PERP [b AND c", [("[", None)]),
        ("(a [b) c]", []),  # round and square brackets pair separately, as in A1111
        ("a \\( castle \\]", []),  # escapes
        ("a AND_TOPK(k=0.1) b", []),  # an option list is not a bracket
    ],
    "NP202": [
        ("a [b AND c] d", [("AND", None, 5)]),
        ("(red AND blue:1.2)", [("AND", "and")]),
        ("(red AND_PERP blue:1.2)", [("AND_PERP", None)]),  # not an English word: no guess
        ("a AND [b AND c]", []),  # a group
        ("[a (AND b]", []),  # the '(' is never closed: NP201
    ],
    "NP203": [
        ("[x] :0.5", [("[x] :0.5", None)]),
        ("a AND_PERP [cat:dog:0.5] :2", [("[cat:dog:0.5] :2", None)]),
        ("[x]", []),
        ("[a AND b] :0.5", []),  # a group
        ("[x] [y] :0.5", []),  # not one pair of brackets
    ],
    "NP204": [
        ("a AND_PERP " + "(" * 481 + "fog" + ")" * 481, [("f", None)]),
        ("(" * 300 + "[" * 181 + "x", [("x", None)]),
        ("(a" * 481, [("a", None, 961)]),  # left open: the 481st `a` is inside 481
        ("(" * 480 + "fog" + ")" * 480, []),
        ("(" * 1000 + ")" * 1000, []),  # no text inside
        ("\\(" * 1000 + "a", []),  # escaped brackets are text
        ("(" * 481 + " AND b", []),  # no text of the part inside them (the space before AND is no text)
    ],
    "NP301": [
        ("a castle AND_PREP monster", [("AND_PREP", "AND_PERP")]),
        ("a AND_SLAT b", [("AND_SLAT", "AND_SALT")]),
        ("a ANDPERP b", [("ANDPERP", "AND_PERP")]),
        ("a AND PERP b", [("AND PERP", "AND_PERP")]),
        ("a AND-TOPK b", [("AND-TOPK", "AND_TOPK")]),
        ("a and_prep b", [("and_prep", "AND_PERP")]),
        ("a AND_TOP b", [("AND_TOP", "AND_TOPK")]),
        ("a AND_PERPP b", [("AND_PERPP", "AND_PERP")]),  # a doubled letter, not AND_PERP glued to "P"
        ("ANDROID, HAND, sand and salt, GRAND_SALT, A_B, AND, AND_", []),
    ],
    "NP302": [
        ("a and_perp b", [("and_perp", "AND_PERP")]),
        ("a And_Salt b", [("And_Salt", "AND_SALT")]),
        ("a AND_TOPk b", [("AND_TOPk", "AND_TOPK")]),
        ("cat and dog, And then, aNd", []),
    ],
    "NP303": [
        ("a AND_PERPmonster", [("AND_PERPmonster", "AND_PERP monster")]),
        ("monsterAND_SALT b", [("monsterAND_SALT", "monster AND_SALT")]),
        ("a,AND_PERP b", []),
        ("a xAND_SALT b", [("xAND_SALT", "x AND_SALT")]),
        ("城堡AND_PERP怪物", [("城堡AND_PERP怪物", "城堡 AND_PERP 怪物")]),
    ],
    "NP305": [
        ("a castle ＡＮＤ＿ＰＥＲＰ monster", [("ＡＮＤ＿ＰＥＲＰ", "AND_PERP")]),
        ("城堡ＡＮＤ怪物", [("城堡ＡＮＤ怪物", "城堡 AND 怪物")]),
        ("a ＡＮＤ＿ＴＯＰＫmonster", [("ＡＮＤ＿ＴＯＰＫmonster", "AND_TOPK monster")]),
        ("ＨＡＮＤ, ａｎｄ, 城堡 AND 怪物", []),
    ],
    "NP304": [
        ("a AND_TOPK (k=0.1) b", [("AND_TOPK (k=0.1)", "AND_TOPK(k=0.1)")]),
        ("a AND_PERP (k=0.1) b", [("AND_PERP (k=0.1)", None)]),  # AND_PERP has no k
        ("a AND_TOPK (glasses:1.3)", []),
        ("a AND_TOPK(k=0.1) b", []),
    ],
    "NP401": [
        ("x :nan", [("nan", None)]),
        ("x :-inf AND y", [("-inf", None)]),
        ("[a AND b] :nan AND x :inf", [("nan", None), ("inf", None)]),
    ],
    "NP402": [
        ("a AND_TOPK(k=2) b", [("2", None)]),
        ("a AND_PERP(k=0.1) b", [("k", None, 11)]),
        ("a AND_TOPK(k=0.1 b", [("(k=0.1 b", None)]),
        ("a AND_TOPK(k=0.1, k=0.2) b AND_SALT(start=-1) c", [("k=0.2", None), ("-1", None)]),
    ],
    "NP403": [
        ("hello :abc", [(":abc", None)]),
        ("x :1 :2", [(":1", None)]),
        ("x :1_0", [(":1_0", None)]),
        ("x :1,5 AND y", [(":1,5", ":1.5")]),
        ("[a AND b] :0.5 tail", [(":0.5", None)]),
        ("x :", [(":", None)]),
        ("a castle AND_PERP monster :- 1", [(":- 1", ":-1")]),  # the part had weight +1
        ("a castle AND_PERP monster :+ .5 AND x", [(":+ .5", ":+.5")]),
        ("a castle AND_PERP monster :−1", [(":−1", ":-1")]),  # U+2212 MINUS SIGN
        ("a castle AND_PERP monster :–0.5", [(":–0.5", ":-0.5")]),  # U+2013 EN DASH
        ("a castle AND_PERP monster ：１.５", [("：１.５", ":1.5")]),  # full-width colon and digits
        ("a castle AND_PERP monster ::-1", [(":", "", 26)]),  # Midjourney-style '::'
        ("a castle AND_PERP monster :-1,", [(":-1,", ":-1")]),
        ("(glasses:1.3), [cat:dog:0.5], 16:9 aspect, 12:30pm, style: anime", []),
        ("(red AND blue:1.2)", []),
        ("a castle <lora:add_detail:0.8>", []),  # A1111 extra networks
        ("a castle <hypernet:sketch:1> AND_PERP monster <lora:x:-0.5> :-1", []),
        ("a castle, 16:9 :1 AND_PERP fog", []),  # NP407's fix
    ],
    "NP404": [
        ("a AND_PERP b :0", [("AND_PERP b :0", "")]),
        ("a :0 AND b", [("a :0", None)]),
        ("a AND_SALT b :0", [("AND_SALT b :0", "")]),
        ("a AND_SALT b :0 AND_SALT c", [("AND_SALT b :0", None)]),
        ("x AND_PERP [a AND b :0]", [("AND b :0", None)]),  # deleting it would leave `[a]`
        ("a AND_PERP b :-0.5", []),
    ],
    "NP407": [
        ("a castle, 16:9 AND_PERP fog :-0.5", [("16:9", "16:9 :1")]),  # weight 9 of "a castle, 16"
        ("sunset at 12:30", [("12:30", "12:30 :1")]),
        ("a castle, cat:dog:0.5", [("cat:dog:0.5", None)]),  # prompt editing without brackets
        ("a castle :9 AND x, 16 :9", []),  # weights written as weights
        ("a castle, [cat:dog:0.5] AND x :0.5", []),
    ],
    "NP408": [
        ("girl on a swing:1.2 green grass:1.0 pink trousers:0.8",
         [("girl on a swing:1.2", "(girl on a swing:1.2)"), ("green grass:1.0", "(green grass:1.0)")]),
        ("masterpiece, best quality, cat:1.3, night AND_PERP fog :-1", [("cat:1.3", "(cat:1.3)")]),
        ("(girl on a swing:1.2) green grass, 16:9 aspect, 12:30pm, cat:1 dog", []),
    ],
    "NP405": [
        ("a AND_TOPK(start=0.8, end=0.5) b", [("AND_TOPK(start=0.8, end=0.5)", None)]),
        ("a AND_PERP(end=0) b", [("AND_PERP(end=0)", None)]),
        ("a AND_SALT(start=1.0) b", [("AND_SALT(start=1.0)", None)]),
        ("a AND_TOPK(start=10, end=0.5) b", []),  # depends on the number of steps
        ("a AND_TOPK(start=0.2, end=0.8) b", []),
    ],
    "NP406": [
        ("a castle AND monster :1e39", [(":1e39", None)]),
        ("[a AND b :1e20] :1e20 AND c", [(":1e20", None, 9)]),  # the inner part: the product overflows there
        ("[a AND_SALT b :1e36] :-1 AND c", [(":1e36", None)]),
        ("[[a AND b :1e40] :0 AND c] :1e30", []),  # weight 0 above: the product is 0
        ("a AND b :1e30 AND c :-1e35", []),
    ],
}

GOOD = [
    *examples.ALL,
    "a castle AND_TOPK(k=0.1, per_channel=1, start=10, momentum=0.1, beta=0.4) glasses :0.7",
    "a [castle:ruin:0.5] at (dusk:1.2), [cat|dog] BREAK night sky AND_PERP (fog) :-0.5",
    "a cat and a dog, black and white",
]


def _cases():
    for code, cases in FIXTURES.items():
        for prompt, expected in cases:
            yield pytest.param(code, prompt, expected, id=f"{code}-{prompt[:30]}")


@pytest.mark.parametrize("code,prompt,expected", list(_cases()))
def test_rule_fixture(code, prompt, expected):
    found = nl.lint(prompt, select=code)
    want = []
    for item in expected:
        sub, fix = item[0], item[1]
        start = item[2] if len(item) > 2 else prompt.index(sub)
        assert prompt[start:start + len(sub)] == sub, "fixture offset"
        want.append((code, start, start + len(sub), fix))
    assert [(d.code, d.span.start, d.span.end, d.fix) for d in found] == want
    for d in found:
        assert d.severity == RULES[code].severity
        assert d.message and d.hint


def test_every_code_has_a_fixture_that_fires():
    fired = {code for code, cases in FIXTURES.items() if any(expected for _, expected in cases)}
    # NP001 and NP002 need a broken linter or parser: see the tests below.
    assert fired | {"NP001", "NP002"} == set(RULES)


@pytest.mark.parametrize("code,prompt,expected", [
    p for p in _cases() if any(len(item) > 1 and item[1] is not None for item in p.values[2])])
def test_fixes_remove_their_diagnostic(code, prompt, expected):
    for d in nl.lint(prompt, select=code):
        if d.fix is None:
            continue
        fixed = d.apply_fix(prompt)
        nl.parse(fixed)
        assert not [e for e in nl.lint(fixed, select=code) if e.span.start == d.span.start], fixed


def test_fixes_mean_what_the_author_meant():
    (d,) = nl.lint("a castle AND_PREP monster :-1")
    assert nl.format(d.apply_fix("a castle AND_PREP monster :-1")) == "a castle AND_PERP monster :-1"
    (d,) = nl.lint("a AND_TOPK (k=0.1) glasses")
    assert nl.parse(d.apply_fix("a AND_TOPK (k=0.1) glasses")).parts[1].option("k") == 0.1
    # NP104's fix only makes the implicit AND explicit: same tree.
    text = "[a AND_SALT b] tail"
    (d,) = nl.lint(text)
    assert nl.format(d.apply_fix(text)) == nl.format(text)


@pytest.mark.parametrize("prompt", GOOD, ids=lambda t: t[:40])
def test_good_prompts_have_no_warnings(prompt):
    assert [d for d in nl.lint(prompt) if d.severity != "info"] == []
    assert [d.code for d in nl.lint(prompt, select="ALL")] == ["NP107"]


def test_parse_errors_are_diagnostics_and_linting_goes_on():
    text = "a AND_TOPK(k=2) b :nan AND c AND_PREP d AND_PERP e :0"
    found = [(d.code, d.severity) for d in nl.lint(text)]
    assert found == [("NP402", "error"), ("NP401", "error"), ("NP301", "warning"), ("NP404", "warning")]
    d = nl.lint("x :nan")[0]
    assert "non-finite weight" in d.message and d.hint


def test_unknown_parse_error_is_np002(monkeypatch):
    from neutral_lang.linter import engine

    def broken(text, *args, **kw):
        raise nl.ParseError("something new", text, 1, 2, hint="write it differently")

    monkeypatch.setattr(engine, "parse_recovering", broken)
    found = nl.lint("a AND_PREP b")
    assert [(d.code, d.span.start, d.span.end) for d in found] == [("NP002", 1, 2), ("NP301", 2, 10)]
    assert found[0].message == "something new" and found[0].hint == "write it differently"


def test_a_failing_rule_is_np001_and_the_others_still_run(monkeypatch):
    module = importlib.import_module(RULES["NP404"].module)

    def broken(ctx):
        raise ZeroDivisionError("oops")
        yield

    monkeypatch.setattr(module, "check", broken)
    found = nl.lint("a AND_PREP b :0", ignore="NP0")  # NP001 cannot be ignored
    assert [d.code for d in found] == ["NP001", "NP301"]
    assert "NP404" in found[0].message and "ZeroDivisionError" in found[0].message
    assert found[0].severity == "error"


def test_select_and_ignore():
    text = "AND_PERP a AND_PREP b :0 AND c :1,5"
    codes = lambda **kw: [d.code for d in nl.lint(text, **kw)]  # noqa: E731
    # sorted by span: NP404's span is its whole part, which starts at the leading keyword
    assert codes() == ["NP101", "NP404", "NP301", "NP403"]
    assert codes(select="NP3") == ["NP301"]
    assert codes(select="NP301,NP404") == ["NP404", "NP301"]
    assert codes(select=["np1", "NP4"]) == ["NP101", "NP404", "NP107", "NP403"]  # a prefix enables opt-in rules
    assert codes(ignore="NP4") == ["NP101", "NP301"]
    assert codes(select="ALL", ignore=["NP107", "NP101"]) == ["NP404", "NP301", "NP403"]
    with pytest.raises(ValueError, match="NP9"):
        nl.lint(text, select="NP9")
    with pytest.raises(TypeError):
        nl.lint(None)  # type: ignore[arg-type]


def test_diagnostic_is_frozen_data():
    d = nl.lint("a AND_PREP b")[0]
    assert isinstance(d, nl.Diagnostic) and nl.Diagnostic is Diagnostic
    assert isinstance(d.span, nl.Span) and d.name == "misspelt-keyword"
    with pytest.raises(AttributeError):
        d.code = "NP999"  # type: ignore[misc]


def test_messages_say_what_the_original_does():
    (d,) = nl.lint("a AND_SALT b :0 AND_SALT c")
    assert "competes for salient pixels" in d.message
    (d,) = nl.lint("a AND_SALT b AND_SALT b")
    assert "never wins" in d.message
    (d,) = nl.lint("a AND_PERP b AND_PERP b :0.5")
    assert "weight 1.5" in d.hint
    (d,) = nl.lint("a AND b AND_PERP a", select="NP107")
    assert d.message.startswith("3 model evaluations per step: 2 unique texts + 1 unconditional")


def test_scale():
    # Linear-ish scans: 5000 parts and 2000 levels of nesting lint quickly (no timing asserted).
    assert [d.code for d in nl.lint(" AND ".join(f"x{i} :{i}" for i in range(5_000)))] == ["NP404"]
    deep = nl.lint("a AND [" * 2000 + "b" + "]" * 2000)
    assert [d.code for d in deep] == ["NP106"]
    words = "".join(f" AND x{i}" for i in range(3000))
    assert {d.code for d in nl.lint("((" * 3000 + words)} == {"NP201"}
    assert len(nl.lint("((" * 3000 + words)) == 6000
    split = nl.lint("(" * 3000 + words + ")" * 3000)
    assert len(split) == 3000 and {d.code for d in split} == {"NP202"}


# --- the registry and the rule pages ---------------------------------------------------------

_SECTIONS = ["## What it does", "## Why it matters", "## Example", "## What to write instead"]


def test_registry_codes_modules_and_docs_agree():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for code, rule in RULES.items():
        assert re.fullmatch(r"NP[0-4]\d\d", code) and rule.code == code
        assert rule.severity in ("error", "warning", "info")
        module = importlib.import_module(rule.module)
        assert module.RULE is rule
        assert hasattr(module, "check") or hasattr(module, "from_parse_error") or code == "NP001"
        page = (DOCS / f"{code}.md").read_text(encoding="utf-8")
        assert page.startswith(f"# {code} {rule.name}\n"), code
        positions = [page.index(s) for s in _SECTIONS]
        assert positions == sorted(positions), code
        assert f"| [{code}]({code}.md) | {rule.name} | {rule.severity} |" in index, code
        default = "yes" if rule.default else "opt-in"
        assert f"| {rule.name} | {rule.severity} | {default} | {rule.fix} |".replace("  ", " ") in index.replace("  ", " "), code
        assert (f"Fix ({rule.fix}): " if rule.fix else "Fix: none") in page.split("\n")[2], code
    assert len({r.name for r in RULES.values()}) == len(RULES)


def test_osa_distance():
    assert osa_distance("AND_PREP", "AND_PERP") == 1
    assert osa_distance("ANDPERP", "AND_PERP") == 1
    assert osa_distance("", "abc") == 3 and osa_distance("abc", "abc") == 0


# --- never raises ----------------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["a", "b c", " ", "\n", "[", "]", "(", ")", ":", "1", "0", "0.5", "-2", "nan", "inf", "1_0", "1,5",
     "AND", " AND ", " AND_PERP ", " AND_SALT ", "AND_TOPK", "AND_TOPK(k=0.5)", "AND_TOPK(k=2)", "AND_TOPK(k=",
     " AND_PERP(start=2, end=0.5) ", "(start=1.0)", "AND_PREP", "and_perp", "AND_PERPx", "x", ",", "\\[", "\\",
     "|", ":1", " :2 ", " :0 ", "é", "(x:1.2)", "[a:b:0.5]", "BREAK", "=", "AND PERP"])
_TEXTS = st.one_of(st.lists(_PIECES, max_size=20).map("".join), st.text(alphabet=string.printable + "éß中", max_size=60))


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_lint_never_raises(text):
    found = nl.lint(text, select="ALL")
    for d in found:
        assert d.code in RULES and d.code != "NP001", d
        assert 0 <= d.span.start <= d.span.end <= len(text)
        assert d.severity == RULES[d.code].severity
        if d.fix is not None:
            d.apply_fix(text)
    assert found == sorted(found, key=lambda d: (d.span.start, d.span.end, d.code, d.message))


# --- the documented examples are what the command prints ---------------------------------------


def _console_examples():
    import shlex

    for page in [*sorted(DOCS.glob("NP*.md")), DOCS.parent / "lint.md"]:
        for block in re.findall(r"```console\n(.*?)```", page.read_text("utf-8"), re.S):
            command, _, shown = block.partition("\n")
            if command.startswith("$ neutral-lang lint "):
                yield pytest.param(shlex.split(command[2:])[1:], shown.rstrip("\n"), id=f"{page.name}")


@pytest.mark.parametrize("argv,shown", list(_console_examples()))
def test_documented_output_is_current(argv, shown, capsys):
    from neutral_lang.cli import main

    main(argv)
    out, err = capsys.readouterr()
    assert shown in (out.rstrip("\n"), (out + err).rstrip("\n"))
