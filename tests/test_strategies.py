"""The strategy math (backends/torch/strategies.py), the reference interpreter and the original-style baseline.

Fixtures pin exact, hand-computed values; property tests check the laws (projection is orthogonal,
top-k keeps exactly the large entries, batch items are independent, inputs stay untouched); the
oracle is checked against the formulas of docs/semantics.md written out by hand, against diffusers'
SEGA loop, and against the original-style baseline.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")

from hypothesis import assume, given, settings, strategies as st  # noqa: E402

from neutral_lang.ast import Group, Keyword, Leaf, Option, Part, Prompt, Span  # noqa: E402
from neutral_lang.backends.torch import reference, strategies as S  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("baseline_original", ROOT / "benchmarks" / "baseline_original.py")
baseline = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = baseline  # dataclasses look their module up there
_spec.loader.exec_module(baseline)

PROPS = settings(max_examples=50, deadline=None)


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def rand(*shape, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


shapes = st.sampled_from([(1, 4), (2, 3, 5), (3, 4, 6, 6), (2, 4, 8, 8), (2, 1, 3, 4, 5), (4, 2, 2, 2)])
seeds = st.integers(0, 2**31 - 1)


# --- perpendicular ---------------------------------------------------------------------------------


def test_perpendicular_hand_computed_per_item():
    d = t([[1.0, 0.0], [1.0, 1.0]])
    v = t([[3.0, 4.0], [2.0, 0.0]])
    # item 0: <d,v>/<d,d> = 3 -> [0, 4]; item 1: 2/2 = 1 -> [1, -1]
    assert torch.equal(S.perpendicular(d, v), t([[0.0, 4.0], [1.0, -1.0]]))


def test_perpendicular_zero_direction_returns_v_for_that_item_only():
    d = t([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    v = t([[1.0, -2.0, 3.0], [1.0, 5.0, 7.0]])
    out = S.perpendicular(d, v)
    assert torch.equal(out[0], v[0])
    assert torch.equal(out[1], t([1.0, 0.0, 7.0]))
    assert not torch.isnan(out).any()


def test_perpendicular_tiny_direction_is_not_mistaken_for_zero():
    # 1e-30 ** 2 underflows in float32; the float64 accumulation still projects it out.
    d = t([[1e-30, 0.0]])
    v = t([[3.0, 4.0]])
    out = S.perpendicular(d, v)
    torch.testing.assert_close(out, t([[0.0, 4.0]]), rtol=0, atol=1e-6)  # not v: the 3 is projected out


def test_perpendicular_keeps_dtype_and_inputs():
    d = rand(2, 4, 8, 8, seed=1, dtype=torch.float16)
    v = rand(2, 4, 8, 8, seed=2, dtype=torch.float16)
    d0, v0 = d.clone(), v.clone()
    out = S.perpendicular(d, v)
    assert out.dtype == torch.float16
    assert torch.equal(d, d0) and torch.equal(v, v0)
    exact = S.perpendicular(d.double(), v.double())
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=4e-3)


@PROPS
@given(shape=shapes, seed=seeds)
def test_perpendicular_is_orthogonal_and_decomposes_v(shape, seed):
    d = rand(*shape, seed=seed, dtype=torch.float64)
    v = rand(*shape, seed=seed + 1, dtype=torch.float64)
    out = S.perpendicular(d, v)
    dims = tuple(range(1, len(shape)))
    inner = (out * d).sum(dims)
    assert torch.all(inner.abs() <= 1e-9 * (d.norm(dim=None) * v.norm() + 1))
    parallel = v - out  # must be a multiple of d, per item
    coef = (parallel * d).sum(dims) / (d * d).sum(dims)
    torch.testing.assert_close(parallel, d * coef.reshape(-1, *([1] * (len(shape) - 1))))


@PROPS
@given(shape=shapes, seed=seeds)
def test_perpendicular_batch_items_are_independent(shape, seed):
    d = rand(*shape, seed=seed)
    v = rand(*shape, seed=seed + 1)
    d[0] = 0
    out = S.perpendicular(d, v)
    for i in range(shape[0]):
        assert torch.equal(out[i : i + 1], S.perpendicular(d[i : i + 1], v[i : i + 1]))


# --- topk ------------------------------------------------------------------------------------------


def test_topk_hand_computed():
    v = t([[0.1, -0.5, 0.3, -0.9]])
    # index int(0.5 * 4) = 2 -> t = 2nd smallest |v| = 0.3
    assert torch.equal(S.topk(v, 0.5), t([[0.0, -0.5, 0.3, -0.9]]))


def test_topk_default_k_keeps_top_five_percent():
    v = torch.arange(1.0, 41.0).reshape(1, 2, 4, 5)  # index int(0.95 * 40) = 38 -> keep 38, 39, 40
    out = S.topk(v)
    assert torch.equal(out.flatten()[out.flatten() != 0], t([38.0, 39.0, 40.0]))


def test_topk_keeps_ties_with_the_threshold():
    v = t([[1.0, -1.0, 1.0, 0.5]])
    assert torch.equal(S.topk(v, 0.5), t([[1.0, -1.0, 1.0, 0.0]]))


def test_topk_index_is_python_float_floor():
    # (1 - 0.3) * 90 == 62.99999999999999 in floats: the threshold is the 62nd smallest, not the 63rd.
    v = torch.arange(1.0, 91.0).reshape(1, 90)
    assert int(S.topk(v, 0.3).count_nonzero()) == 29
    # (1 - 0.9) * 10 == 0.9999999999999998: index 0, so nothing is filtered.
    w = torch.arange(1.0, 11.0).reshape(1, 10)
    assert torch.equal(S.topk(w, 0.9), w)


def test_topk_k_bounds():
    v = t([[3.0, -1.0, 2.0, -3.0]])
    assert torch.equal(S.topk(v, 1.0), v)
    assert torch.equal(S.topk(v, 0.0), t([[3.0, 0.0, 0.0, -3.0]]))  # only the maximum (with ties)
    out = S.topk(v, 1.0)
    out += 1  # a fresh tensor even when nothing is filtered
    assert torch.equal(v, t([[3.0, -1.0, 2.0, -3.0]]))
    with pytest.raises(ValueError, match="Expected k to be between 0.0 and 1.0, but got 1.5"):
        S.topk(v, 1.5)


def test_topk_thresholds_each_item_on_its_own():
    v = torch.stack([torch.arange(1.0, 11.0), 100 * torch.arange(10.0, 0.0, -1.0)])
    out = S.topk(v, 0.2)  # index int(0.8 * 10) = 8: keep |v| >= the 8th smallest, the three largest
    assert torch.equal(out[0], t([0, 0, 0, 0, 0, 0, 0, 8, 9, 10]))
    assert torch.equal(out[1], t([1000, 900, 800, 0, 0, 0, 0, 0, 0, 0]))


@PROPS
@given(shape=shapes, seed=seeds, k=st.floats(0.0, 1.0))
def test_topk_keeps_exactly_the_large_entries(shape, seed, k):
    v = rand(*shape, seed=seed)
    v0 = v.clone()
    out = S.topk(v, k)
    assert torch.equal(v, v0)
    numel = v[0].numel()
    index = int((1 - k) * numel)
    for i in range(shape[0]):
        a, o = v[i].flatten(), out[i].flatten()
        kept = o != 0
        assert torch.equal(o[kept], a[kept])
        if index < 1:
            assert torch.equal(o, a)
            continue
        assert int(kept.sum()) >= numel - index + 1
        if (~kept).any():
            assert a[kept].abs().min() > a[~kept].abs().max()


# --- topk_per_channel --------------------------------------------------------------------------------


def test_topk_per_channel_hand_computed():
    v = t([[[[1.0, 2.0], [3.0, 4.0]], [[-10.0, 0.0], [5.0, 1.0]]]])
    # channel 0: quantile([1,2,3,4], 0.5) = 2.5; channel 1: quantile([0,1,5,10], 0.5) = 3
    expected = t([[[[0.0, 0.0], [3.0, 4.0]], [[-10.0, 0.0], [5.0, 0.0]]]])
    assert torch.equal(S.topk_per_channel(v, 0.5), expected)


def _diffusers_threshold(x, edit_threshold):
    """diffusers SemanticStableDiffusionPipeline's masking, transcribed."""
    if x.dtype == torch.float32:
        tmp = torch.quantile(torch.abs(x).flatten(start_dim=2), edit_threshold, dim=2, keepdim=False)
    else:
        tmp = torch.quantile(
            torch.abs(x).flatten(start_dim=2).to(torch.float32), edit_threshold, dim=2, keepdim=False
        ).to(x.dtype)
    return torch.where(torch.abs(x) >= tmp[:, :, None, None], x, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [0.1, 0.05, 0.5, 0.01])
