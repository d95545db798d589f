"""Merge identical conditionings: one table entry, so one model evaluation, per unique text.

Invariant: every ``Cond`` still denotes the same text (so ``eps`` is the same tensor); afterwards
the table holds each text once, only texts some part uses, in order of first use (roots in order,
parts pre-order). Identical leaf texts denote the same conditioning (docs/semantics.md).
"""

from __future__ import annotations

from .. import ir

__all__ = ["merge_conditionings"]


def merge_conditionings(module: ir.Module) -> ir.Module:
    """``module`` with a deduplicated, compacted conditioning table in first-use order."""
    texts: dict[str, int] = {}
    remap: dict[int, int] = {}
    for root in module.roots:
        for _, part in ir.walk(root):
            if isinstance(part.body, ir.Cond) and part.body.id not in remap:
                remap[part.body.id] = texts.setdefault(module.conds[part.body.id], len(texts))
    table = tuple(texts)
    if table == module.conds and all(old == new for old, new in remap.items()):
        return module
    cond = {old: ir.Cond(new) for old, new in remap.items()}

    def renumber(group: ir.Group) -> ir.Group:
        if not any(isinstance(p.body, ir.Cond) and cond[p.body.id] != p.body for p in group.parts):
            return group
        parts = tuple(
            ir.Part(p.op, p.weight, cond[p.body.id], p.span, p.window, p.options) if isinstance(p.body, ir.Cond) else p
            for p in group.parts
        )
        return ir.Group(parts, group.span)

    return ir.Module(tuple(ir.rewrite(root, renumber) for root in module.roots), table)
