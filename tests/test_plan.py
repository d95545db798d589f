"""The plan's structure and the executor's numbers.

- Every IR operator is known to the plan builder, the executor and the reference oracle, and an
  operator the builder has no rule for raises instead of running as another one.
- Liveness is derived from ``Step.reads()``; every step kind has a handler, ``Out`` included.
- Numbers (docs/semantics.md, "Numbers"): finite predictions give a finite result or an error
  naming the step and prompt span; a NaN/inf prediction is reported with its conditioning and step
  (a warning by default, an error on request), never dropped silently.
- ``guide``'s arguments are checked in one place, with TypeErrors naming the expected types.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest

torch = pytest.importorskip("torch")

import neutral_lang as nl  # noqa: E402
from neutral_lang import ast, ir, keywords, lower, plan  # noqa: E402
from neutral_lang.backends.torch import executor, reference  # noqa: E402
from neutral_lang.backends.torch.executor import (  # noqa: E402
    GuidanceError,
    NonFiniteInputError,
    NonFiniteWarning,
)

SHAPE = (2, 4, 6, 6)


def inputs(prog, dtype=torch.float64, seed=0, shape=SHAPE):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    conds = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in prog.prompts]
    return u, conds


# ---------------------------------------------------------------------------------------------
# Every operator, everywhere


@pytest.mark.parametrize("row", keywords.KEYWORDS, ids=[row.name for row in keywords.KEYWORDS])
def test_every_operator_is_known_to_the_builder_the_executor_and_the_oracle(row):
    """The compiler's stages, over the same keyword table rows as tests/test_keywords.py."""
    op, keyword = ir.Op[row.op], keywords.Keyword[row.name]
    assert op is ir.AND or op in plan.OPERATORS  # the builder has a rule (AND sums into the base)
    kind = plan.STEP_KINDS[op]
    assert kind in executor._HANDLERS  # the executor runs the step kind the rule emits
    assert keyword in reference._OPTIONS  # the oracle evaluates the keyword
    # and the three agree on a prompt using it
    prog = nl.compile(f"a castle {row.name} monster :0.5")
    assert any(type(s) is kind for s in prog.plan.steps)
    u, conds = inputs(prog)
    by_text = dict(zip(prog.prompts, conds))
    want = reference.evaluate(prog.ast[0], u, by_text, 7.5)
    torch.testing.assert_close(prog.guide(u, conds, 7.5), want, rtol=1e-12, atol=1e-12)


def test_the_ir_operators_are_the_table_rows():
    assert {ir.Op[row.op] for row in keywords.KEYWORDS} == set(ir.Op)


def test_every_step_kind_has_a_handler_out_included():
    assert set(executor._HANDLERS) == {plan.Lin, plan.Perp, plan.TopK, plan.Salt, plan.Out}
    assert set(plan.STEP_KINDS.values()) | {plan.Out} == set(executor._HANDLERS)


def test_an_operator_without_a_rule_raises_instead_of_running_as_another():
    module = lower.lower([nl.parse("a AND_PERP b")])
    root = module.roots[0]
    stranger = dataclasses.replace(root.parts[1], op="AND_ALIGN")  # an operator the builder never saw
    module = ir.Module((ir.Group((root.parts[0], stranger), root.span),), module.conds)
    with pytest.raises(plan.UnknownOperatorError, match="no rule for the operator AND_ALIGN"):
        plan.build(module)


# ---------------------------------------------------------------------------------------------
# Liveness and construction


@pytest.mark.parametrize("text", [
    "a AND b",
    "a AND [b AND_PERP c :-1] :2 AND_SALT [c AND_TOPK(momentum=0.5) a] AND_PERP(start=2) d",
    "a AND_SALT b AND_SALT(end=3) c AND_TOPK(per_channel=1) [a AND_PERP b]",
])
def test_frees_are_the_last_reads_of_every_register(text):
    p = nl.compile(text).plan
    last = {}
    for n, step in enumerate(p.steps):
        for r in step.reads():
            last[r] = n
    assert p.frees == tuple(tuple(sorted(r for r, at in last.items() if at == n)) for n in range(len(p.steps)))
    assert p.frees == plan.liveness(p.steps)


