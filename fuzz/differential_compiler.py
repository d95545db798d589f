"""Differential run: this checkout's compiler and torch backend against another checkout's.

    python fuzz/differential_compiler.py --old /path/to/other/checkout --count 100000

For ``count`` generated prompts (every operator, options, windows, weights from 0 to 1e3,
nesting, repeated texts, lists of prompts), both checkouts compile the prompt and run its guidance
for three steps on seeded float64 tensors ``[2, 2, 3, 3]`` (momentum carried over), with a CFG
rescale drawn per prompt. The script compares

- the plans, as text: ``str(plan)`` (without the CFG rescale, which older checkouts printed in the
  plan), the liveness table, the per-block uses, the register and slot counts;
- the guided tensors: equal to 1e-12 relative to the largest magnitude involved (NaN equal NaN).

Each checkout runs in its own subprocess (``--old`` is put first on ``sys.path`` through a copy
laid out like the installed package); the results travel as raw float64 files in a private
temporary directory, never as pickles. Prints the count of prompts compared and of differences,
and exits 1 when there is any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

WORDS = ["a", "castle", "monster", "b", "c", "red sky", "glasses", "x y", "sunset", "(a:1.2)", "[b]"]
KEYWORDS = ["AND", "AND_PERP", "AND_SALT", "AND_TOPK"]


def _weight(rng: random.Random) -> str:
    return rng.choice(["", "", "", ":0", ":-1", ":0.5", ":2", ":-0.3", ":1e3", ":-7", ":0.1", ":1"])


def _options(rng: random.Random, keyword: str) -> str:
    items = []
    if rng.random() < 0.25:
        items.append(f"start={rng.choice(['0', '1', '2', '0.3', '0.5'])}")
    if rng.random() < 0.25:
        items.append(f"end={rng.choice(['1', '2', '3', '0.6', '0.9', '0'])}")
    if keyword == "AND_TOPK":
        if rng.random() < 0.4:
            items.append(f"k={rng.choice(['0.1', '0.5', '0.9', '1'])}")
        if rng.random() < 0.3:
            items.append("per_channel=1")
        if rng.random() < 0.3:
            items.append(f"momentum={rng.choice(['0.5', '0.9'])}")
            if rng.random() < 0.5:
                items.append("beta=0.6")
    return f"({', '.join(items)})" if items else ""


def _body(rng: random.Random, depth: int) -> str:
    if depth < 3 and rng.random() < 0.3:
        return "[" + _prompt(rng, depth + 1) + "]"
    return rng.choice(WORDS)


def _prompt(rng: random.Random, depth: int = 0) -> str:
    parts = [_body(rng, depth) + " " + _weight(rng)]
    for _ in range(rng.randint(0, 4)):
        keyword = rng.choice(KEYWORDS)
        parts.append(f"{keyword}{_options(rng, keyword)} {_body(rng, depth)} {_weight(rng)}")
    return " ".join(p.strip() for p in parts)


def prompts(count: int, seed: int):
    """``(source, cfg_rescale)`` pairs: a prompt, or now and then a list of two or three."""
    rng = random.Random(seed)
    for _ in range(count):
        if rng.random() < 0.1:
            source = [_prompt(rng) for _ in range(rng.randint(2, 3))]
        else:
            source = _prompt(rng)
        yield source, rng.choice([0.0, 0.0, 0.7])


# ---------------------------------------------------------------------------------------------
# One side: run in a subprocess with the checkout under test first on sys.path


def _side(count: int, seed: int, out_dir: str) -> None:
    import numpy as np
    import torch

    import neutral_lang as nl

    new_api = "cfg_rescale" not in nl.compile.__code__.co_varnames
    texts, values = [], []
    for n, (source, rescale) in enumerate(prompts(count, seed)):
        try:
            prog = nl.compile(source)
        except Exception as error:  # noqa: BLE001 - a difference to report, not to hide
            texts.append(f"compile error {type(error).__name__}: {error}")
            continue
        plan = prog.plan
        lines = str(plan).splitlines()
        texts.append("\n".join(lines) + f"\nfrees={plan.frees} uses={plan.uses} registers={plan.registers} slots={plan.slots}")
        gen = torch.Generator().manual_seed(n)
        batch = 2 * len(prog.texts) if len(set(prog.texts)) > 1 else 2
        shape = (batch, 2, 3, 3)
        u = torch.randn(shape, generator=gen, dtype=torch.float64)
        by_text = {t: torch.randn(shape, generator=gen, dtype=torch.float64) for t in sorted(set(prog.prompts))}
        conds = [by_text[t] for t in prog.prompts]
        runner = prog if new_api else nl.compile(source, cfg_rescale=rescale)
        state = runner.new_state()
        for step in range(3):
            kw = {"cfg_rescale": rescale} if new_api else {}
            try:
                out = runner.guide(u, conds, 7.5, step=step, num_steps=3, state=state, **kw)
            except Exception as error:  # noqa: BLE001
                texts[-1] += f"\nstep {step} error {type(error).__name__}"
                out = torch.full(shape, 12345.0, dtype=torch.float64)
            scale = max([1.0, float(u.abs().max())] + [float(c.abs().max()) for c in conds])
            values.append(np.concatenate([out.numpy().ravel(), [scale]]))
    with open(os.path.join(out_dir, "plans.json"), "w") as f:
        json.dump(texts, f)
    (np.concatenate(values) if values else np.zeros(0)).astype("<f8").tofile(os.path.join(out_dir, "values.f64"))


def _layout(checkout: str, into: str) -> str:
    """A copy of ``checkout`` laid out as the installed package (grammar and backends inside)."""
    root = os.path.join(into, "site")
    package = os.path.join(root, "neutral_lang")
    shutil.copytree(os.path.join(checkout, "neutral_lang"), package)
    shutil.copytree(os.path.join(checkout, "backends"), os.path.join(package, "backends"))
    shutil.copytree(os.path.join(checkout, "grammar"), os.path.join(package, "grammar"))
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the other checkout (a git worktree of the baseline)")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        _side(args.count, args.seed, args.side)
        return 0
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:  # created 0700: private to this user
        runs = []
        for name, checkout in (("old", args.old), ("new", here)):
            out = os.path.join(tmp, name)
            os.mkdir(out)
            env = dict(os.environ, PYTHONPATH=_layout(checkout, out))
            cmd = [sys.executable, os.path.abspath(__file__), "--old", args.old, "--count", str(args.count),
                   "--seed", str(args.seed), "--side", out]
            runs.append((out, subprocess.Popen(cmd, env=env, cwd=tmp)))
        for _, proc in runs:
            if proc.wait():
                print("a side failed", file=sys.stderr)
                return 2
        import numpy as np

        (old_dir, _), (new_dir, _) = runs
        old_plans = json.load(open(os.path.join(old_dir, "plans.json")))
        new_plans = json.load(open(os.path.join(new_dir, "plans.json")))
        plan_diffs = [i for i, (a, b) in enumerate(zip(old_plans, new_plans)) if a != b]
        old_v = np.fromfile(os.path.join(old_dir, "values.f64"), dtype="<f8")
        new_v = np.fromfile(os.path.join(new_dir, "values.f64"), dtype="<f8")
    tensor_diffs = 0
    if old_v.shape != new_v.shape:
        tensor_diffs = -1
    else:
        # every record is one output followed by its scale; compare record by record
        rows = _records(old_plans, args.count, args.seed)
        at = 0
        for size in rows:
            a, b = old_v[at:at + size], new_v[at:at + size]
            scale = max(abs(a[-1]), float(np.nanmax(np.abs(np.where(np.isfinite(a), a, 0)))), 1.0)
            same_nan = np.array_equal(np.isnan(a), np.isnan(b))
            if not same_nan or np.nanmax(np.abs(np.where(np.isnan(a), 0, a - b))) > 1e-12 * scale:
                tensor_diffs += 1
            at += size
    print(f"prompts compared: {len(old_plans)} (plans) / {len(new_plans)}; "
          f"plan differences: {len(plan_diffs)}; guided-tensor differences: {tensor_diffs} "
          f"({len(old_v)} values, 3 steps per prompt)")
    for i in plan_diffs[:3]:
        print(f"--- prompt {i}\nold:\n{old_plans[i]}\nnew:\n{new_plans[i]}")
    return 1 if plan_diffs or tensor_diffs else 0


def _records(plans, count: int, seed: int):
    """The size of each stored record (output values + 1 scale), in order."""
    for (source, _), plan in zip(prompts(count, seed), plans):
        if plan.startswith("compile error"):
            continue
        n = len(source) if isinstance(source, list) and len(set(source)) > 1 else 1
        for _ in range(3):
            yield 2 * n * 2 * 3 * 3 + 1


if __name__ == "__main__":
    sys.exit(main())
