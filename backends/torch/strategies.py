"""The conciliation strategies of Neutral Prompt as small units of tensor math (docs/semantics.md).

Every function takes batched tensors ``[B, ...]`` (usually ``[B, C, H, W]``; any trailing shape) and
works per batch item: sums, norms, thresholds and saliency maps reduce over all non-batch dims of one
item at a time, never across items. Inputs are never modified and every result is a fresh tensor,
except that ``cfg_rescale`` with ``r == 0`` returns ``guided`` itself.

Reductions run in float32 or better whatever the input dtype (float64 for the projection's inner
products), and results are cast back to the input dtype.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "perpendicular",
    "topk",
    "topk_per_channel",
    "salt",
    "salt_winners",
    "log_saliency",
    "cfg_rescale",
    "sega_momentum",
]

_HALF = (torch.float16, torch.bfloat16)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected {name} to be between 0.0 and 1.0, but got {value}.")


def _check_float(name: str, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"Expected {name} to be a floating point tensor, but got {x.dtype}.")
    if x.ndim < 1:
        raise ValueError(f"Expected {name} to have a batch dimension, but got a 0-d tensor.")


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"Expected {a_name} and {b_name} to have the same shape, but got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def _per_item(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a ``[B]`` tensor as ``[B, 1, ..., 1]`` so it broadcasts against ``like``."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Half and bfloat16 are reduced in float32; float32 and float64 in themselves."""
    return torch.float32 if x.dtype in _HALF else x.dtype


