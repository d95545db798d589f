"""fuzz/hostile.py keeps working: a small run is clean, and the harness does report what escapes.

The full run and its figures are in docs/reliability.md; here a few seconds' worth.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "fuzz" / "hostile.py"


def _run(*args, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HOSTILE), *args] if code is None else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _assert_prints_ok(code: str) -> None:
    """Run a planted-failure script; it asserts what the harness reported and prints "ok"."""
    done = _run(code=code)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


def test_a_small_run_is_clean_and_prints_the_table():
    done = _run("--count", "120", "--workers", "2", "--seed", "7", "--batch", "30", "--subprocess-every", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "120 inputs (4 batches of 30 from index 0 on), 2 workers" in out
    assert "escapes: 0" in out
    assert "| prompt mutations |" in out and "| deep brackets |" in out
    assert "peak resident memory: workers" in out
    # the generators' counts add up to the inputs run
    counts = [int(line.split("|")[2].replace(",", "")) for line in out.splitlines()
              if line.startswith("| ") and line.count("|") == 3 and not line.startswith("| generator")]
    assert sum(counts) == 120


_PRELUDE = """
import sys
sys.path.insert(0, {fuzz!r})
import hostile
import neutral_lang as nl
""".format(fuzz=str(ROOT / "fuzz"))


def test_an_exception_from_a_path_is_reported_as_an_escape():
    code = _PRELUDE + """
hostile._init_worker(0, 30.0)
def broken(text, **kw):
    raise KeyError("planted")
nl.lint = broken
result = hostile._one(1, 5, 0)
assert result["escapes"] and result["escapes"][0][0] == "lint", result
assert "KeyError" in result["escapes"][0][1]
print("ok")
"""
    _assert_prints_ok(code)


def test_an_input_over_the_time_cap_is_stopped_and_reported():
    code = _PRELUDE + """
hostile._init_worker(0, 0.3)
def slow(text, **kw):
    while True:
        pass
nl.lint = slow
result = hostile._one(1, 5, 0)
assert result["escapes"] == [("library", "over the time cap (0.3 s CPU)")], result
assert result["seconds"] < 5
print("ok")
"""
    _assert_prints_ok(code)


def test_a_command_line_internal_error_is_an_escape():
    code = _PRELUDE + """
from neutral_lang import cli
hostile._init_worker(0, 30.0)
def broken(args):
    raise RuntimeError("planted")
def add_lint(sub):  # the lint subcommand, with a handler that fails as a bug would
    cli.add_lint(sub)
    sub.choices["lint"].set_defaults(handler=broken)
cli.SUBCOMMANDS[0] = add_lint
found = []
for i in range(40):
    result = hostile._one(1, i, 0)
    found += [e for e in result["escapes"] if e[0].startswith("cli lint")]
assert found and all("internal error" in what for _, what in found), found
print("ok")
"""
    _assert_prints_ok(code)


def test_inputs_are_reproducible_from_seed_and_index():
    code = _PRELUDE + """
assert hostile.draw(3, 17) == hostile.draw(3, 17)
assert hostile.draw(3, 17) != hostile.draw(4, 17)
names = {hostile.draw(1, i)[0] for i in range(300)}
assert names == set(hostile.TEXT_GENERATORS), names
print("ok")
"""
    _assert_prints_ok(code)
