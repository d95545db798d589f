"""Drop conditioning table entries that no part uses any more, keeping the others' order.

Invariant: every ``Cond`` still denotes the same text, and the table holds only texts some part
uses, in their previous relative order (for the compiler's pipeline: order of first appearance in
the source). Earlier passes can leave unused entries behind (``prune_dead_parts`` after
``merge_conditionings`` drops the parts of a text whose weights summed to zero); each entry is a
model evaluation per step, and the plan numbers conditionings as the table does.
"""

from __future__ import annotations

from .. import ir

__all__ = ["drop_unused_conditionings"]


def drop_unused_conditionings(module: ir.Module) -> ir.Module:
    """``module`` whose table holds only the entries some part uses, renumbered in table order."""
    used = sorted({part.body.id for root in module.roots for _, part in ir.walk(root) if type(part.body) is ir.Cond})
    if used == list(range(len(module.conds))):
        return module
    cond = {old: ir.Cond(new) for new, old in enumerate(used)}

    def renumber(group: ir.Group) -> ir.Group:
        if not any(type(p.body) is ir.Cond and cond[p.body.id] != p.body for p in group.parts):
            return group
        parts = tuple(
            ir.Part(p.op, p.weight, cond[p.body.id], p.span, p.window, p.options) if type(p.body) is ir.Cond else p
            for p in group.parts
        )
        return ir.Group(parts, group.span)

    return ir.Module(tuple(ir.rewrite(root, renumber) for root in module.roots), tuple(module.conds[i] for i in used))
