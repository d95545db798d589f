#!/usr/bin/env python
"""Coverage-guided fuzzing of parse, format, lint and compile (atheris, i.e. libFuzzer for Python).

    .venv/bin/python fuzz/fuzz_compile.py -atheris_runs=1000000          # `make fuzz`
    .venv/bin/python fuzz/fuzz_compile.py -atheris_runs=1000000 -max_len=256 --guide

Every input (its bytes decoded as UTF-8, invalid bytes kept as lone surrogates) must satisfy:

1. lenient ``parse`` succeeds, or raises ``ParseError`` labelled as a weight or option-list
   error, with a position inside the text; nothing else escapes (no RecursionError, no
   IndexError from the lexer, no lark exception);
2. ``parse(text, strict=True)`` succeeds or raises ``ParseError``;
3. when it parses: ``parse(format(p))`` has the same parts, keywords, weights, options and leaf
   texts as ``p``, ``format`` is a fixed point, and (unless leaf texts hold unmatched ``[``/``]``,
   whose reading depends on the spelling) the same tree without its source text formats the
   same: the canonical form does not depend on the spelling;
4. ``lint`` returns diagnostics with spans inside the text, and none is ``NP001`` (a rule that
   crashed), when ``neutral_lang.linter`` is there;
5. ``compile`` (with and without passes) succeeds or raises ``ParseError``, and ``prompts`` holds
   only leaf texts of the prompt, when ``neutral_lang.compiler`` is there;
6. with ``--guide``: ``guide`` on tiny random float64 tensors is finite (for weights up to 1e3)
   and the optimised plan, the unoptimised plan and the reference interpreter agree.

A failed invariant raises, and libFuzzer writes the input to ``crash-<sha1>`` under
``-artifact_prefix`` (default: a fresh temporary directory, printed at start). Replay one input
with ``fuzz/fuzz_compile.py path/to/crash-file``. Unless told otherwise the harness adds a
dictionary of the language's tokens, ``-timeout=10`` (an input taking 10 s is reported as a hang:
the parser is meant to be linear) and, when no corpus directory is given, ``fuzz/corpus/``
(git-ignored; kept between runs, seeded with the examples of docs/language.md).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["neutral_lang"]):
    import neutral_lang as nl
    from neutral_lang import ast as nl_ast

    try:
        from neutral_lang.linter import lint

        lint("a AND b")  # loads (and so instruments) every rule module
    except ImportError:
        lint = None
    try:
        from neutral_lang.compiler import compile as nl_compile
    except ImportError:
        nl_compile = None
    if "--guide" in sys.argv:
        import neutral_lang.backends.torch.executor  # noqa: F401
        import neutral_lang.backends.torch.reference  # noqa: F401

LENIENT_LABELS = {"non-finite weight", "invalid option list", "unclosed option list", "unknown option",
                  "duplicate option", "option out of range"}

GUIDE = "--guide" in sys.argv
sys.argv = [a for a in sys.argv if a != "--guide"]

# Tokens libFuzzer splices into inputs (-dict): keywords, option lists, weights, A1111 syntax.
DICTIONARY = [
    "AND", " AND ", "AND_PERP", "AND_SALT", "AND_TOPK", "and", "AND_PREP", "BREAK", "[", "]", "(", ")", ":",
    "|", "\\", ",", "=", "\\[", "\\]", "\\(", "\\)", "\\\\", " :", ":-1", ":0.5", ":+.4", ":2.", ":1e-3", ":1e6",
    ":nan", ":inf", ":-inf", ":1e999", "(k=0.1)", "(k=", "start=", "end=", "k=", "per_channel=1", "momentum=",
    "beta=", "(start=2, end=0.5)", "0.5", "1e-3", "(x:1.2)", "[a:b:0.5]", "[a|b]", "[x]", "\n", "\t", "\u3000",
    "\u00e9", "\u57ce",
]
SEEDS = [
    "a castle :1.5", "a castle : -0.5", "x :1 :2", "hello :abc", "(glasses:1.3)",
    "beautiful castle landscape AND_PERP monster house castle :-1",
    "1girl, blue hair AND_TOPK (glasses:1.3),(smile:1.3) :0.4", "AND_PERP x", "a AND AND b", "[b AND c] tail",
    "a [b AND c] d", "[x]", "[a:b:0.5]", "[a|b]", "[a AND_SALT b] :0.5", "[a AND [b AND_PERP c] :-1] :2",
    "magical tree forests, eternal city\nAND_PERP [\n    electrical pole voyage\n    AND_SALT small nocturne "
    "companion\n]\nAND_SALT [\n    electrical tornado\n    AND_SALT electric arcs, bzzz, sparks\n]",
    "a AND_TOPK(k=0.1, per_channel=1, start=10, momentum=0.1, beta=0.4) glasses :0.3",
    "x AND_PERP(start=0.2, end=0.8) y", "a \\[ b \\] AND c", "x :nan", "a AND_TOPK(k=2) b", "[[a AND b]",
]


def meaning(prompt: nl.Prompt):
    """What a tree means, any depth: the one definition, ``neutral_lang.ast.meaning``."""
    return nl_ast.meaning(prompt)


_SQUARE = re.compile(r"\\.|[\[\]]", re.S)


def stray_brackets(prompt: nl.Prompt) -> bool:
    for leaf in nl_ast.leaves(prompt):
        depth = 0
        for m in _SQUARE.finditer(leaf.text):
            depth += {"[": 1, "]": -1}.get(m.group(), 0)
            if depth < 0:
                return True
        if depth:
            return True
    return False


def check_text(text: str) -> None:
    """All invariants for one text; raises AssertionError (or whatever escaped) on a violation."""
    try:
        prompt = nl.parse(text)
    except nl.ParseError as err:
        assert err.label in LENIENT_LABELS, f"lenient parse failed with label {err.label!r}"
        assert 0 <= err.pos <= len(text), f"error position {err.pos} outside the text"
        prompt = None
    try:
        nl.parse(text, strict=True)
    except nl.ParseError as err:
        assert 0 <= err.pos <= len(text), f"strict error position {err.pos} outside the text"

    if prompt is not None:
        once = nl.format(prompt)
        again = nl.parse(once)
        assert meaning(again) == meaning(prompt), f"format changed the meaning: {once!r}"
        assert nl.format(again) == once, f"format is not a fixed point: {once!r}"
        if not stray_brackets(prompt):
            bare = dataclasses.replace(prompt, source=None)
            assert nl.format(bare) == once, f"format depends on the source spelling: {once!r}"

    if lint is not None:
        for d in lint(text):
            assert 0 <= d.span.start <= d.span.end <= len(text), f"{d.code} span {d.span} outside the text"
            assert d.code != "NP001", f"lint internal error: {d.message}"

    if nl_compile is not None and prompt is not None:
        try:
            prog = nl_compile(text)
            plain = nl_compile(text, passes=())
        except nl.ParseError:
            return
        texts = {leaf.text for leaf in nl_ast.leaves(prompt)}
        assert set(prog.prompts) <= texts, f"prompts {prog.prompts!r} are not leaf texts"
        if GUIDE:
            check_guide(prompt, prog, plain, texts)


def check_guide(prompt, prog, plain, texts) -> None:
    import torch

    from neutral_lang.backends.torch import reference

    if sum(1 for _ in nl_ast.iter_parts(prompt)) > 64:
        return  # keep each input cheap; size is the scale tests' business
    g = torch.Generator().manual_seed(len(texts))
    shape = (1, 2, 3, 3)
    u = torch.randn(shape, generator=g, dtype=torch.float64)
    by_text = {t: torch.randn(shape, generator=g, dtype=torch.float64) for t in sorted(texts)}
    step, steps = 1, 4

    def run(p):
        conds = [by_text[t] for t in p.prompts]
        return p.guide(u, conds, 7.5, step=step, num_steps=steps)

    got, unopt = run(prog), run(plain)
    want = reference.evaluate(prompt, u, by_text, 7.5, step=step, num_steps=steps)
    weights, stack = [], [(prompt, 1.0)]
    while stack:
        p, w = stack.pop()
        for part in p.parts:
            weights.append(abs(w * part.weight))
            if isinstance(part.body, nl_ast.Group):
                stack.append((part.body.prompt, w * part.weight))
    if max(weights) <= 1e3:
        assert torch.isfinite(got).all(), "guide is not finite"
    magnitude = max(1.0, float(want.abs().max()), 2 * 7.5 * sum(weights) * 5.0)
    for name, x in (("optimised", got), ("unoptimised", unopt)):
        if torch.isfinite(want).all():
            err = float((x - want).abs().max())
            assert err <= 1e-9 * magnitude, f"{name} plan differs from the reference by {err:g}"


def TestOneInput(data: bytes) -> None:
    check_text(data.decode("utf-8", "surrogateescape"))


def _defaults(argv: list[str]) -> list[str]:
    """libFuzzer flags the harness adds unless given: dictionary, seeds, timeout, artifact dir."""
    flags = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    inputs = [a for a in argv[1:] if not a.startswith("-")]
    work = tempfile.mkdtemp(prefix="neutral-lang-fuzz-")
    extra = []
    if "-dict" not in flags:
        path = os.path.join(work, "neutral.dict")
        with open(path, "w", encoding="utf-8") as f:
            for token in DICTIONARY:
                escaped = "".join(c if c.isprintable() and c not in '"\\' and ord(c) < 128 else
                                  "".join(f"\\x{b:02x}" for b in c.encode("utf-8")) for c in token)
                f.write(f'"{escaped}"\n')
        extra.append(f"-dict={path}")
    if "-timeout" not in flags:
        extra.append("-timeout=10")
    if "-artifact_prefix" not in flags:
        extra.append(f"-artifact_prefix={work}/")
    if not inputs:  # no corpus given: fuzz/corpus/ (git-ignored), seeded with the examples of docs/language.md
        corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
        os.makedirs(corpus, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            path = os.path.join(corpus, f"seed{i:02d}")
            if not os.path.exists(path):
                with open(path, "w", encoding="utf-8") as f:
                    f.write(seed)
        extra.append(corpus)
    print(f"fuzz_compile: lint {'on' if lint else 'absent'}, compile {'on' if nl_compile else 'absent'}, "
          f"guide {'on' if GUIDE else 'off'}; crash files go to {work}/", file=sys.stderr)
    return argv[:1] + [a for a in argv[1:] if a.startswith("-")] + extra + inputs


def main() -> None:
    argv = sys.argv
    files = [a for a in argv[1:] if not a.startswith("-")]
    replay = bool(files) and all(os.path.isfile(f) for f in files)
    if not replay:
        argv = _defaults(argv)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