def test_topk_per_channel_matches_diffusers(dtype, k):
    v = rand(2, 4, 16, 16, seed=3, dtype=dtype)
    assert torch.equal(S.topk_per_channel(v, k), _diffusers_threshold(v, 1 - k))


@PROPS
@given(seed=seeds, q=st.floats(0.0, 1.0), n=st.integers(1, 300))
def test_quantile_matches_torch_bit_for_bit(seed, q, n):
    x = rand(3, 2, n, seed=seed).abs()
    assert torch.equal(S._quantile_linear(x, q), torch.quantile(x, q, dim=-1))


def test_topk_per_channel_beyond_torch_quantile_size_limit():
    v = rand(1, 1, 4097, 4096, seed=4)  # one channel of 2**24 + 4096 positions
    with pytest.raises(RuntimeError, match="too large"):
        torch.quantile(v.abs().flatten(2), 0.9, dim=2)
    out = S.topk_per_channel(v, 0.1)
    # torch.quantile's algorithm, spelled out with a full sort: rank q * (n - 1) in float32, lerp.
    ordered = v.abs().flatten().sort().values
    rank = torch.tensor(0.9) * (ordered.numel() - 1)
    below, above = int(rank), int(torch.ceil(rank))
    threshold = torch.lerp(ordered[below], ordered[above], rank - below)
    assert torch.equal(out, torch.where(v.abs() >= threshold, v, torch.zeros_like(v)))
    assert abs(float(out.count_nonzero()) / v.numel() - 0.1) < 1e-4


