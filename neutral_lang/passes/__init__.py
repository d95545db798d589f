"""Optimizer passes over the IR: one module per pass, one same-named pure function ``Module -> Module``.

Each pass states in its docstring the invariant it preserves; the test suite checks every pass by
executing the plan before and after it on random tensors (``tests/test_ir_passes.py``). Passes
never mutate: they return new trees that share unchanged subtrees, or the module itself.

:data:`PASSES` is the order the compiler runs them in:

1. ``prune_dead_parts``: drop parts that contribute nothing (zero weights, empty windows);
2. ``flatten_and_groups``: splice AND-only groups into their parent, folding their weights;
3. ``merge_conditionings``: one table entry per unique text, unused entries dropped;
4. ``combine_leaves``: one part per (operator, conditioning, window) among siblings;
5. ``prune_dead_parts`` again: combined weights that sum to zero, and groups emptied by that;
6. ``drop_unused_conditionings``: the last prune may leave table entries no part uses, and the
   plan numbers conditionings as the table does, so this final renumbering keeps every entry one
   model evaluation that some step needs (the others keep their order of first appearance).
"""

from __future__ import annotations

from .combine_leaves import combine_leaves
from .drop_unused_conditionings import drop_unused_conditionings
from .flatten_and_groups import flatten_and_groups
from .merge_conditionings import merge_conditionings
from .prune_dead_parts import prune_dead_parts

__all__ = [
    "PASSES", "combine_leaves", "drop_unused_conditionings", "flatten_and_groups", "merge_conditionings",
    "prune_dead_parts",
]

PASSES = (
    prune_dead_parts, flatten_and_groups, merge_conditionings, combine_leaves, prune_dead_parts,
    drop_unused_conditionings,
)
