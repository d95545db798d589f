"""The compiled plan computes what docs/semantics.md say: it agrees with the reference
interpreter (``backends/torch/reference.py``) on fixtures and on generated prompts, over several
steps (windows, momentum), for lists of prompts and every dtype; and ``Program`` keeps its promises
(inputs untouched, cache, errors that name the step and the prompt span, tracing)."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_ir_passes import prompt_texts  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.torch import reference  # noqa: E402
from neutral_lang.backends.torch.executor import GuidanceError, RunState, Trace  # noqa: E402
from neutral_lang.compiler import Program  # noqa: E402

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
README = (
    "magical tree forests, eternal city AND_PERP [electrical pole voyage AND_SALT small nocturne companion] "
    "AND_SALT [electrical tornado AND_SALT electric arcs, bzzz, sparks]"
)
BASE = "1girl, teen, blue hair, short hair, red eye, outdoors, parkscape, best quality, masterpiece"
FIXTURES = [
    "a castle",
    "a AND b",
    "beautiful castle landscape AND monster house castle :-1",
    "beautiful castle landscape AND_PERP monster house castle :-1",
    "a vibrant rainforest with lush green foliage AND_SALT the glimmering rays of a golden sunset",
    README,
    f"{BASE} AND_TOPK glasses :1",
    f"{BASE} AND_TOPK (glasses:1.3),(smile:1.3),(curly hair:1.4) :0.4",
    "a AND_TOPK(k=0.1, per_channel=1) b :0.5 AND_TOPK(k=0.5) b",
    "a AND [b AND c :2] :0.5 AND_PERP [d AND_SALT a] :-1 AND_SALT [c AND_TOPK b :0.3] :0.5",
    "a AND a AND_SALT a AND_PERP a :-1",
    "AND_PERP x",
    "a AND_SALT b :0 AND_SALT c :0.7",
    "[a AND b] tail AND_PERP [c AND_PERP d] :2",
    "a :0 AND b :0",
    "a AND_PERP(start=2, end=4) b :-1 AND_SALT(start=0.5) c AND(end=0.5) d :0.5",
    "a castle AND_TOPK(k=0.1, per_channel=1, start=3, momentum=0.1, beta=0.4) glasses :0.5",
    "a AND [b AND_TOPK(momentum=0.5, end=2) c AND_PERP d] AND(start=3) [e AND_TOPK(momentum=1, start=0.5) a :2]",
]
SHAPE = (3, 4, 6, 6)


def random_inputs(texts, seed=0, shape=SHAPE, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    by_text = {t: torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for t in sorted(set(texts))}
    return u, by_text


def leaf_texts(*texts):
    return [leaf.text for t in texts for leaf in nl.ast.leaves(nl.parse(t))]


def stacked(prog: Program, by_text):
    return torch.stack([by_text[t] for t in prog.prompts]) if prog.prompts else None


def check_against_reference(text, *, steps=1, seed=0, scale=7.5, rescale=0.0, generated=False):
    """Our plan and the oracle agree in float64 at every step of a run: atol 1e-9, times the largest
    product of weights down the tree when that exceeds 1 (with ``a :1e6`` the intermediates are 1e6
    times larger, and so is their rounding, which a SALT blend ``base + (v - base)`` leaves behind).

    ``generated``: skip the rare generated prompt whose result is ill-conditioned, i.e. changes
    with a 1e-12 relative perturbation of the inputs. Weights that cancel (``a :0.1 AND a :0.2 AND
    a :-0.3``) leave a base of pure rounding noise, whose direction AND_PERP then projects out; a
    different (equally exact) summation order gives different noise. No plan can match such a case.
    """
    prog = nl.compile(text)
    tree = nl.parse(text)
    u, by_text = random_inputs(leaf_texts(text), seed)
    state, momentum, nudged = prog.new_state(), {}, {}
    gen = torch.Generator().manual_seed(seed + 1)
    wobble = lambda x: x * (1 + 1e-12 * torch.randn(x.shape, generator=gen, dtype=x.dtype))  # noqa: E731
    for i in range(steps):
        theirs = reference.evaluate(tree, u, by_text, scale, step=i, num_steps=steps, cfg_rescale=rescale, momentum=momentum)
        if generated:
            near = reference.evaluate(tree, wobble(u), {t: wobble(c) for t, c in by_text.items()}, scale,
                                      step=i, num_steps=steps, cfg_rescale=rescale, momentum=nudged)
            assume(torch.allclose(near, theirs, rtol=1e-8, atol=1e-7))
        ours = prog.guide(u, stacked(prog, by_text), scale, cfg_rescale=rescale, step=i, num_steps=steps, state=state)
        # float64 rounding is relative to the largest value involved: momentum (up to 1e3 per
        # step) makes later steps' values enormous, and an element near zero among them keeps
        # their rounding
        atol = 1e-9 * weight_scale(tree) + 1e-12 * float(theirs.abs().max())
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=atol,
                                   msg=lambda m: f"step {i} of {text!r}: {m}")


def weight_scale(tree) -> float:
    """The largest product of |weights| from the root to any part (at least 1)."""
    scale, stack = 1.0, [(1.0, tree)]
    while stack:
        outer, prompt = stack.pop()
        for part in prompt.parts:
            w = outer * max(1.0, abs(part.weight))
            scale = max(scale, w)
            if isinstance(part.body, nl.Group):
                stack.append((w, part.body.prompt))
    return scale


# ---------------------------------------------------------------------------------------------
# Agreement with the reference interpreter


@pytest.mark.parametrize("text", FIXTURES)
def test_fixture_matches_reference(text):
    check_against_reference(text, steps=6)


@pytest.mark.parametrize("text", FIXTURES[3:8])
@pytest.mark.parametrize("rescale", [0.3, 1.0])
def test_cfg_rescale_matches_reference(text, rescale):
    check_against_reference(text, rescale=rescale)


@SETTINGS
@given(text=prompt_texts(), seed=st.integers(0, 2**16), steps=st.sampled_from([1, 4, 7]))
def test_generated_prompt_matches_reference(text, seed, steps):
    check_against_reference(text, steps=steps, seed=seed, generated=True)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=nl.testing.prompts(max_depth=3, max_parts=4), seed=st.integers(0, 2**16))
def test_language_wide_prompt_matches_reference(text, seed):
    """Every feature of the language (A1111 leaf syntax, unicode, compatibility cases, options)."""
    check_against_reference(text, steps=5, seed=seed, generated=True)


def test_windows_switch_parts_on_and_off():
    text = "a AND_PERP(start=2, end=4) b :-1"
    prog, plain = nl.compile(text), nl.compile("a")
    u, by_text = random_inputs(["a", "b"])
    conds = stacked(prog, by_text)
    for step in range(6):
        out = prog.guide(u, conds, 7.5, step=step, num_steps=6)
        alone = plain.guide(u, conds[:1], 7.5, step=step, num_steps=6)
        assert torch.allclose(out, alone, rtol=0, atol=1e-12) == (step not in (2, 3)), step
    # fractions are of num_steps: start=0.5 of 10 steps is step 5
    frac = nl.compile("a AND_PERP(start=0.5) b")
    alone = plain.guide(u, conds[:1], 5.0)
    assert torch.allclose(frac.guide(u, conds, 5.0, step=4, num_steps=10), alone, rtol=0, atol=1e-12)
    assert not torch.allclose(frac.guide(u, conds, 5.0, step=5, num_steps=10), alone, rtol=0, atol=1e-12)


def test_momentum_follows_the_oracle_over_a_run_and_a_new_run_resets():
    text = "a castle AND_TOPK(k=0.1, per_channel=1, start=3, momentum=0.1, beta=0.4) glasses :0.5"
    prog, tree = nl.compile(text), nl.parse(text)
    u, by_text = random_inputs(leaf_texts(text))
    steps = [(u * (1 + i / 10), {t: c * (1 - i / 20) for t, c in by_text.items()}) for i in range(8)]
    state = prog.new_state()
    for run in range(2):  # the same state object twice: step 0 starts a new run
        momentum = {}
        for i, (ui, ci) in enumerate(steps):
            ours = prog.guide(ui, stacked(prog, ci), 7.5, step=i, num_steps=8, state=state)
            theirs = reference.evaluate(tree, ui, ci, 7.5, step=i, num_steps=8, momentum=momentum)
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9, msg=f"run {run} step {i}")
        assert state.last_step == 7


def test_without_a_state_each_call_starts_from_zero_momentum():
    text = "a AND_TOPK(momentum=1) b"
    prog, tree = nl.compile(text), nl.parse(text)
    u, by_text = random_inputs(["a", "b"])
    for step in (0, 3):
        ours = prog.guide(u, stacked(prog, by_text), 7.5, step=step, num_steps=5)
        theirs = reference.evaluate(tree, u, by_text, 7.5, step=step, num_steps=5)  # momentum None: fresh
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_a_state_from_another_program_is_refused():
    prog = nl.compile("a AND_TOPK(momentum=1) b")
    u, by_text = random_inputs(["a", "b"])
    with pytest.raises(ValueError, match="new_state"):
        prog.guide(u, stacked(prog, by_text), 7.5, state=RunState(3))


# ---------------------------------------------------------------------------------------------
# Lists of prompts


def test_a_list_of_prompts_guides_each_items_block_with_its_prompt():
    texts = ["a AND_PERP b :-1", "c AND_SALT a", README]
    prog = nl.compile(texts)
    u, by_text = random_inputs(leaf_texts(*texts), shape=(6, 4, 6, 6))
    out = prog.guide(u, stacked(prog, by_text), 7.5)
    for j, text in enumerate(texts):  # num_images_per_prompt order: items 2j, 2j+1
        items = slice(2 * j, 2 * j + 2)
        theirs = reference.evaluate(nl.parse(text), u[items], {t: c[items] for t, c in by_text.items()}, 7.5)
        torch.testing.assert_close(out[items], theirs, rtol=0, atol=1e-9)


def test_uses_names_the_conditionings_an_item_needs():
    prog = nl.compile(["a AND_PERP b", "c AND a", "a"])
    assert prog.prompts == ("a", "b", "c")
    assert [prog.uses(j) for j in range(3)] == [(0, 1), (0, 2), (0,)]
    assert [prog.uses(b, batch_size=6) for b in range(6)] == [(0, 1), (0, 1), (0, 2), (0, 2), (0,), (0,)]
    single = nl.compile("x AND y")
    assert single.uses(5) == single.uses(0, batch_size=8) == (0, 1)
    with pytest.raises(IndexError):
        prog.uses(3)


def test_skipped_items_may_hold_anything():
    prog = nl.compile(["a AND_PERP b", "c"])
    u, by_text = random_inputs(["a", "b", "c"], shape=(2, 4, 6, 6))
    conds = stacked(prog, by_text)
    poisoned = conds.clone()
    poisoned[prog.prompts.index("b"), 1] = float("nan")  # item 1 (prompt 1) does not use "b"
    poisoned[prog.prompts.index("c"), 0] = float("nan")
    torch.testing.assert_close(prog.guide(u, poisoned, 5.0), prog.guide(u, conds, 5.0), rtol=0, atol=0)


def test_the_batch_must_split_over_the_prompts():
    prog = nl.compile(["a", "b"])
    u, by_text = random_inputs(["a", "b"])  # 3 items
    with pytest.raises(ValueError, match="multiple of 2"):
        prog.guide(u, stacked(prog, by_text), 7.5)


def test_the_same_prompt_for_every_item_compiles_to_one_block():
    prog = nl.compile(["a AND_SALT b"] * 4)
    assert prog.plan.blocks == 1
    assert prog.texts == ("a AND_SALT b",) * 4
    u, by_text = random_inputs(["a", "b"], shape=(4, 4, 6, 6))
    torch.testing.assert_close(prog.guide(u, stacked(prog, by_text), 7.5), nl.compile("a AND_SALT b").guide(u, stacked(prog, by_text), 7.5))


# ---------------------------------------------------------------------------------------------
# Dtypes, devices and inputs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("text", [README, FIXTURES[7], FIXTURES[9], FIXTURES[16]])
def test_every_dtype_gives_a_finite_result_consistent_with_float64(dtype, text):
    prog = nl.compile(text)
    u, by_text = random_inputs(leaf_texts(text), shape=(2, 4, 16, 16), dtype=dtype)
    out = prog.guide(u, stacked(prog, by_text), 7.5, cfg_rescale=0.5, step=4, num_steps=5)
    assert out.dtype == dtype and out.shape == u.shape
    assert torch.isfinite(out).all()
    # the same (rounded) inputs in float64 give the same result up to the output's rounding; a
    # handful of elements may sit on a saliency or top-k tie that rounding decides either way
    exact = prog.guide(u.double(), torch.stack([by_text[t].double() for t in prog.prompts]), 7.5, cfg_rescale=0.5,
                       step=4, num_steps=5)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1.5e-1, torch.float32: 1e-4}[dtype]
    off = (out.double() - exact).abs() > tol * (1 + exact.abs())
    assert off.float().mean() < 2e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_inputs_are_never_modified_and_the_result_is_fresh(dtype):
    text = "a AND b :0.5 AND_PERP c :-1 AND_SALT [a AND_TOPK(momentum=0.5) b] AND_TOPK(per_channel=1) c"
    prog = nl.compile(text)
    for rescale in (0.0, 0.7):
        u, by_text = random_inputs(["a", "b", "c"], dtype=dtype)
        conds = stacked(prog, by_text)
        u0, conds0 = u.clone(), conds.clone()
        out = prog.guide(u, conds, 7.5, cfg_rescale=rescale, state=prog.new_state())
        assert torch.equal(u, u0) and torch.equal(conds, conds0)
        assert out.data_ptr() not in (u.data_ptr(), conds.data_ptr())
    zero = nl.compile("a :0")
    out = zero.guide(u, None, 7.5)
    assert torch.equal(out, u) and out.data_ptr() != u.data_ptr()


def test_conds_may_be_a_sequence_of_tensors():
    prog = nl.compile(README)
    u, by_text = random_inputs(leaf_texts(README))
    listed = [by_text[t] for t in prog.prompts]
    assert torch.equal(prog.guide(u, listed, 7.5), prog.guide(u, torch.stack(listed), 7.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_runs_on_cuda_like_on_cpu(dtype):
    prog = nl.compile(README)
    u, by_text = random_inputs(leaf_texts(README), shape=(2, 4, 32, 32), dtype=dtype)
    cpu = prog.guide(u, stacked(prog, by_text), 7.5, cfg_rescale=0.5)
    gpu = prog.guide(u.cuda(), stacked(prog, by_text).cuda(), 7.5, cfg_rescale=0.5)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    off = (gpu.cpu().double() - cpu.double()).abs() > 1e-2 * (1 + cpu.double().abs())
    assert off.float().mean() < 2e-3


# ---------------------------------------------------------------------------------------------
# Program: prompts, cache, options, errors, trace, explain


def test_prompts_are_the_unique_texts_in_order_of_first_appearance():
    assert nl.compile("b AND a AND_PERP [ b AND c ] AND_SALT a").prompts == ("b", "a", "c")
    assert nl.compile("a AND b :0 AND c").prompts == ("a", "c")  # b contributes nothing
    assert nl.compile("a :0").prompts == ()


def test_compile_is_cached_on_its_arguments():
    assert nl.compile(README) is nl.compile(README)
    assert nl.compile(["a", "b"]) is nl.compile(("a", "b"))
    assert nl.compile(README, passes=()) is not nl.compile(README)


def test_passes_can_be_replaced_or_disabled():
    text = "a AND a AND b :0"
    assert nl.compile(text).prompts == ("a",)
    raw = nl.compile(text, passes=())
    assert raw.prompts == ("a", "a", "b") and raw.passes == ()  # unmerged, unpruned
    u, by_text = random_inputs(["a", "b"])
    conds_raw = torch.stack([by_text[t] for t in raw.prompts])
    torch.testing.assert_close(raw.guide(u, conds_raw, 7.5), nl.compile(text).guide(u, conds_raw[:1], 7.5), rtol=0, atol=1e-12)


def test_every_delta_is_subtracted_before_it_is_scaled():
    """``w * (eps - u)``, never ``w*eps - w*u``: when every prediction equals ``u`` the result is
    exactly ``u``, whatever the weights (folding would leave ulp(w * eps) noise for SALT to pick)."""
    text = "[a :1e6 AND_PERP b] :1e6 AND_SALT c :1e6 AND_TOPK(momentum=0.5) a :1e3"
    prog = nl.compile(text)
    u = torch.randn(2, 4, 8, 8) * 100
    conds = u.expand(len(prog.prompts), *u.shape)
    assert torch.equal(prog.guide(u, conds, 7.5), u)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_cfg_rescale_is_validated_with_a_clear_message(bad):
    u, by_text = random_inputs(["a"])
    with pytest.raises(ValueError, match="Expected cfg_rescale to be between 0.0 and 1.0"):
        nl.compile("a").guide(u, [by_text["a"]], 7.5, cfg_rescale=bad)


@pytest.mark.parametrize("bad, error", [(float("nan"), ValueError), (float("inf"), ValueError), ("0.5", TypeError),
                                        (True, TypeError), (None, TypeError)])
def test_cfg_rescale_must_be_a_finite_real_number(bad, error):
    u, by_text = random_inputs(["a"])
    with pytest.raises(error, match="cfg_rescale"):
        nl.compile("a").guide(u, [by_text["a"]], 7.5, cfg_rescale=bad)


def test_compile_refuses_cfg_rescale_and_names_the_run_time_argument():
    with pytest.raises(TypeError, match=r"no longer takes cfg_rescale.*guide\(\.\.\., cfg_rescale=r\)"):
        nl.compile("a", cfg_rescale=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rescale'"):
        nl.compile("a", rescale=0.5)


def test_strict_is_forwarded_to_the_parser():
    assert nl.compile("a [b").prompts == ("a [b",)
    with pytest.raises(nl.ParseError):
        nl.compile("a [b", strict=True)


def test_input_errors_say_what_was_expected():
    prog = nl.compile("a AND_PERP b")
    u, by_text = random_inputs(["a", "b"])
    with pytest.raises(ValueError, match=r"Expected 2 conditionings .*\['a', 'b'\].* got 1"):
        prog.guide(u, torch.stack([by_text["a"]]), 7.5)
    with pytest.raises(ValueError, match=r"conds\[1\] \('b'\) has shape"):
        prog.guide(u, [by_text["a"], by_text["b"][:, :2]], 7.5)
    with pytest.raises(TypeError, match="floating point"):
        prog.guide(u.long(), stacked(prog, by_text), 7.5)


def test_a_failing_step_is_named_with_its_prompt_span():
    text = "a castle AND_TOPK(per_channel=1) glasses :0.4"
    prog = nl.compile(text)
    u = torch.randn(2, 5, dtype=torch.float64)[:, 0]  # no channel dimension: per-channel top-k fails
    with pytest.raises(GuidanceError) as info:
        prog.guide(u, torch.randn(2, 2, dtype=torch.float64), 7.5)
    message = str(info.value)
    assert "step 2 (%2 = topk(%1, k=0.05, per_channel))" in message
    assert "characters 9-45 'AND_TOPK(per_channel=1) glasses :0.4'" in message
    assert "channel dimension" in message
    assert info.value.origin.span == nl.Span(9, 45)


def test_trace_records_intermediates_by_step_and_span():
    text = "a AND_PERP b :-1 AND_TOPK c :0.5 AND_SALT [b AND_SALT c]"
    prog = nl.compile(text)
    u, by_text = random_inputs(["a", "b", "c"])
    trace = Trace()
    plain = prog.guide(u, stacked(prog, by_text), 7.5, step=1, num_steps=3)
    traced = prog.guide(u, stacked(prog, by_text), 7.5, step=1, num_steps=3, trace=trace)
    assert torch.equal(plain, traced)
    kinds = [r.kind for r in trace]
    assert sorted(kinds) == ["PERP", "SALT", "SALT", "TOPK"]
    perp = trace.of("PERP")[0]
    assert perp.step == 1 and perp.text == "AND_PERP b :-1"
    torch.testing.assert_close(perp.data["perp"] + perp.data["parallel"], by_text["b"] - u)
    topk = trace.of("TOPK")[0]
    assert topk.data["kept"].dtype == torch.bool and topk.data["kept"].float().mean() < 0.2
    for salt in trace.of("SALT"):
        assert salt.data["winners"].shape == u.shape and salt.data["winners"].max() <= 1
        assert salt.data["candidates"] == (0,)


def test_explain_shows_tree_ir_plan_and_cost():
    text = "a AND a :0.5 AND_PERP b :-1 AND c :0"
    out = nl.compile(text).explain()
    for piece in ("prompt 0: 'a AND a :0.5 AND_PERP b :-1 AND c :0'", "AND_PERP :-1 'b'", "IR after passes",
                  "AND 1.5 #0", "plan:", "= perp(%", "cost: 3 model evaluations per step",
                  "the source has 4 leaves"):
        assert piece in out, piece


def test_plan_frees_every_register_after_its_last_use():
    plan = nl.compile(README).plan
    freed = [r for f in plan.frees for r in f]
    assert sorted(freed) == sorted(set(freed)) == list(range(plan.registers))
    last = {r: n for n, s in enumerate(plan.steps) for r in s.reads()}
    assert all(r in plan.frees[n] for r, n in last.items())


def test_compiling_imports_no_torch():
    code = (
        "import sys, neutral_lang as nl; p = nl.compile('a AND_PERP b'); p.explain(); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
