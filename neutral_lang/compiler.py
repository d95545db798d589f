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
import gc
from collections import OrderedDict
from contextlib import contextmanager
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
    ``passes`` the passes that ran. Run-time settings (guidance scale, CFG rescale) are arguments
    of :meth:`guide` and :meth:`run`, not part of the program.
    """

    texts: tuple[str, ...]
    ast: tuple[ast.Prompt, ...]
    ir: ir.Module
    plan: Plan
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
        cfg_rescale: float = 0.0,
        step: int = 0,
        num_steps: int = 1,
        state: Any = None,
        trace: Any = None,
        nonfinite: str = "warn",
    ) -> Any:
        """The guided noise prediction ``u + s * full(root)`` (docs/semantics.md) for one step.

        ``uncond`` is ``[B, C, H, W]``; ``conds`` is ``[P, B, C, H, W]`` (or a sequence of ``P``
        tensors ``[B, C, H, W]``) in :attr:`prompts` order. For a list of ``N`` prompts, ``B`` is a
        multiple of ``N`` and item ``b`` follows prompt ``b // (B // N)`` (diffusers'
        ``num_images_per_prompt`` order); a single prompt applies to every item.
        ``guidance_scale`` is ``s``; ``cfg_rescale`` ``r`` in [0, 1] rescales the result against
        ``u + full(root)`` (arXiv 2305.08891 section 3.4; 0: off); both are finite real numbers
        (numpy scalars too) given per call. ``step`` is the 0-based denoising step of
        ``num_steps``, for ``start``/``end`` windows. ``state`` (from :meth:`new_state`) carries
        TOPK momentum from step to step; without it each call starts from zero momentum, as if it
        were the first step. ``trace`` (a ``neutral_lang.backends.torch.executor.Trace``) records
        intermediates. ``nonfinite`` is ``"warn"`` (default) or ``"raise"``: what a NaN or inf in a
        prediction causes (it is always reported, with the conditioning and step). Inputs are not
        modified; the result has ``uncond``'s dtype and device.

        Raises ``TypeError``/``ValueError`` for bad arguments before any work, and
        ``GuidanceError`` naming the step and prompt span when finite inputs overflow the dtype.
        """
        from neutral_lang.backends.torch.executor import execute

        return execute(
            self.plan, uncond, conds, guidance_scale, cfg_rescale=cfg_rescale, step=step, num_steps=num_steps,
            state=state, trace=trace, nonfinite=nonfinite,
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
        """The source tree, the optimised IR, the plan, and the cost in model evaluations.

        Linear in the size of the prompt at any depth: nesting is indented two spaces a level up
        to ``ir.MAX_INDENT`` levels; deeper lines keep that indentation and say their depth
        (``[depth 40] AND 'a'``), and each plan step quotes at most 40 characters of its source.
        """
        with _no_cyclic_gc():  # see compile(): full collections would re-walk the trees per line
            return self._explain()

    def _explain(self) -> str:
        out = []
        for n, (text, tree) in enumerate(zip(self.texts, self.ast)):
            out.append(f"prompt {n}: {text!r}")
            for depth, part in ast.iter_parts(tree):
                out.append(ir.indent(depth + 1) + _describe_ast(part))
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

    # A program is a pure function of its texts and passes (compiling is deterministic), so those
    # are its value: equality, hashing and pickling use them and never walk the trees, which nest
    # 10^4 deep and more. Unpickling compiles again (through the cache). Programs are immutable, so a
    # copy is the program itself.

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        return self is other or (self.texts == other.texts and self.passes == other.passes)

    def __hash__(self) -> int:
        return hash((self.texts, self.passes))

    def __reduce__(self):
        return _recompile, (self.texts, self.passes)

    def __copy__(self) -> "Program":
        return self

    def __deepcopy__(self, memo) -> "Program":
        return self


def compile(
    source: str | Sequence[str],
    *,
    passes: Sequence[Pass] | None = None,
    strict: bool = False,
    **removed: Any,
) -> Program:
    """Compile a prompt, or a list of prompts (one per batch item block), to a :class:`Program`.

    ``source`` is a ``str`` or a non-empty list/tuple of ``str``. ``passes`` replaces
    :data:`neutral_lang.passes.PASSES` (``()`` runs none: the plan follows the source tree as
    written; for tests). ``strict`` (a bool) is forwarded to :func:`~neutral_lang.parse`.
    Results are cached on all arguments, in a cache bounded in bytes (:data:`CACHE_BYTES`): the
    same arguments return the same object while it is cached.

    Raises ``TypeError`` naming the expected types for anything else, including ``cfg_rescale``:
    CFG rescale is a run-time setting (``Program.guide(..., cfg_rescale=r)``,
    ``Program.run(pipe, guidance_rescale=r)``), like the guidance scale. ``ParseError`` for text
    the parser cannot read in strict mode, or options a keyword does not take.
    """
    if removed:
        name = next(iter(removed))
        if name == "cfg_rescale":
            raise TypeError(
                "compile() no longer takes cfg_rescale: CFG rescale is a run-time setting, like the guidance "
                "scale. Pass it to Program.guide(..., cfg_rescale=r) or Program.run(pipe, guidance_rescale=r)."
            )
        raise TypeError(f"compile() got an unexpected keyword argument {name!r}")
    if isinstance(source, str):
        key: str | tuple[str, ...] = source
    elif isinstance(source, (list, tuple)) and source and all(isinstance(t, str) for t in source):
        key = tuple(source)
    else:
        raise TypeError(
            "Expected compile() source to be a str or a non-empty list/tuple of str, "
            f"but got {_kind(source)}."
        )
    if passes is not None:
        if isinstance(passes, (str, bytes)) or not isinstance(passes, Sequence) or not all(callable(p) for p in passes):
            raise TypeError(
                f"Expected passes to be a sequence of functions ir.Module -> ir.Module, but got {_kind(passes)}."
            )
        passes = tuple(passes)
    if not isinstance(strict, bool):
        raise TypeError(f"Expected strict to be a bool, but got {type(strict).__name__}.")
    cache_key = (key, passes, strict)
    program = _CACHE.get(cache_key)
    if program is None:
        # The trees and the plan hold no reference cycles, so the cyclic garbage collector has
        # nothing to find while they are built; left on, its full collections re-walk every object
        # built so far, which made compiling a 10^6-character prompt superlinear (half its time).
        with _no_cyclic_gc():
            program = _compile(key, passes, strict)
        _CACHE.put(cache_key, program, _estimate_bytes(program))
    return program


@contextmanager
def _no_cyclic_gc():
    """Pause Python's cyclic garbage collector (reference counting still frees everything):
    building or printing a large acyclic structure otherwise triggers full collections that each
    re-walk every object built so far, which makes linear work superlinear."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _recompile(texts: tuple[str, ...], passes: tuple[Pass, ...]) -> Program:
    """How a pickled :class:`Program` comes back: compiled again from its texts and passes."""
    return compile(list(texts), passes=passes)


