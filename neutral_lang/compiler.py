"""``compile``: text -> AST -> IR -> passes -> plan, wrapped in a :class:`Program`.

    prog = compile("a castle AND_PERP monster :-1")
    prog.prompts                      # ('a castle', 'monster'): one model evaluation each per step
    eps = prog.guide(uncond, conds, 7.5, step=i, num_steps=n)
    print(prog.explain())

Compilation is pure and cached by its arguments (``functools.lru_cache``): compiling the same
prompt again returns the same :class:`Program` object in about a microsecond, so a runner can call
``compile`` at every step. Programs are immutable and hold no run state: momentum lives in the
:class:`~neutral_lang.backends.torch.executor.RunState` passed to :meth:`Program.guide`.

No torch at import: :meth:`Program.guide` loads the torch backend on first use, :meth:`Program.run`
the diffusers one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

from . import ast, ir
from .errors import ParseError
from .lower import LowerError, lower
from .parser import parse
from .passes import PASSES
from .plan import Plan, build

__all__ = ["compile", "Program"]

Pass = Callable[[ir.Module], ir.Module]


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled prompt (or list of prompts, one per block of batch items).

    ``texts`` are the source prompts; ``ast`` their trees; ``ir`` the optimised IR (one root per
    prompt; one root in all when every prompt is the same text); ``plan`` the guidance plan;
    ``cfg_rescale`` the CFG-rescale factor the plan applies; ``passes`` the passes that ran (a
    runner recompiling with another option passes them on).
    """

    texts: tuple[str, ...]
    ast: tuple[ast.Prompt, ...]
    ir: ir.Module
    plan: Plan
    cfg_rescale: float
    passes: tuple[Pass, ...]

    @property
    def prompts(self) -> tuple[str, ...]:
        """The unique conditioning texts, in plan order: ``conds[i]`` of :meth:`guide` is the
        model's prediction for ``prompts[i]``. Order of first appearance in the source; texts only
        in parts that contribute nothing are left out (no model evaluation for them)."""
        return self.plan.conds

    @property
    def diagnostics(self) -> tuple:
        """The linter's findings (:func:`neutral_lang.lint`, default rules) for each distinct text, in
        order; computed on first use and kept. Spans are offsets into the text they were found in."""
        found = self.__dict__.get("_diagnostics")
        if found is None:
            from .linter import lint

            found = tuple(d for text in dict.fromkeys(self.texts) for d in lint(text))
            object.__setattr__(self, "_diagnostics", found)
        return found

    def guide(
        self,
        uncond: Any,
        conds: Any,
        guidance_scale: float,
        *,
        step: int = 0,
        num_steps: int = 1,
        state: Any = None,
        trace: Any = None,
    ) -> Any:
        """The guided noise prediction ``u + s * full(root)`` (SPEC section 2) for one step.

        ``uncond`` is ``[B, C, H, W]``; ``conds`` is ``[P, B, C, H, W]`` (or a sequence of ``P``
        tensors ``[B, C, H, W]``) in :attr:`prompts` order. For a list of ``N`` prompts, ``B`` is a
        multiple of ``N`` and item ``b`` follows prompt ``b // (B // N)`` (diffusers'
        ``num_images_per_prompt`` order); a single prompt applies to every item. ``step`` is the
        0-based denoising step of ``num_steps``, for ``start``/``end`` windows. ``state`` (from
        :meth:`new_state`) carries TOPK momentum from step to step; without it each call starts from
        zero momentum, as if it were the first step. ``trace`` (a
        ``neutral_lang.backends.torch.executor.Trace``) records intermediates. Inputs are not
        modified; the result has ``uncond``'s dtype and device.
        """
        from neutral_lang.backends.torch.executor import execute

        if not 0 <= step or num_steps < 1:
            raise ValueError(f"Expected 0 <= step and num_steps >= 1, but got step={step}, num_steps={num_steps}.")
        n = len(self.texts)
        if n > 1 and getattr(uncond, "ndim", 0) >= 1 and uncond.shape[0] % n:
            raise ValueError(
                f"This program has {n} prompts, so the batch must be a multiple of {n} "
                f"(item b uses prompt b // (B // {n})); got a batch of {uncond.shape[0]}."
            )
        return execute(
            self.plan, uncond, conds, guidance_scale, step=step, num_steps=num_steps, state=state, trace=trace
        )

    def new_state(self) -> Any:
        """A fresh run state (zero momentum) for :meth:`guide`; one per run."""
        from neutral_lang.backends.torch.executor import RunState

        return RunState(self.plan.slots)

    def uses(self, item: int, batch_size: int | None = None) -> tuple[int, ...]:
        """Indices into :attr:`prompts` that batch item ``item`` needs: a runner may skip the others.

        With ``batch_size``, ``item`` is a batch item index (prompt ``item // (batch_size // N)``);
        without it, ``item`` is the prompt index (any item of a single prompt).
        """
        n = len(self.texts)
        if batch_size is None:
            prompt = 0 if n == 1 else item
        else:
            if batch_size % n:
                raise ValueError(f"A batch of {batch_size} items does not split over {n} prompts.")
            prompt = item // (batch_size // n)
        if not 0 <= prompt < n:
            raise IndexError(f"prompt index {prompt} out of range for {n} prompts")
        return self.plan.uses[0 if self.plan.blocks == 1 else prompt]

    def explain(self) -> str:
        """The source tree, the optimised IR, the plan, and the cost in model evaluations."""
        out = []
        for n, (text, tree) in enumerate(zip(self.texts, self.ast)):
            out.append(f"prompt {n}: {text!r}")
            for depth, part in ast.iter_parts(tree):
                out.append("  " * (depth + 1) + _describe_ast(part))
        names = ", ".join(p.__name__ for p in self.passes) or "none"
        out += ["", f"IR after passes ({names}):", _indent(ir.dump(self.ir)), "", "plan:", _indent(str(self.plan)), ""]
        leaves = sum(1 for tree in self.ast for _ in ast.leaves(tree))
        evals = len(self.prompts)
        out.append(
            f"cost: {1 + evals} model evaluations per step (uncond + {evals} conditionings; "
            f"the source has {leaves} leaves), {sum(type(s).__name__ != 'Lin' for s in self.plan.steps)} "
            f"strategy/output steps, {len(self.plan.steps)} steps in all"
        )
        if self.plan.blocks > 1:
            for j, uses in enumerate(self.plan.uses):
                out.append(f"  prompt {j} items need conditionings {list(uses)}")
        return "\n".join(out)

    def run(self, pipe: Any, **kwargs: Any) -> Any:
        """Run a diffusers pipeline with this program's guidance (``neutral_lang.backends.diffusers``)."""
        from neutral_lang.backends.diffusers import runner

        return runner.run(self, pipe, **kwargs)

    def __repr__(self) -> str:
        return f"Program({list(self.texts)!r}, prompts={list(self.prompts)!r})"


