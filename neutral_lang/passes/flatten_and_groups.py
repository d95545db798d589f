"""Fold nested weights: splice AND-only groups into their parent.

Invariant: ``full`` of every group is unchanged (up to float rounding of the folded weights).

A part ``AND [c_1 AND ... AND c_n] :w`` with no window, whose group holds AND parts only, means
``w * sum_j w_j * full(c_j)``: its group has no auxiliary parts, so ``full(group) = base``. That
sum is already a sum of AND terms, so the parent's base is the same with the children in the
group's place, each with weight ``w * w_j`` (children keep their own windows and bodies). The
walk is bottom-up, so a chain of such groups collapses in one pass.

Not flattened: a group under PERP/SALT/TOPK (the operator needs ``full(group)`` as one value);
a group part with a window (its window would have to be intersected with each child's, which
mixes step indices and fractions); a group with any non-AND part (its aux depends on its own base).
"""

from __future__ import annotations

from .. import ir
from ..ir import AND

__all__ = ["flatten_and_groups"]


def flatten_and_groups(module: ir.Module) -> ir.Module:
    """``module`` with every AND-only, window-less AND group spliced into its parent."""
    roots = tuple(_flatten(root) for root in module.roots)
    if all(new is old for new, old in zip(roots, module.roots)):
        return module
    return ir.Module(roots, module.conds)


def _splices(part: ir.Part) -> bool:
    return (
        type(part.body) is ir.Group
        and part.op is AND
        and part.window.always
        and all(child.op is AND for child in part.body.parts)
    )


def _flatten(root: ir.Group) -> ir.Group:
    # Top-down rather than with ir.rewrite: a chain of n nested AND groups then costs O(n), where
    # splicing each level into the next (bottom-up) would copy O(n^2) parts. Whether a part splices
    # does not change with flattening (spliced-in parts are AND parts), so it is decided up front.
    kept = [root]  # groups that stay groups, pre-order
    expanded: dict[int, list[tuple[float, ir.Part]]] = {}  # id(group) -> (folded weight, part)
    for group in kept:
        parts: list[tuple[float, ir.Part]] = []
        stack = [(1.0, p) for p in reversed(group.parts)]
        while stack:
            w, part = stack.pop()
            if _splices(part):
                w *= part.weight
                stack.extend((w, child) for child in reversed(part.body.parts))
                continue
            parts.append((w, part))
            if type(part.body) is ir.Group:
                kept.append(part.body)
        expanded[id(group)] = parts
    done: dict[int, ir.Group] = {}
    for group in reversed(kept):  # children before parents
        parts = expanded[id(group)]
        changed = len(parts) != len(group.parts)
        rebuilt = []
        for w, part in parts:
            body = done[id(part.body)] if type(part.body) is ir.Group else part.body
            if w != 1.0 or body is not part.body:
                part = ir.Part(part.op, w * part.weight, body, part.span, part.window, part.options)
                changed = True
            rebuilt.append(part)
        done[id(group)] = ir.Group(tuple(rebuilt), group.span) if changed else group
    return done[id(root)]
