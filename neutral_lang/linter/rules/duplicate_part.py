"""NP105 duplicate-part: ``a AND_PERP b AND_PERP b`` -- the same part twice among siblings.

Same keyword, same options, same trimmed text (or the same group). For ``AND``, ``AND_PERP`` and
``AND_TOPK`` the two add up (each is linear in its weight), so one part with the summed weight
says the same thing; for ``AND_SALT`` the copy never wins a pixel (the first wins ties), so it
contributes nothing.
"""

from __future__ import annotations

from ...ast import Group, Keyword, Leaf
from ...errors import line_col
from ...formatter import format_number
from ..registry import rule
from ..scan import prompts

RULE = rule("duplicate-part")


def _group_keys(root) -> dict[int, int]:
    """A structural id for every group (equal ids: equal groups), bottom-up, without recursion."""
    interned: dict[tuple, int] = {}
    keys: dict[int, int] = {}
    for _, prompt in reversed(list(prompts(root))):
        for part in prompt.parts:
            if isinstance(part.body, Group):
                inner = tuple(_part_key(p, keys) + (p.weight,) for p in part.body.prompt.parts)
                keys[id(part.body)] = interned.setdefault(inner, len(interned))
    return keys


def _part_key(part, keys) -> tuple:
    options = tuple(sorted((o.name, o.value, o.is_fraction) for o in part.options))
    body = ("leaf", part.body.text) if isinstance(part.body, Leaf) else ("group", keys[id(part.body)])
    return (part.keyword, options, body)


def check(ctx):
    if ctx.prompt is None:
        return
    keys = _group_keys(ctx.prompt)
    for _, prompt in prompts(ctx.prompt):
        first_seen: dict[tuple, object] = {}
        for part in prompt.parts:
            if isinstance(part.body, Leaf) and not part.body.text:
                continue  # empty parts are NP101-NP103
            key = _part_key(part, keys)
            original = first_seen.setdefault(key, part)
            if original is part:
                continue
            line, col = line_col(ctx.text, original.span.start)
            kw = part.keyword.value
            if part.keyword is Keyword.AND_SALT:
                why = "it never wins a pixel (the first copy wins every tie), so it contributes nothing"
                hint = "remove the copy"
            else:
                why = "the two add up"
                hint = f"write the part once, with weight {format_number(original.weight + part.weight)}"
            yield RULE.diagnostic(
                part.span,
                f"duplicate of the {kw} part at line {line}, column {col}: {why}",
                hint=hint,
            )