def test_topk_per_channel_thresholds_each_item_and_channel():
    v = rand(3, 4, 8, 8, seed=11)
    v = v * torch.arange(1.0, 13.0).reshape(3, 4, 1, 1)  # a different scale per (item, channel)
    out = S.topk_per_channel(v, 0.25)
    for b in range(3):
        for c in range(4):
            assert torch.equal(out[b, c], _diffusers_threshold(v[b : b + 1, c : c + 1], 0.75)[0, 0])
            assert int(out[b, c].count_nonzero()) == 16  # 25% of 64 distinct magnitudes


# --- salt ------------------------------------------------------------------------------------------


def test_salt_hand_computed():
    d = t([[1.0, 0.0]])  # S(d) = [0.731, 0.269]
    v = t([[0.0, 2.0]])  # S(v) = [0.119, 0.881]
    assert torch.equal(S.salt_winners(d, [v]), torch.tensor([[0, 1]]))
    assert torch.equal(S.salt(d, [v], [0.5]), t([[0.0, 1.0]]))  # 0.5 * (2 - 0)


def test_salt_without_children_is_zero():
    d = rand(2, 3, 4, seed=5)
    out = S.salt(d, [], [])
    assert torch.equal(out, torch.zeros_like(d))
    with pytest.raises(ValueError, match="one weight per vector"):
        S.salt(d, [d], [])


def test_salt_ties_go_to_the_first():
    d = t([[1.0, -2.0, 3.0]])
    assert torch.equal(S.salt(d, [d.clone()], [1.0]), torch.zeros_like(d))  # d ties with v: d wins
    v = t([[5.0, 5.0, 5.0]])
    assert torch.equal(S.salt_winners(d, [v, v.clone()]), torch.tensor([[1, 1, 0]]))
    assert torch.equal(S.salt(d, [v, v.clone()], [2.0, 100.0]), t([[8.0, 14.0, 0.0]]))


