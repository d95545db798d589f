"""Combine sibling leaves on the same conditioning into one weighted leaf.

Invariant: ``full`` of every group is unchanged (up to float rounding of the summed weights).
Run it after ``merge_conditionings``, which gives equal texts equal ids.

Within one group, for parts with the same conditioning body and the same window:

- AND parts add ``w_1 full + w_2 full = (w_1 + w_2) full``: one part, the weights summed;
- PERP parts likewise: ``perp(d, v)`` is the same vector for both;
- TOPK parts with the same options likewise: ``topk(v)`` is the same; with momentum too, since the
  SEGA recurrence is linear (the sum of two states follows the recurrence of the summed weight);
- a later AND_SALT part is dropped: its saliency map equals the earlier one's exactly, and the first
  of equal maxima wins, so it never wins an element.

The combined part stands where the first of them stood and keeps its span. A sum of exactly zero
is left for ``prune_dead_parts``.
"""

from __future__ import annotations

from .. import ir
from ..ir import ALWAYS, DEFAULT_OPTIONS, SALT

__all__ = ["combine_leaves"]


def combine_leaves(module: ir.Module) -> ir.Module:
    """``module`` with at most one part per (operator, conditioning, window, options) in a group."""
    return module.rewrite(_combine)


def _combine(group: ir.Group) -> ir.Group:
    first: dict[tuple, int] = {}
    parts: list[ir.Part] = []
    changed = False
    for part in group.parts:
        if type(part.body) is not ir.Cond:
            parts.append(part)
            continue
        if part.window is ALWAYS and part.options is DEFAULT_OPTIONS:
            key = (part.op, part.body.id)
        else:
            key = (part.op, part.body.id, part.window, part.options)
        at = first.get(key)
        if at is None:
            first[key] = len(parts)
            parts.append(part)
            continue
        changed = True
        if part.op is not SALT:
            kept = parts[at]
            parts[at] = ir.Part(kept.op, kept.weight + part.weight, kept.body, kept.span, kept.window, kept.options)
    return ir.Group(tuple(parts), group.span) if changed else group