def test_steps_are_plain_named_tuples_with_their_field_names():
    step = nl.compile("a AND_PERP b").plan.steps[-2]
    assert type(step) is plan.Perp and step._fields == ("dst", "origin", "d", "v", "guard", "block")
    assert step == plan.Perp(step.dst, step.origin, step.d, step.v, step.guard, step.block)
    assert "rescale" not in plan.Out._fields  # CFG rescale is a run-time argument


def test_the_plan_numbers_conditionings_as_the_final_pass_leaves_the_table():
    prog = nl.compile("a AND [b AND b :-1] AND c")
    assert prog.ir.conds == prog.plan.conds == ("a", "c")


# ---------------------------------------------------------------------------------------------
# Run-time CFG rescale


def test_cfg_rescale_is_given_per_call_and_matches_the_oracle():
    prog = nl.compile("a AND_PERP b :-1 AND_SALT c")
    u, conds = inputs(prog)
    by_text = dict(zip(prog.prompts, conds))
    for r in (0.0, 0.3, 1.0):
        want = reference.evaluate(prog.ast[0], u, by_text, 7.5, cfg_rescale=r)
        torch.testing.assert_close(prog.guide(u, conds, 7.5, cfg_rescale=r), want, rtol=1e-12, atol=1e-12)
    assert not torch.equal(prog.guide(u, conds, 7.5, cfg_rescale=0.7), prog.guide(u, conds, 7.5))


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("scale, error, match", [
    ("7", TypeError, "guidance_scale to be a real number"),
    (None, TypeError, "guidance_scale to be a real number"),
    (True, TypeError, "guidance_scale to be a real number"),
    (float("nan"), ValueError, "guidance_scale to be finite"),
    (float("inf"), ValueError, "guidance_scale to be finite"),
    (-float("inf"), ValueError, "guidance_scale to be finite"),
])
def test_guidance_scale_must_be_a_finite_real_number(scale, error, match):
    prog = nl.compile("a AND b")
    u, conds = inputs(prog)
    with pytest.raises(error, match=match):
        prog.guide(u, conds, scale)


def test_numpy_scalars_are_accepted_where_floats_are():
    np = pytest.importorskip("numpy")
    prog = nl.compile("a AND_PERP b :-1")
    u, conds = inputs(prog)
    want = prog.guide(u, conds, 7.5, cfg_rescale=0.5)
    assert torch.equal(prog.guide(u, conds, np.float64(7.5), cfg_rescale=np.float64(0.5)), want)
    assert torch.equal(prog.guide(u, conds, np.float32(7.5), cfg_rescale=np.float32(0.5), step=np.int64(0)), want)


@pytest.mark.parametrize("kw, error, match", [
    ({"step": 1.5}, TypeError, "step to be an int"),
    ({"step": -1}, ValueError, "step >= 0"),
    ({"num_steps": 0}, ValueError, "num_steps >= 1"),
    ({"state": {}}, TypeError, "state to be a RunState"),
    ({"nonfinite": "ignore"}, ValueError, "nonfinite to be one of"),
])
def test_other_guide_arguments_are_checked_before_any_work(kw, error, match):
    prog = nl.compile("a AND b")
    u, conds = inputs(prog)
    with pytest.raises(error, match=match):
        prog.guide(u, conds, 7.5, **kw)


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize("text", ["a AND b :1e39", "a AND_SALT b :1e39", "[a AND b :1e20] :1e20",
                                  "a AND_PERP b :1e39", "a AND_TOPK b :1e39"])
