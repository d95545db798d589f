"""Drop parts that provably contribute nothing.

Invariant: for every step, every ``num_steps`` and all finite inputs, ``full`` of every group is
unchanged, and so is the state of every momentum part that can still act.

A part is dropped when

- its window is empty for every ``num_steps`` (``ir.Window.is_empty``): it never acts. This holds
  for AND_SALT parts too (outside its window a part does not compete), and for TOPK parts with
  momentum: their state is their own and only ever shows through an applied ``E``;
- it is an AND, PERP or TOPK part of weight 0: ``0 * full``, ``0 * perp(d, v)`` and ``0 * topk(v)``
  vanish; with momentum, ``E = 0 * topk + momentum * m`` and ``m`` stays at its starting zero;
- it is an AND, PERP or TOPK part whose body is an empty group (zero): ``perp(d, 0) = 0`` and
  ``topk(0) = 0`` (and, as above, momentum of a zero edit stays zero);
- it is an AND_SALT part and every AND_SALT sibling has weight 0: the blend
  ``sum_i w_i [winner == i] (v_i - d)`` is then zero, whoever wins.

A zero-weight AND_SALT part with a non-zero sibling stays: it still competes for elements and
can take them away from the others. An AND_SALT part with an empty body stays too: ``S(0)`` is
uniform and still competes. Groups emptied here mean zero; their parent drops them in the same
bottom-up walk.
"""

from __future__ import annotations

from .. import ir
from ..ir import ALWAYS, SALT

__all__ = ["prune_dead_parts"]


def prune_dead_parts(module: ir.Module) -> ir.Module:
    """``module`` without the parts that contribute nothing (see the module docstring)."""
    return module.rewrite(_prune)


def _prune(group: ir.Group) -> ir.Group:
    parts = group.parts
    keep = []
    salt = salt_weight = False  # any AND_SALT part left; any with a non-zero weight
    for p in parts:
        if p.window is not ALWAYS and p.window.is_empty():
            continue
        if p.op is SALT:
            salt = True
            salt_weight = salt_weight or p.weight != 0
        elif p.weight == 0 or (type(p.body) is ir.Group and not p.body.parts):
            continue
        keep.append(p)
    if salt and not salt_weight:
        keep = [p for p in keep if p.op is not SALT]
    if len(keep) == len(parts):
        return group
    return ir.Group(tuple(keep), group.span)