def test_salt_huge_values_where_plain_softmax_underflows():
    d = t([[200.0, 1.0, 1.0, 1.0]])  # log S(d) = [0, -199, -199, -199]
    v = t([[1.0, 300.0, 150.0, 1.0]])  # log S(v) = [-299, 0, -150, -299]
    expected = torch.tensor([[0, 1, 1, 0]])
    assert torch.equal(S.salt_winners(d, [v]), expected)
    # The literal float32 transcription sees exp(-199) == exp(-150) == 0: a false tie that d wins.
    naive = torch.argmax(torch.stack([torch.softmax(d.abs().flatten(), 0), torch.softmax(v.abs().flatten(), 0)]), 0)
    assert naive.tolist() == [0, 1, 0, 0]
    assert torch.equal(S.salt(d, [v], [1.0]), t([[0.0, 299.0, 149.0, 0.0]]))
    # Far beyond what even float64 softmax can resolve, the log domain still orders them.
    big = S.salt_winners(d * 1e6, [v * 1e6])
    assert torch.equal(big, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_salt_half_precision_picks_the_float32_winners(dtype):
    d = rand(3, 4, 16, 16, seed=6, dtype=dtype, scale=3.0)
    vs = [rand(3, 4, 16, 16, seed=7 + i, dtype=dtype, scale=3.0 + i) for i in range(3)]
    winners = S.salt_winners(d, vs)
    assert torch.equal(winners, S.salt_winners(d.float(), [v.float() for v in vs]))
    assert winners.unique().numel() == 4  # every map wins somewhere: the check is not vacuous
    out = S.salt(d, vs, [0.5, -1.0, 2.0])
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), S.salt(d.float(), [v.float() for v in vs], [0.5, -1.0, 2.0]), rtol=1e-2, atol=5e-2)


def _salt_spec(d, vs, ws):
    """docs/semantics.md written out literally, per item, softmax in float64."""
    out = torch.zeros_like(d)
    for b in range(d.shape[0]):
        maps = [torch.softmax(x[b].abs().flatten().double(), 0).reshape(d[b].shape) for x in [d] + list(vs)]
        winner = torch.argmax(torch.stack(maps), 0)
        for i, (v, w) in enumerate(zip(vs, ws), start=1):
            out[b] += w * (winner == i).to(d.dtype) * (v[b] - d[b])
    return out


@PROPS
@given(shape=shapes, seed=seeds, n=st.integers(1, 4), scale=st.sampled_from([0.1, 1.0, 4.0]))
def test_salt_agrees_with_the_literal_spec_formula(shape, seed, n, scale):
    d = rand(*shape, seed=seed, scale=scale)
    vs = [rand(*shape, seed=seed + i + 1, scale=scale * (1 + 0.5 * i)) for i in range(n)]
    ws = [1.0, -0.5, 2.0, 0.25][:n]
    # Compare only where the two best float64 log-saliencies are not within rounding of each other.
    logs = torch.stack([torch.log_softmax(x.abs().flatten(1).double(), 1).reshape(shape) for x in [d] + vs])
    top2 = logs.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5
    assume(clear.any())  # near-ties are decided by rounding in either computation
    out, spec = S.salt(d, vs, ws), _salt_spec(d, vs, ws)
    assert torch.equal(out[clear], spec[clear])


@PROPS
@given(shape=shapes, seed=seeds, n=st.integers(1, 3))
def test_salt_equals_its_winner_formula_and_is_per_item(shape, seed, n):
    d = rand(*shape, seed=seed)
    vs = [rand(*shape, seed=seed + i + 1, scale=1 + i) for i in range(n)]
    ws = [0.7, -1.3, 2.0][:n]
    copies = [x.clone() for x in [d] + vs]
    out = S.salt(d, vs, ws)
    winners = S.salt_winners(d, vs)
    expected = sum(w * (winners == i).to(d.dtype) * (v - d) for i, (v, w) in enumerate(zip(vs, ws), start=1))
    assert torch.equal(out, expected)
    for x, x0 in zip([d] + vs, copies):
        assert torch.equal(x, x0)
    for b in range(shape[0]):
        sl = slice(b, b + 1)
        assert torch.equal(out[sl], S.salt(d[sl], [v[sl] for v in vs], ws))


# --- cfg_rescale -------------------------------------------------------------------------------------


def test_cfg_rescale_hand_computed():
    g = t([[1.0, 3.0]])  # mean 2, std sqrt(2) (unbiased)
    c = t([[2.0, 6.0]])  # mean 4, std 2 sqrt(2)
    torch.testing.assert_close(S.cfg_rescale(g, c, 1.0), t([[2.0, 6.0]]))
    torch.testing.assert_close(S.cfg_rescale(g, c, 0.5), t([[1.5, 4.5]]))  # mean 3, scale 1.5
    assert S.cfg_rescale(g, c, 0.0) is g
    with pytest.raises(ValueError, match="Expected r to be between 0.0 and 1.0"):
        S.cfg_rescale(g, c, -0.1)