def _kind(value: Any) -> str:
    if isinstance(value, (list, tuple)) and value:
        inner = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {', '.join(inner)}"
    return f"an empty {type(value).__name__}" if isinstance(value, (list, tuple)) else type(value).__name__


def _compile(source: str | tuple[str, ...], passes: tuple[Pass, ...] | None, strict: bool) -> Program:
    texts = (source,) if isinstance(source, str) else source
    passes = PASSES if passes is None else passes
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
    plan = build(module, texts=texts[:1] if same else texts)
    return Program(texts, trees, module, plan, tuple(passes))


#: The compile cache's budget: the estimated bytes of all cached programs together.
CACHE_BYTES = 64 * 2**20


def _estimate_bytes(program: Program) -> int:
    """A program's memory, estimated from its sizes: per character of source (the trees and IR
    grow with it) and per plan step. The constants are upper ends of tracemalloc measurements
    on typical and hostile prompts (``tests/test_compiler.py`` checks the estimate)."""
    texts = program.texts[:1] if len(set(program.texts)) == 1 else program.texts
    return 2048 + _PER_CHAR * sum(map(len, texts)) + _PER_STEP * len(program.plan.steps)


_PER_CHAR = 150
_PER_STEP = 400


class _ByteBoundedCache:
    """Least-recently-used, bounded by the estimated bytes of its values rather than by count:
    one 100 KB prompt can hold megabytes of program, a short one a few kilobytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[Any, tuple[Program, int]] = OrderedDict()

    def get(self, key: Any) -> Program | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: Any, value: Program, size: int) -> None:
        if size > self.budget:
            return  # larger than the whole cache: compiled each time, never held
        old = self.entries.pop(key, None)
        if old is not None:
            self.used -= old[1]
        self.entries[key] = (value, size)
        self.used += size
        while self.used > self.budget:
            _, (_, freed) = self.entries.popitem(last=False)
            self.used -= freed

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0


_CACHE = _ByteBoundedCache(CACHE_BYTES)


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


