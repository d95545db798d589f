"""NP106 deep-nesting (info): a group nested more than two levels deep.

The original extension's README notes that nesting deeper than two levels is rarely useful:
each level conciliates its parts with a smaller and smaller share of the guidance.
"""

from __future__ import annotations

from ...ast import Group, iter_parts
from ..registry import rule

RULE = rule("deep-nesting")
LIMIT = 2  # levels of groups the README considers useful


def check(ctx):
    if ctx.prompt is None:
        return
    for depth, part in iter_parts(ctx.prompt):
        # A group inside `depth` enclosing groups is at level depth + 1; report the outermost too-deep ones.
        if isinstance(part.body, Group) and depth == LIMIT:
            yield RULE.diagnostic(
                part.body.span,
                f"group nested {LIMIT + 1} levels deep: the original's README notes that more than {LIMIT} "
                "levels are rarely useful",
                hint="flatten it where you can: an AND-only group under AND or AND_PERP can be written "
                "inline in its parent (both are linear in the group's delta)",
            )