def test_cfg_rescale_matches_the_original_per_item_formula():
    g, c = rand(3, 4, 8, 8, seed=8, scale=5.0), rand(3, 4, 8, 8, seed=9)
    r = 0.7
    out = S.cfg_rescale(g, c, r)
    for b in range(3):
        mean = (1 - r) * g[b].mean() + r * c[b].mean()
        factor = r * (c[b].std() / g[b].std() - 1) + 1
        torch.testing.assert_close(out[b], mean + (g[b] - g[b].mean()) * factor)


def test_cfg_rescale_constant_guided_gives_no_nan():
    g = torch.full((1, 2, 3), 2.0)
    c = t([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]])
    out = S.cfg_rescale(g, c, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(g, 0.5 * 2.0 + 0.5 * 2.5))


# --- SEGA momentum ---------------------------------------------------------------------------------


def test_sega_momentum_hand_computed():
    edit = torch.ones(1, 2)
    e, m = S.sega_momentum(edit, None, 0.5, 0.4)
    assert torch.allclose(e, torch.full_like(edit, 1.0)) and torch.allclose(m, torch.full_like(edit, 0.6))
    e, m = S.sega_momentum(edit, m, 0.5, 0.4)
    assert torch.allclose(e, torch.full_like(edit, 1.3)) and torch.allclose(m, torch.full_like(edit, 1.02))
    e, m2 = S.sega_momentum(edit, m, 0.5, 0.4)
    assert torch.allclose(e, torch.full_like(edit, 1.51))
    assert torch.allclose(m, torch.full_like(edit, 1.02))  # the state passed in is not modified


# --- reference.evaluate --------------------------------------------------------------------------


def _span():
    return Span(0, 0)


def leaf(text, kw=Keyword.AND, w=1.0, **opts):
    return Part(kw, Leaf(text, _span()), w, _span(), _options(opts))


def group(parts, kw=Keyword.AND, w=1.0, **opts):
    return Part(kw, Group(Prompt(tuple(parts), _span()), _span()), w, _span(), _options(opts))


def _options(opts):
    return tuple(Option(name, float(value), str(value), _span()) for name, value in opts.items())


def prompt(*parts):
    return Prompt(tuple(parts), _span())


SHAPE = (2, 4, 8, 8)


def data(*texts, seed=10):
    u = rand(*SHAPE, seed=seed)
    return u, {text: rand(*SHAPE, seed=seed + 1 + i, scale=1 + 0.3 * i) for i, text in enumerate(texts)}


def test_evaluate_plain_and_is_weighted_cfg():
    u, conds = data("a", "b")
    out = reference.evaluate(prompt(leaf("a", w=0.7), leaf("b", w=-0.2)), u, conds, 7.5)
    expected = u + 7.5 * (0.7 * (conds["a"] - u) - 0.2 * (conds["b"] - u))
    torch.testing.assert_close(out, expected)


def test_evaluate_nested_tree_spelled_out():
    u, conds = data("a", "b", "c", "d", "e")
    tree = prompt(
        leaf("a"),
        group([leaf("b"), leaf("c", Keyword.AND_PERP, -0.5)], Keyword.AND_SALT, 0.8),
        leaf("d", Keyword.AND_TOPK, 2.0, k=0.1),
        leaf("e", Keyword.AND_PERP, -1.0),
    )
    f = {x: conds[x] - u for x in conds}
    inner = f["b"] + (-0.5) * S.perpendicular(f["b"], f["c"])
    base = f["a"]
    aux = -1.0 * S.perpendicular(base, f["e"]) + 2.0 * S.topk(f["d"], 0.1) + S.salt(base, [inner], [0.8])
    torch.testing.assert_close(reference.evaluate(tree, u, conds, 5.0), u + 5.0 * (base + aux))
    assert not torch.equal(aux, torch.zeros_like(aux))


def test_evaluate_cfg_rescale_uses_u_plus_full_root():
    u, conds = data("a", "b")
    tree = prompt(leaf("a"), leaf("b", Keyword.AND_PERP, -1.0))
    delta = reference.evaluate(tree, u, conds, 1.0) - u
    out = reference.evaluate(tree, u, conds, 6.0, cfg_rescale=0.6)
    torch.testing.assert_close(out, S.cfg_rescale(u + 6.0 * delta, u + delta, 0.6))