def test_finite_float32_inputs_overflowing_name_the_part(text):
    prog = nl.compile(text)
    u, conds = inputs(prog, torch.float32)
    with pytest.raises(GuidanceError, match=r"from prompt 0, characters \d+-\d+ .*float32") as info:
        prog.guide(u, conds, 7.5)
    span = prog.plan.steps[info.value.index].origin.span
    assert "1e" in text[span.start:span.end] or text[span.start:span.end] == text  # the weighted part, or the whole


def test_the_same_weights_in_float64_are_fine():
    prog = nl.compile("a AND_SALT b :1e39")
    u, conds = inputs(prog, torch.float64)
    assert torch.isfinite(prog.guide(u, conds, 7.5)).all()


def test_a_half_result_that_does_not_fit_float16_names_the_output_step():
    prog = nl.compile("a AND b :1e4")
    u, conds = inputs(prog, torch.float16)
    with pytest.raises(GuidanceError, match=r"step \d+ \(out = .*float16") as info:
        prog.guide(u, conds, 7.5)
    assert type(info.value.step) is plan.Out


def test_an_overflow_leaves_the_momentum_state_as_it_was():
    prog = nl.compile("a AND_TOPK(momentum=0.5) b AND c :3e38")
    u, conds = inputs(prog, torch.float32)
    conds[2] = u + 1e-3 * conds[2]  # a small delta: 3e38 times it fits float32 at scale 1
    state = prog.new_state()
    prog.guide(u, conds, 1.0, state=state, step=0, num_steps=3)
    before = [m.clone() for m in state.momentum]
    with pytest.raises(GuidanceError, match="coefficient 2.25e\\+39 of %2"):  # 7.5 * 3e38 does not fit
        prog.guide(u, conds, 7.5, state=state, step=1, num_steps=3)
    assert state.last_step == 0 and all(torch.equal(a, b) for a, b in zip(before, state.momentum))


@pytest.mark.parametrize("text", ["a AND_SALT b", "a AND_TOPK(per_channel=1) b", "a AND b", "a AND_PERP b"])
def test_a_nan_prediction_is_reported_with_its_conditioning_and_step(text):
    prog = nl.compile(text)
    u, conds = inputs(prog)
    conds[1][0, 0, 0, 0] = float("nan")
    with pytest.warns(NonFiniteWarning, match=r"Step 3: the prediction for conditioning 1 'b' holds NaN"):
        prog.guide(u, conds, 7.5, step=3, num_steps=5)
    with pytest.raises(NonFiniteInputError, match="conditioning 1 'b'") as info:
        prog.guide(u, conds, 7.5, step=3, num_steps=5, nonfinite="raise")
    assert (info.value.conditioning, info.value.text, info.value.step) == (1, "b", 3)


def test_a_non_finite_uncond_is_reported_too():
    prog = nl.compile("a AND b")
    u, conds = inputs(prog)
    u[1, 2, 3, 4] = float("inf")
    with pytest.raises(NonFiniteInputError, match="unconditional prediction") as info:
        prog.guide(u, conds, 7.5, nonfinite="raise")
    assert info.value.conditioning is None


def test_finite_inputs_raise_no_warning():
    prog = nl.compile("a AND_SALT b AND_TOPK(per_channel=1) c")
    u, conds = inputs(prog)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(prog.guide(u, conds, 7.5)).all()


def test_a_nan_in_items_that_do_not_read_the_conditioning_is_not_reported():
    prog = nl.compile(["a AND_PERP b", "c"])
    u, conds = inputs(prog)
    conds[prog.prompts.index("b")][1] = float("nan")  # item 1 follows prompt 1, which does not read 'b'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prog.guide(u, conds, 7.5, nonfinite="raise")


def test_ast_is_untouched_by_lowering_an_unknown_operator_test():
    # the enumeration above builds its stranger from a real part; make sure the source tree still
    # reads as written (the test does not mutate shared, cached objects)
    assert nl.compile("a AND_PERP b").ir.roots[0].parts[1].op is ir.PERP
    assert isinstance(nl.parse("a AND_PERP b"), ast.Prompt)
