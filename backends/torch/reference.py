"""The reference interpreter: docs/semantics.md as a plain recursive walk over the AST.

This is the oracle that the optimizing compiler is tested against, so it is written to be obviously
right rather than fast: every part of the tree is evaluated at every step, in source order, and the
strategy math comes from :mod:`strategies` so that the oracle checks the composition, not a second
copy of the formulas::

    full(leaf)  = eps(leaf.text) - u
    full(group) = base + aux(base)
    base        = sum over AND children c:   w_c * full(c)
    aux(d)      = sum over AND_PERP c:       w_c * perp(d, full(c))
                + sum over AND_TOPK c:       E_c                      (SEGA edit, see below)
                + salt(d, [(full(c), w_c) for AND_SALT c])
    guided      = u + s * full(root)                  then, if r > 0, cfg_rescale(guided, u + full(root), r)

with ``E_c = w_c * topk(full(c), k) + momentum * m_c`` and ``m_c = beta * m_c + (1 - beta) * E_c``.

Keyword options: a part acts at step ``i`` when ``start <= i < end``; outside its window it
contributes nothing (an AND part is absent from ``base``, an AND_SALT part does not compete).
Children are evaluated even outside their window, because a momentum state anywhere below them is
updated at every step.

The recursion follows the tree, so extremely deep prompts (beyond Python's recursion limit) raise
``RecursionError`` here; the compiler's flat plan has no such limit.
"""

from __future__ import annotations

import math
from typing import Mapping, MutableMapping

import torch

from neutral_lang.ast import Group, Keyword, Leaf, Part, Prompt
from neutral_lang.keywords import KEYWORDS, OPTION_DEFAULTS

from . import strategies

__all__ = ["evaluate", "window"]

Path = tuple[int, ...]

# The options each keyword takes, from the keyword table (docs/language.md, "Keyword options").
_OPTIONS = {Keyword[row.name]: {o.name for o in row.options} for row in KEYWORDS}


def _step_index(part: Part, name: str, num_steps: int, default: float) -> float:
    """A ``start``/``end`` option as a step index: ``0.2`` is a fraction of the steps, ``2`` a step."""
    for opt in part.options:
        if opt.name == name:
            return int(opt.value * num_steps) if opt.is_fraction else int(opt.value)
    return default


def window(part: Part, num_steps: int) -> tuple[float, float]:
    """The half-open range of steps ``[start, end)`` in which ``part`` acts."""
    return _step_index(part, "start", num_steps, 0), _step_index(part, "end", num_steps, math.inf)


class _Evaluator:
    def __init__(
        self,
        uncond: torch.Tensor,
        conds: Mapping[str, torch.Tensor],
        step: int,
        num_steps: int,
        momentum: MutableMapping[Path, torch.Tensor],
    ):
        self.uncond = uncond
        self.conds = conds
        self.step = step
        self.num_steps = num_steps
        self.momentum = momentum

    def acts(self, part: Part) -> bool:
        start, end = window(part, self.num_steps)
        return start <= self.step < end

    def full(self, body: Leaf | Group, path: Path) -> torch.Tensor:
        if isinstance(body, Leaf):
            return self.eps(body.text) - self.uncond
        return self.full_prompt(body.prompt, path)

    def eps(self, text: str) -> torch.Tensor:
        try:
            eps = self.conds[text]
        except KeyError:
            raise KeyError(f"No conditioning given for the prompt text {text!r}; conds has {sorted(self.conds)!r}.") from None
        if eps.shape != self.uncond.shape:
            raise ValueError(
                f"The conditioning for {text!r} has shape {tuple(eps.shape)}, "
                f"but uncond has shape {tuple(self.uncond.shape)}."
            )
        return eps

    def full_prompt(self, prompt: Prompt, path: Path) -> torch.Tensor:
        for part in prompt.parts:
            unknown = {opt.name for opt in part.options} - _OPTIONS[part.keyword]
            if unknown:
                raise ValueError(f"{part.keyword} takes no option {sorted(unknown)[0]!r}.")

        fulls = [self.full(part.body, path + (i,)) for i, part in enumerate(prompt.parts)]

        base = torch.zeros_like(self.uncond)
        for part, v in zip(prompt.parts, fulls):
            if part.keyword is Keyword.AND and self.acts(part):
                base = base + part.weight * v

        aux = torch.zeros_like(self.uncond)
        salient: list[torch.Tensor] = []
        salient_weights: list[float] = []
        for i, (part, v) in enumerate(zip(prompt.parts, fulls)):
            if part.keyword is Keyword.AND_PERP:
                if self.acts(part):
                    aux = aux + part.weight * strategies.perpendicular(base, v)
            elif part.keyword is Keyword.AND_TOPK:
                edit = self.topk_edit(part, v, path + (i,))
                if self.acts(part):
                    aux = aux + edit
            elif part.keyword is Keyword.AND_SALT:
                if self.acts(part):
                    salient.append(v)
                    salient_weights.append(part.weight)
        aux = aux + strategies.salt(base, salient, salient_weights)
        return base + aux

    def topk_edit(self, part: Part, v: torch.Tensor, path: Path) -> torch.Tensor:
        """``E = w * topk(v, k) + momentum * m``, updating ``m`` (kept under ``path``) every step."""
        k = part.option("k", OPTION_DEFAULTS["k"])
        keep = strategies.topk_per_channel if part.option("per_channel", OPTION_DEFAULTS["per_channel"]) else strategies.topk
        edit = part.weight * keep(v, k)
        momentum = part.option("momentum", OPTION_DEFAULTS["momentum"])
        if momentum == 0:
            return edit
        edit, self.momentum[path] = strategies.sega_momentum(
            edit, self.momentum.get(path), momentum, part.option("beta", OPTION_DEFAULTS["beta"])
        )
        return edit


def evaluate(
    prompt: Prompt | str,
    uncond: torch.Tensor,
    conds: Mapping[str, torch.Tensor],
    guidance_scale: float,
    *,
    step: int = 0,
    num_steps: int = 1,
    cfg_rescale: float = 0.0,
    momentum: MutableMapping[Path, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Guided noise prediction of ``prompt`` for one denoising step (docs/semantics.md).

    ``uncond`` is ``u``, shaped ``[B, C, H, W]``; ``conds`` maps each leaf text (``Leaf.text``,
    trimmed) to its prediction ``eps(text)`` of the same shape. ``step`` (0-based) and
    ``num_steps`` place the step for ``start``/``end`` windows. ``momentum`` holds the SEGA
    momentum states of AND_TOPK parts, keyed by the part's path of child indices from the root;
    pass the same dict at every step of a run (``None`` starts from zero and forgets it).
    """
    if isinstance(prompt, str):
        from neutral_lang import parse

        prompt = parse(prompt)
    state: MutableMapping[Path, torch.Tensor] = {} if momentum is None else momentum
    delta = _Evaluator(uncond, conds, step, num_steps, state).full_prompt(prompt, ())
    guided = uncond + guidance_scale * delta
    if cfg_rescale:
        guided = strategies.cfg_rescale(guided, uncond + delta, cfg_rescale)
    return guided