def test_evaluate_leaves_inputs_untouched():
    u, conds = data("a", "b", "c")
    copies = u.clone(), {k: v.clone() for k, v in conds.items()}
    tree = prompt(leaf("a"), leaf("b", Keyword.AND_SALT), leaf("c", Keyword.AND_TOPK, momentum=0.1))
    reference.evaluate(tree, u, conds, 7.0, cfg_rescale=0.5, momentum={})
    assert torch.equal(u, copies[0]) and all(torch.equal(conds[k], copies[1][k]) for k in conds)


def test_evaluate_windows_integer_steps_and_fractions():
    u, conds = data("a", "b")
    tree = prompt(leaf("a"), leaf("b", end=3), leaf("b", Keyword.AND_PERP, -1.0, start=0.5))
    full_a, full_b = conds["a"] - u, conds["b"] - u
    for step in range(10):
        base = full_a + (full_b if step < 3 else 0)
        aux = -1.0 * S.perpendicular(base, full_b) if step >= 5 else 0  # int(0.5 * 10) = 5
        out = reference.evaluate(tree, u, conds, 3.0, step=step, num_steps=10)
        torch.testing.assert_close(out, u + 3.0 * (base + aux), msg=f"step {step}")


def test_evaluate_inactive_salt_part_does_not_compete():
    u, conds = data("a", "b", "c")
    with_window = prompt(leaf("a"), leaf("b", Keyword.AND_SALT, start=2), leaf("c", Keyword.AND_SALT, 0.5))
    without = prompt(leaf("a"), leaf("c", Keyword.AND_SALT, 0.5))
    both = prompt(leaf("a"), leaf("b", Keyword.AND_SALT), leaf("c", Keyword.AND_SALT, 0.5))
    early = reference.evaluate(with_window, u, conds, 4.0, step=1, num_steps=4)
    torch.testing.assert_close(early, reference.evaluate(without, u, conds, 4.0))
    late = reference.evaluate(with_window, u, conds, 4.0, step=2, num_steps=4)
    torch.testing.assert_close(late, reference.evaluate(both, u, conds, 4.0))
    assert not torch.allclose(early, late)


def test_evaluate_topk_momentum_updates_outside_the_window():
    u, conds = data("a", "b")
    tree = prompt(leaf("a"), leaf("b", Keyword.AND_TOPK, 1.5, k=0.2, momentum=0.3, beta=0.5, start=2))
    state: dict = {}
    m = torch.zeros_like(u)
    for step in range(5):
        # the predictions change per step, as they do in a run
        step_conds = {k: v * (1 + 0.1 * step) for k, v in conds.items()}
        full_b = step_conds["b"] - u
        e = 1.5 * S.topk(full_b, 0.2) + 0.3 * m
        m = 0.5 * m + 0.5 * e
        expected = u + 2.0 * ((step_conds["a"] - u) + (e if step >= 2 else 0))
        out = reference.evaluate(tree, u, step_conds, 2.0, step=step, num_steps=5, momentum=state)
        torch.testing.assert_close(out, expected, msg=f"step {step}")
        torch.testing.assert_close(state[(1,)], m)


def test_evaluate_momentum_state_is_keyed_by_the_part_path():
    u, conds = data("a", "b", "c")
    inner = group([leaf("b"), leaf("c", Keyword.AND_TOPK, momentum=0.2)], Keyword.AND_PERP, -1.0)
    tree = prompt(leaf("a"), inner, leaf("c", Keyword.AND_TOPK, 0.5, momentum=0.1, end=0))
    state: dict = {}
    reference.evaluate(tree, u, conds, 2.0, momentum=state)
    assert sorted(state) == [(1, 1), (2,)]
    full_c = conds["c"] - u
    # the root part is outside its window (end=0) but its momentum still moved: m = 0.6 * E
    torch.testing.assert_close(state[(2,)], 0.6 * 0.5 * S.topk(full_c))
    torch.testing.assert_close(state[(1, 1)], 0.6 * S.topk(full_c))


