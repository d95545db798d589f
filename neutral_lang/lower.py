"""AST -> IR: resolve keywords, options and windows; give every leaf a conditioning id.

Lowering is a plain translation, no optimisation (that is :mod:`neutral_lang.passes`):

- each ``ast.Part`` becomes an ``ir.Part`` with the same weight and span; ``AND_PERP`` ->
  ``PERP`` and so on;
- ``start``/``end`` options become an ``ir.Window`` whose bounds keep their kind (``0.2`` is a
  fraction of the steps, ``2`` a step index); a start at 0 is the same as none;
- the ``AND_TOPK`` options ``k``, ``per_channel``, ``momentum``, ``beta`` become ``ir.Options``;
- each leaf gets its own entry in the conditioning table, holding its trimmed text, in source
  order across all prompts (duplicates are merged later by ``merge_conditionings``).

Explicit stacks throughout: prompts nest 10^4 deep. No torch.
"""

from __future__ import annotations

from typing import Sequence

from . import ast, ir
from .keywords import OPTION_DEFAULTS, spec

__all__ = ["lower", "LowerError"]

_OPS = {
    ast.Keyword.AND: ir.Op.AND,
    ast.Keyword.AND_PERP: ir.Op.PERP,
    ast.Keyword.AND_SALT: ir.Op.SALT,
    ast.Keyword.AND_TOPK: ir.Op.TOPK,
}
_TOPK_OPTIONS = frozenset(o.name for o in spec(ast.Keyword.AND_TOPK).options if not o.window)


class LowerError(ValueError):
    """An AST the IR cannot express (an option its keyword does not take). Carries the ``span``
    and the index of the ``prompt`` it is in; the compiler turns it into a ``ParseError``."""

    def __init__(self, message: str, span: ast.Span, prompt: int):
        super().__init__(message)
        self.span = span
        self.prompt = prompt


def lower(prompts: Sequence[ast.Prompt]) -> ir.Module:
    """One ``ir.Module`` for ``prompts`` (one root each), sharing one conditioning table."""
    conds: list[str] = []
    roots = tuple(_lower_prompt(prompt, n, conds) for n, prompt in enumerate(prompts))
    return ir.Module(roots, tuple(conds))


def _lower_prompt(prompt: ast.Prompt, index: int, conds: list[str]) -> ir.Group:
    # Frame: [ast prompt, lowered parts so far]; a group part waits on top of its parent's frame
    # until its body is done, then becomes an ir.Part.
    frames: list[tuple[ast.Prompt, list[ir.Part]]] = [(prompt, [])]
    done: ir.Group | None = None
    while True:
        src, parts = frames[-1]
        if done is not None:
            parts.append(_part(src.parts[len(parts)], done, index))
            done = None
        while len(parts) < len(src.parts):
            part = src.parts[len(parts)]
            if isinstance(part.body, ast.Group):
                break
            conds.append(part.body.text.strip())
            parts.append(_part(part, ir.Cond(len(conds) - 1), index))
        if len(parts) < len(src.parts):
            frames.append((src.parts[len(parts)].body.prompt, []))
            continue
        frames.pop()
        done = ir.Group(tuple(parts), src.span)
        if not frames:
            return done


def _part(part: ast.Part, body: ir.Body, prompt: int) -> ir.Part:
    op = _OPS[part.keyword]
    if not part.options:
        return ir.Part(op, float(part.weight), body, part.span)
    start = end = None
    topk: dict[str, float] = {}
    for opt in part.options:
        if opt.name in ("start", "end"):
            bound = ir.Bound(opt.value, opt.is_fraction)
            if opt.name == "end":
                end = bound
            elif opt.value != 0:
                start = bound
        elif opt.name in _TOPK_OPTIONS and op is ir.TOPK:
            topk[opt.name] = opt.value
        else:
            raise LowerError(f"{part.keyword} takes no option {opt.name!r}", opt.span, prompt)
    options = ir.DEFAULT_OPTIONS
    if topk:
        options = ir.Options(
            k=topk.get("k", OPTION_DEFAULTS["k"]),
            per_channel=bool(topk.get("per_channel", OPTION_DEFAULTS["per_channel"])),
            momentum=topk.get("momentum", OPTION_DEFAULTS["momentum"]),
            beta=topk.get("beta", OPTION_DEFAULTS["beta"]),
        )
    window = ir.ALWAYS if start is None and end is None else ir.Window(start, end)
    return ir.Part(op, float(part.weight), body, part.span, window, options)