def compile(
    source: str | Sequence[str],
    *,
    cfg_rescale: float = 0.0,
    passes: Sequence[Pass] | None = None,
    strict: bool = False,
) -> Program:
    """Compile a prompt, or a list of prompts (one per batch item block), to a :class:`Program`.

    ``cfg_rescale`` in [0, 1] is the CFG-rescale factor (arXiv 2305.08891 section 3.4; 0: off).
    ``passes`` replaces :data:`neutral_lang.passes.PASSES` (``()`` runs none: the plan follows the
    source tree as written; for tests). ``strict`` is forwarded to :func:`~neutral_lang.parse`.
    Results are cached on all arguments; the same arguments return the same object.
    """
    key = source if isinstance(source, str) else tuple(source)
    if type(cfg_rescale) is not float:  # the cache compares with ==: True would hit the entry of 1.0
        if isinstance(cfg_rescale, bool) or not isinstance(cfg_rescale, int):
            raise ValueError(f"Expected cfg_rescale to be between 0.0 and 1.0, but got {cfg_rescale!r}.")
        cfg_rescale = float(cfg_rescale)
    return _compile(key, cfg_rescale, None if passes is None else tuple(passes), strict)


@lru_cache(maxsize=512)
def _compile(source: str | tuple[str, ...], cfg_rescale: float, passes: tuple[Pass, ...] | None, strict: bool) -> Program:
    texts = (source,) if isinstance(source, str) else source
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("compile() takes a prompt string or a non-empty list of prompt strings.")
    if not 0.0 <= cfg_rescale <= 1.0:
        raise ValueError(f"Expected cfg_rescale to be between 0.0 and 1.0, but got {cfg_rescale!r}.")
    passes = PASSES if passes is None else passes
    if not all(callable(p) for p in passes):
        raise TypeError("passes must be a sequence of functions ir.Module -> ir.Module.")
    # The same prompt for every item is parsed once and needs one block of steps for the batch.
    same = len(set(texts)) == 1
    trees = (parse(texts[0], strict=strict),) * len(texts) if same else tuple(parse(t, strict=strict) for t in texts)
    try:
        module = lower(trees[:1] if same else trees)
    except LowerError as error:
        text = texts[0 if same else error.prompt]
        raise ParseError(str(error), text, error.span.start, error.span.end) from None
    for p in passes:
        module = p(module)
    plan = build(module, texts=texts[:1] if same else texts, rescale=cfg_rescale)
    return Program(texts, trees, module, plan, cfg_rescale, tuple(passes))


def _describe_ast(part: ast.Part) -> str:
    words = [part.keyword.value]
    if part.options:
        words[0] += "(" + ", ".join(f"{o.name}={o.text}" for o in part.options) + ")"
    if part.weight != 1 or part.weight_span is not None:
        words.append(f":{ir.num(part.weight)}")
    if isinstance(part.body, ast.Leaf):
        words.append(repr(part.body.text))
    else:
        words.append("group")
    return " ".join(words)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