@PROPS
@given(shape=shapes, seed=seeds, k=st.sampled_from([0.05, 0.3, 0.9]), r=st.sampled_from([0.3, 1.0]))
def test_units_work_per_item_for_any_trailing_shape(shape, seed, k, r):
    a, b = rand(*shape, seed=seed), rand(*shape, seed=seed + 1, scale=2.0)
    a0, b0 = a.clone(), b.clone()
    units = {
        "topk": lambda x, y: S.topk(x, k),
        "topk_per_channel": lambda x, y: S.topk_per_channel(x, k),
        "cfg_rescale": lambda x, y: S.cfg_rescale(x, y, r),
        "salt": lambda x, y: S.salt(x, [y], [0.5]),
    }
    for name, unit in units.items():
        out = unit(a, b)
        assert out.shape == a.shape, name
        for i in range(shape[0]):
            torch.testing.assert_close(out[i : i + 1], unit(a[i : i + 1], b[i : i + 1]), rtol=1e-6, atol=1e-6, msg=name)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_evaluate_reproduces_diffusers_sega_for_one_concept():
    """``castle AND_TOPK(k=0.1, per_channel=1, start=10, momentum=0.1, beta=0.4) glasses :w``."""
    steps, scale, edit_scale, warmup = 15, 7.5, 5.0, 10
    tree = prompt(
        leaf("castle"),
        leaf("glasses", Keyword.AND_TOPK, edit_scale / scale, k=0.1, per_channel=1, start=warmup, momentum=0.1, beta=0.4),
    )
    state: dict = {}
    edit_momentum = None
    for i in range(steps):
        u, conds = data("castle", "glasses", seed=100 + 3 * i)
        # diffusers SemanticStableDiffusionPipeline, one concept, weights 1, no cooldown
        noise_guidance = scale * (conds["castle"] - u)
        if edit_momentum is None:
            edit_momentum = torch.zeros_like(noise_guidance)
        edit = _diffusers_threshold((conds["glasses"] - u) * edit_scale, 0.9)
        edit = edit + 0.1 * edit_momentum
        edit_momentum = 0.4 * edit_momentum + 0.6 * edit
        if i >= warmup:
            noise_guidance = noise_guidance + edit
        expected = u + noise_guidance
        out = reference.evaluate(tree, u, conds, scale, step=i, num_steps=steps, momentum=state)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5, msg=f"step {i}")


def test_evaluate_errors_name_the_problem():
    u, conds = data("a")
    with pytest.raises(KeyError, match="'missing'"):
        reference.evaluate(prompt(leaf("a"), leaf("missing")), u, conds, 1.0)
    with pytest.raises(ValueError, match="AND_PERP takes no option 'k'"):
        reference.evaluate(prompt(leaf("a"), leaf("a", Keyword.AND_PERP, k=0.1)), u, conds, 1.0)


# --- the original-style baseline agrees with the oracle ---------------------------------------------

BASELINE_TREES = {
    "single": prompt(leaf("a")),
    "perp": prompt(leaf("a"), leaf("b", Keyword.AND_PERP, -1.0)),
    "five_leaf_nested": prompt(
        leaf("a"),
        group([leaf("b"), leaf("c", Keyword.AND_PERP, -0.5)], Keyword.AND_SALT, 0.8),
        group([leaf("d"), leaf("e", Keyword.AND_SALT, 1.2)], Keyword.AND_PERP, -0.7),
    ),
    "everything": prompt(
        leaf("a", w=0.6),
        group([leaf("b", w=0.9), leaf("c", Keyword.AND_TOPK, 1.5)], w=0.4),
        leaf("d", Keyword.AND_TOPK, 2.0),
        leaf("e", Keyword.AND_SALT, 0.5),
        leaf("a", Keyword.AND_SALT, -0.3),
        group([leaf("c"), leaf("b", Keyword.AND_PERP, -1.0), leaf("e", Keyword.AND_SALT)], Keyword.AND_PERP, 0.8),
    ),
    "zero_base": prompt(leaf("a", w=0.0), leaf("b", Keyword.AND_PERP, -1.0), leaf("c", Keyword.AND_SALT)),
}


@pytest.mark.parametrize("name", sorted(BASELINE_TREES))
@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_baseline_agrees_with_reference(name, rescale):
    tree = BASELINE_TREES[name]
    u, conds = data("a", "b", "c", "d", "e", seed=20)
    expected = reference.evaluate(tree, u, conds, 7.0, cfg_rescale=rescale)
    got = baseline.combine(tree, u, conds, 7.0, cfg_rescale=rescale)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not math.isnan(float(got.sum()))
