"""`neutral-lang fmt`: the multi-line layout (the documented example is its output), --check, --diff,
-i, line endings kept; and `lint --fix`, `lint --help`, carets under wide characters. CLI tests run
the real entry point in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings

import neutral_lang as nl
from neutral_lang.ast import meaning
from neutral_lang.layout import WIDTH, layout
from neutral_lang.testing import prompts

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neutral_lang", *args], input=stdin, capture_output=True,
                          text=True, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=120)


def documented_layout() -> str:
    """The nested example of docs/language.md, "Groups", as written there."""
    doc = (ROOT / "docs" / "language.md").read_text("utf-8")
    block = re.search(r"The README example nests twice:\n\n```\n(.*?)```", doc, re.S).group(1)
    return block.rstrip("\n")


def test_the_documented_layout_is_what_fmt_writes():
    text = documented_layout()
    assert "\n    AND_SALT" in text  # the example really is multi-line
    assert layout(text) == text
    assert layout(nl.format(text)) == text  # the 170-character line is laid out as documented
    assert len(nl.format(text)) > WIDTH
    r = run("fmt", "--check", "-c", text)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_short_and_flat_prompts_stay_on_one_line():
    readme = "magical tree forests AND_PERP [ electrical pole AND_SALT small companion ] AND_SALT [ tornado AND_SALT sparks ]"
    assert layout(readme) == nl.format(readme) and "\n" not in layout(readme)
    flat = " AND ".join(["a long part of a prompt"] * 10)
    assert layout(flat) == nl.format(flat)


@settings(max_examples=120, deadline=None)
@given(prompts(max_depth=3, max_parts=4))
def test_layout_keeps_the_meaning_and_is_a_fixed_point(text):
    for width in (20, WIDTH):
        out = layout(text, width=width)
        assert meaning(nl.parse(out)) == meaning(nl.parse(text))
        assert layout(out, width=width) == out


def test_a_prompt_file_with_the_layout_checks_clean_and_fmt_i_writes_it(tmp_path):
    laid = documented_layout()
    as_file = " \\\n".join(laid.split("\n")) + "\n"
    good = tmp_path / "good.txt"
    good.write_text(as_file, encoding="utf-8")
    r = run("fmt", "--check", str(good))
    assert (r.returncode, r.stdout) == (0, "")
    flat = tmp_path / "flat.txt"
    flat.write_text("a castle  AND monster\n" + nl.format(laid) + "\n", encoding="utf-8")
    r = run("fmt", "--check", str(flat))
    assert (r.returncode, r.stdout) == (1, f"would reformat {flat}:1\nwould reformat {flat}:2\n")
    r = run("fmt", "-i", str(flat))
    assert r.returncode == 0 and r.stdout == "" and f"reformatted {flat}" in r.stderr
    assert flat.read_text("utf-8") == "a castle AND monster\n" + as_file
    assert run("fmt", "--check", str(flat)).returncode == 0


def test_line_endings_blank_lines_and_option_lines_are_kept(tmp_path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a castle AND_PERP monster :-1\r\n")
    r = run("fmt", "--check", str(crlf))
    assert (r.returncode, r.stdout) == (0, "")  # a canonical one-line file with CRLF is canonical
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes(b'x  AND y\r\n\r\n--prompt "a  AND b" --steps 3\r\nz AND w\r\n')
    assert run("fmt", "-i", str(mixed)).returncode == 0
    # the option line's prompt is formatted too, and the line written again in shell quoting
    assert mixed.read_bytes() == b"x AND y\r\n\r\n--prompt 'a AND b' --steps 3\r\nz AND w\r\n"
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfx  AND y")
    assert run("fmt", "-i", str(bom)).returncode == 0
    assert bom.read_bytes() == b"\xef\xbb\xbfx AND y"  # the BOM and the missing final newline too


def test_diff(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("keep AND this\nx  AND y\n", encoding="utf-8")
    r = run("fmt", "--diff", str(f))
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"--- {f}", f"+++ {f}", "@@ -1,2 +1,2 @@", " keep AND this", "-x  AND y", "+x AND y"]
    assert f.read_text("utf-8") == "keep AND this\nx  AND y\n"  # --diff writes nothing
    r = run("fmt", "--diff", "-c", "a AND b")
    assert (r.returncode, r.stdout) == (0, "")
    r = run("fmt", "--diff", "-c", "a  AND b")
    assert r.returncode == 1 and "-a  AND b" in r.stdout and "+a AND b" in r.stdout


def test_in_place_refuses_what_it_cannot_write_before_writing_anything(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("x  AND y\n", encoding="utf-8")
    r = run("fmt", "-i", str(f), "-c", "a  AND b")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "<arg1> is prompt text" in r.stderr
    assert f.read_text("utf-8") == "x  AND y\n"
    r = run("fmt", "-i", "-", stdin="x  AND y\n")
    assert r.returncode == 2 and "stdin" in r.stderr
    r = run("fmt", "--check", "--diff", str(f))
    assert r.returncode == 2  # one mode at a time


# --- lint --fix --------------------------------------------------------------------------------


def test_lint_fix_rewrites_files_in_place_and_reports_what_is_left(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_bytes(b"a castle AND_PREP monster :\xe2\x88\x921\r\n\r\ngirl on a swing:1.2 green grass AND_PERPP fog\r\n")
    r = run("lint", "--fix", str(f))
    assert f.read_bytes() == b"a castle AND_PERP monster :-1\r\n\r\ngirl on a swing:1.2 green grass AND_PERP fog\r\n"
    assert r.returncode == 1  # the inline weight (NP408) has only an unsafe fix: still reported
    assert "fixed 3 problems" in r.stderr and f"{f}:3:1: NP408" in r.stdout
    r = run("lint", "--fix", "--unsafe-fixes", str(f))
    assert r.returncode == 0 and "no problems" in r.stderr
    assert f.read_bytes().splitlines()[2] == b"(girl on a swing:1.2) green grass AND_PERP fog"


def test_lint_fix_prints_fixed_text_and_sends_problems_to_stderr():
    r = run("lint", "--fix", "-c", "a castle AND_PREP monster :- 1", "-c", "x AND AND y")
    assert r.stdout.splitlines() == ["a castle AND_PERP monster :-1", "x AND AND y"]
    assert r.returncode == 1 and "<arg2>:1:3: NP102" in r.stderr  # unsafe: left, shown on stderr
    r = run("lint", "--fix", "-", stdin="a AND_PREP b\nc AND_SALT d\n")
    assert (r.returncode, r.stdout) == (0, "a AND_PERP b\nc AND_SALT d\n")


def test_lint_help_names_no_repository_paths():
    r = run("lint", "--help")
    assert r.returncode == 0 and "--fix" in r.stdout and "--unsafe-fixes" in r.stdout
    assert not re.search(r"docs/|\.md\b|neutral_lang/|tests/", r.stdout), r.stdout


def test_caret_sits_under_the_character_after_wide_text():
    r = run("lint", "-c", "城堡，夜晚 AND_PREP 怪物")
    head, shown, caret = r.stdout.splitlines()[:3]
    assert head.startswith("<arg1>:1:12: NP301")  # 5 wide characters (10 cells) and a space before it
    assert caret.index("^") == shown.index("A") + 5  # 5 cells more than characters before it
    assert caret.strip() == "^~~~~~~~"
    r = run("lint", "-c", "a castle ＡＮＤ＿ＰＥＲＰ monster")
    assert r.stdout.splitlines()[2].strip() == "^" + "~" * 15  # 8 full-width letters, 16 cells