_SAME_SIZE_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def perpendicular(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Component of ``v`` perpendicular to ``d``: the AND_PERP strategy.

    Perp-Neg, https://arxiv.org/abs/2304.04968::

        perp(d, v) = v - d * <d, v> / <d, d>        (inner products over the whole batch item)

    An item whose ``d`` is all zeros has no direction to project out: ``v`` comes back unchanged.
    Computed in float32 (float64 for float64 inputs). ``d`` is first divided by its largest
    magnitude ``m``, and ``<d,v>/<d,d> = <d/m, v> / (m <d/m, d/m>)``: the squares then cannot
    underflow to a false zero for tiny ``d``, nor overflow for huge ones, without paying for
    float64 copies of both tensors.
    """
    _check_float("d", d)
    _check_float("v", v)
    _check_same_shape("d", d, "v", v)
    batch = d.shape[0]
    work = _stats_dtype(v)
    d_flat = d.reshape(batch, -1).to(work)
    v_flat = v.reshape(batch, -1).to(work)
    scale = d_flat.abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    unit = d_flat / scale
    dd = torch.linalg.vecdot(unit, unit)
    dv = torch.linalg.vecdot(unit, v_flat)
    coef = torch.where(dd > 0, dv / (dd * scale.squeeze(1)), torch.zeros_like(dd))
    out = torch.addcmul(v.to(work), d.to(work), _per_item(coef, v), value=-1)
    return out.to(v.dtype)


def topk(v: torch.Tensor, k: float = 0.05) -> torch.Tensor:
    """Keep the largest-magnitude fraction ``k`` of each batch item: the AND_TOPK strategy.

    Semantic guidance, SEGA, https://arxiv.org/abs/2301.12247 (the original extension's threshold)::

        topk(v, k) = v * [|v| >= t],   t = the floor((1 - k) * numel)-th smallest |v| of the item

    ``floor`` is Python's ``int((1 - k) * numel)`` on floats, as the original computed it. Ties with
    ``t`` are kept, so more than ``k * numel`` elements may survive. When the index is below 1 (``k``
    close to 1, or tiny items) nothing is filtered.
    """
    _check_fraction("k", k)
    _check_float("v", v)
    batch = v.shape[0]
    numel = v[0].numel() if batch else 0
    index = int((1 - k) * numel)
    if index < 1:
        return v.clone()
    magnitude = v.abs().reshape(batch, -1)
    # Non-negative floats order like their bit patterns read as signed integers, and selecting
    # on integers is exact and faster; ties stay ties.
    as_int = _SAME_SIZE_INT.get(magnitude.dtype)
    if as_int is not None:
        magnitude = magnitude.view(as_int)
    # The index-th smallest is the (numel - index + 1)-th largest: for small k, a partial top-k
    # selection is about twice as fast as kthvalue's quickselect over the whole item.
    largest = numel - index + 1
    if largest <= index:
        threshold = torch.topk(magnitude, largest, dim=1, sorted=False).values.amin(dim=1)
    else:
        threshold = torch.kthvalue(magnitude, index, dim=1).values
    keep = magnitude >= threshold.unsqueeze(1)
    return torch.where(keep.reshape(v.shape), v, torch.zeros((), dtype=v.dtype, device=v.device))


def _quantile_linear(x: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(x, q, dim=-1)`` with linear interpolation, bit for bit, without its size limit.

    torch.quantile refuses inputs of more than 2**24 elements. It sorts each row, takes the rank
    ``q * (n - 1)`` computed in the input dtype, and lerps between the two neighbouring order
    statistics; two ``kthvalue`` selections give the same two values without a full sort.
    """
    n = x.shape[-1]
    rank = torch.tensor(q, dtype=x.dtype) * (n - 1)
    below = int(rank)
    above = int(torch.ceil(rank))
    lower = torch.kthvalue(x, below + 1, dim=-1).values
    if above == below:
        return lower
    upper = torch.kthvalue(x, above + 1, dim=-1).values
    weight = (rank - below).to(x.device)
    return torch.lerp(lower, upper, weight)


def topk_per_channel(v: torch.Tensor, k: float = 0.05) -> torch.Tensor:
    """SEGA's threshold: keep ``|v| >= quantile(|v|, 1 - k)`` per batch item and channel.

    Semantic guidance, SEGA, https://arxiv.org/abs/2301.12247, as diffusers'
    ``SemanticStableDiffusionPipeline`` computes it for ``edit_threshold = 1 - k``::

        t[b, c] = torch.quantile(|v[b, c]|.flatten(), q = 1 - k)      (linear interpolation)
        out     = v * [|v| >= t]

    As there, the quantile of half and bfloat16 inputs is taken in float32 and cast back before the
    comparison (diffusers also takes float64 through float32; here float64 stays float64). Inputs of
    any size work (torch.quantile itself stops at 2**24 elements).
    """
    _check_fraction("k", k)
    _check_float("v", v)
    if v.ndim < 2:
        raise ValueError(f"Expected v to have a channel dimension [B, C, ...], but got shape {tuple(v.shape)}.")
    magnitude = v.abs()
    rows = magnitude.reshape(v.shape[0], v.shape[1], -1)
    if rows.shape[-1] == 0:
        return v.clone()
    threshold = _quantile_linear(rows.to(_stats_dtype(v)), 1 - k).to(v.dtype)
    keep = rows >= threshold.unsqueeze(-1)
    return torch.where(keep.reshape(v.shape), v, torch.zeros((), dtype=v.dtype, device=v.device))


def log_saliency(x: torch.Tensor) -> torch.Tensor:
    """``log softmax(|x|)`` over each flattened batch item, in float32 or better.

    The log domain keeps the saliency comparison exact where ``softmax`` itself underflows to 0
    (large magnitudes) and gives fp16/bf16 inputs the same result as their values in float32.
    """
    batch = x.shape[0]
    magnitude = x.abs().to(_stats_dtype(x))
    lse = torch.logsumexp(magnitude.reshape(batch, -1), dim=1)
    return magnitude.sub_(_per_item(lse, magnitude))


def _salt_scan(d: torch.Tensor, vs: Sequence[torch.Tensor], ws: Sequence[float] | None):
    """One pass over the children: running best saliency, winner index and selected delta.

    The winner changes only on a strictly greater saliency, so the first of equal maxima wins, as
    ``argmax`` does.
    """
    best = log_saliency(d)
    winners = torch.zeros(d.shape, dtype=torch.long, device=d.device) if ws is None else None
    out = torch.zeros_like(d) if ws is not None else None
    for i, v in enumerate(vs, start=1):
        _check_float(f"vs[{i - 1}]", v)
        _check_same_shape("d", d, f"vs[{i - 1}]", v)
        saliency = log_saliency(v)
        better = saliency > best
        torch.maximum(best, saliency, out=best)
        if winners is not None:
            winners.masked_fill_(better, i)
        else:
            out = torch.where(better, ws[i - 1] * (v - d), out)
    return winners, out


def salt_winners(d: torch.Tensor, vs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The winner map of :func:`salt`: 0 where ``d`` is most salient, ``i`` where ``vs[i - 1]`` is.

    ``argmax(S(d), S(v_1), ..., S(v_n))`` element-wise, first wins ties; an int64 tensor shaped
    like ``d``. For tracing and tests.
    """
    _check_float("d", d)
    return _salt_scan(d, vs, None)[0]


def salt(d: torch.Tensor, vs: Sequence[torch.Tensor], ws: Sequence[float]) -> torch.Tensor:
    """Saliency-aware blending of ``vs`` into ``d``: the AND_SALT strategy.

    MagicFusion, https://arxiv.org/abs/2303.13126::

        S(x)       = softmax(|x|)                    over the whole flattened batch item
        winner     = argmax(S(d), S(v_1), ..., S(v_n))  element-wise, first wins ties
        salt(d, .) = sum_i w_i * [winner == i] * (v_i - d)

    Saliencies are compared in the log domain (:func:`log_saliency`). With no ``vs`` the result is
    zero. A single child needs no winner map: it wins where it is strictly more salient than ``d``.
    """
    _check_float("d", d)
    if len(vs) != len(ws):
        raise ValueError(f"Expected one weight per vector, but got {len(vs)} vectors and {len(ws)} weights.")
    if not vs:
        return torch.zeros_like(d)
    if len(vs) == 1:
        (v,), (w,) = vs, ws
        _check_float("vs[0]", v)
        _check_same_shape("d", d, "vs[0]", v)
        better = log_saliency(v) > log_saliency(d)
        return torch.where(better, w * (v - d), torch.zeros((), dtype=d.dtype, device=d.device))
    return _salt_scan(d, vs, ws)[1]


def cfg_rescale(guided: torch.Tensor, cond: torch.Tensor, r: float) -> torch.Tensor:
    """Rescale classifier-free guidance towards the statistics of ``cond``.

    Common Diffusion Noise Schedules and Sample Steps are Flawed, https://arxiv.org/abs/2305.08891
    section 3.4, in the original extension's form (per batch item, ``std`` unbiased as torch.std)::

        mean  = (1 - r) * mean(g) + r * mean(c)
        scale = r * (std(c) / std(g) - 1) + 1
        out   = mean + (g - mean(g)) * scale

    with ``g = guided`` and ``c = cond = u + full(root)``. ``r == 0`` returns ``guided`` itself. An
    item whose ``g`` is constant (``std(g) == 0``) keeps ``scale = 1`` instead of dividing by zero.
    """
    _check_fraction("r", r)
    _check_float("guided", guided)
    _check_float("cond", cond)
    _check_same_shape("guided", guided, "cond", cond)
    if r == 0:
        return guided
    work = _stats_dtype(guided)
    g = guided.to(work)
    c = cond.to(work)
    dims = tuple(range(1, g.ndim))
    std_g, mean_g = torch.std_mean(g, dim=dims, keepdim=True)
    std_c, mean_c = torch.std_mean(c, dim=dims, keepdim=True)
    mean = (1 - r) * mean_g + r * mean_c
    scale = torch.where(std_g > 0, r * (std_c / std_g - 1) + 1, torch.ones_like(std_g))
    return (mean + (g - mean_g) * scale).to(guided.dtype)


def sega_momentum(
    edit: torch.Tensor, state: torch.Tensor | None, momentum: float, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of SEGA's guidance momentum; returns ``(E, new_state)``.

    Semantic guidance, SEGA, https://arxiv.org/abs/2301.12247 (diffusers' ``edit_momentum``)::

        E = edit + momentum * m          edit = w * topk(v)
        m = beta * m + (1 - beta) * E

    ``state`` is ``m`` from the previous step, ``None`` at the first (zeros). The caller keeps it
    between steps and calls this at every step, also outside the part's window: the window decides
    only whether ``E`` is applied.
    """
    _check_fraction("beta", beta)
    _check_float("edit", edit)
    if state is None:
        state = torch.zeros_like(edit)
    else:
        _check_same_shape("edit", edit, "state", state)
    e = edit + momentum * state
    return e, beta * state + (1 - beta) * e
