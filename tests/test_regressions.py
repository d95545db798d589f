"""Inputs that once broke an invariant, found by the property tests (tests/test_properties.py) or
the fuzzer (fuzz/fuzz_compile.py), minimised. Each test states the invariant it checks.

A test marked ``xfail(strict=True)`` is a problem that is known and not fixed yet: it fails today,
and the suite goes red the day it passes, so that whoever fixes it removes the mark.
"""

from __future__ import annotations

import pytest

import neutral_lang as nl


def _meaning(prompt):
    return nl.ast.meaning(prompt)


# --- format: parse(format(x)) means x ------------------------------------------------------------

# Lenient input whose leaf texts hold unmatched `[`/`]`. `format` writes the implicit AND after
# a part explicitly and respaces the brackets, and the stray brackets then pair up differently:
#   '[[a AND b]:2]'  reads  '[[a' AND 'b]':2 AND ']'
#   format gives     '[[a AND b] :2 AND ]', which reads as one group [[a AND b]:2 AND ''].
STRAY_BRACKETS = [
    "[[AND]:0]",      # found by test_format_round_trip_on_anything_that_parses
    "[[a AND b]:2]",
    "[[[AND]]",       # found by the same test, with the stray-`]` case above excluded
    "[[[a AND b]]",
]


@pytest.mark.parametrize("text", STRAY_BRACKETS)
def test_format_round_trip_with_stray_brackets(text):
    prompt = nl.parse(text)
    once = nl.format(prompt)
    assert _meaning(nl.parse(once)) == _meaning(prompt)
    assert nl.format(nl.parse(once)) == once


# Fixed: `format` reads its result back and keeps the source when the meanings differ; the
# comparison (`nl.ast.meaning`) counted `is_fraction` for every option, but only `start`/`end` read it, so
# `per_channel=1.0`, `k=1.0`, `momentum=2.` or `beta=0.` (written back as 1, 1, 2, 0) "differ" and
# the source comes back unformatted, and a tree without a source raises ValueError.
NON_WINDOW_OPTIONS_WITH_A_POINT = [
    ("a  AND_TOPK(per_channel=1.0)   b", "a AND_TOPK(per_channel=1) b"),
    ("a  AND_TOPK(k=1.0)   b", "a AND_TOPK(k=1) b"),
    ("a  AND_TOPK(momentum=2.)   b", "a AND_TOPK(momentum=2) b"),
    ("a  AND_TOPK(beta=0.)   b", "a AND_TOPK(beta=0) b"),
]


@pytest.mark.parametrize("text,canonical", NON_WINDOW_OPTIONS_WITH_A_POINT)
def test_format_is_canonical_for_integral_options_written_with_a_point(text, canonical):
    import dataclasses

    assert nl.format(text) == canonical
    assert nl.format(dataclasses.replace(nl.parse(text), source=None)) == canonical


# A parsed Prompt carries its source text, and `format` returns that text whenever the canonical
# spelling would not read back as the tree. But `dataclasses.replace` keeps `source` on an edited
# tree, so `format` then returns the *unedited* text, silently: the source should only be used
# when it still means the tree (`meaning(parse(source)) == meaning(tree)`), else ValueError. Fixed.
@pytest.mark.parametrize("text", ["[[a AND b]:2]", "a AND_TOPK(beta=0.) b"])
def test_format_of_an_edited_tree_never_returns_text_meaning_something_else(text):
    import dataclasses

    from neutral_lang.ast import meaning

    prompt = nl.parse(text)
    first = dataclasses.replace(prompt.parts[0], weight=3.0)
    edited = dataclasses.replace(prompt, parts=(first, *prompt.parts[1:]))  # keeps `source`
    try:
        out = nl.format(edited)
    except ValueError:
        return  # no canonical form: an honest answer
    assert meaning(nl.parse(out)) == meaning(edited), f"format gave {out!r}"


# --- guide: exact zeros stay zero ----------------------------------------------------------------


def _zero_deltas(prog, seed=7):
    """``u`` and conds all equal to ``u``: every ``full()`` is exactly zero, so docs/semantics.md
    gives exactly ``u``, whatever the weights."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    conds = u.expand(len(prog.prompts), *u.shape).clone()
    return u, conds


def test_all_zero_deltas_with_huge_weights_give_uncond():
    torch = pytest.importorskip("torch")
    prog = nl.compile("[a :1e6 AND_PERP b] :1e6 AND_SALT c :1e6")
    u, conds = _zero_deltas(prog)
    out = prog.guide(u, conds, 7.5)
    assert float((out - u).abs().max()) <= 1e-9 * float(u.abs().max())
    assert torch.isfinite(out).all()


def test_all_zero_deltas_with_unit_weights_give_uncond():
    """The same degenerate input with weights 1 (no rounding in w*eps - w*u) is exact already."""
    pytest.importorskip("torch")
    prog = nl.compile("[a AND_PERP b] AND_SALT c AND_TOPK d")
    u, conds = _zero_deltas(prog)
    out = prog.guide(u, conds, 7.5)
    assert float((out - u).abs().max()) == 0.0


def test_format_refuses_a_weight_the_language_cannot_spell():
    """A tree built in code with an infinite weight has no text: a clear ValueError, not an
    OverflowError from int(inf) (the docs/testing.md example once doubled 1e308 into one)."""
    import dataclasses

    tree = nl.parse("a AND b :1e308")
    part = dataclasses.replace(tree.parts[1], weight=float("inf"))
    tree = dataclasses.replace(tree, parts=(tree.parts[0], part), source=None)
    with pytest.raises(ValueError, match="not finite"):
        nl.format(tree)


def test_explain_prints_a_combined_weight_that_overflows():
    """Nested weights multiply ([a AND b :1e200] :1e200 is inf); explain shows it, NP406 warns."""
    text = "x AND [a AND b :1e200] :1e200"
    assert "AND inf" in nl.compile(text).explain()
    assert "NP406" in {d.code for d in nl.lint(text)}
