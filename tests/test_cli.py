"""The command line, end to end through ``python -m neutral_lang`` (a dozen subprocesses), plus the PNG
reader and argument handling in-process through ``cli.main``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import pytest

from neutral_lang import cli

PARAMETERS = (
    "a castle AND_PREP monster :-1\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1195978169, Size: 512x512"
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(*text_chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 grey PNG with the given text chunks between IHDR and IDAT."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    body = b"".join(_chunk(kind, data) for kind, data in text_chunks)
    return cli.PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + body + _chunk(b"IDAT", zlib.compress(b"\x00\x80")) + _chunk(b"IEND", b"")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neutral_lang", *args], input=stdin, capture_output=True, text=True,
        stdin=None if stdin is not None else subprocess.DEVNULL, timeout=60,
    )


# --- end to end (subprocesses) ---------------------------------------------------------------


def test_lint_clean_prompt_exits_0():
    r = run("lint", "beautiful castle landscape AND_PERP monster house castle :-1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "no problems in 1 prompt" in r.stderr


def test_lint_text_output_exit_1_with_location_caret_hint_and_fix():
    r = run("lint", "a AND_PERP b", "a castle AND_PREP monster")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0] == "<arg2>:1:10: NP301 'AND_PREP' is not a keyword, so it is read as plain text: did you mean AND_PERP?"
    assert lines[1] == "    a castle AND_PREP monster"
    assert lines[2] == "             ^~~~~~~~"
    assert lines[3].startswith("    hint: ") and lines[4] == "    fix: replace with 'AND_PERP'"
    assert "1 problem (1 warning) in 2 prompts" in r.stderr


def test_lint_json_stdin_and_errors():
    r = run("lint", "--format", "json", stdin="AND_PERP monster\n:nan")
    assert r.returncode == 1
    records = json.loads(r.stdout)
    assert [(d["file"], d["code"], d["severity"], d["line"], d["column"]) for d in records] == [
        ("<stdin>", "NP101", "warning", 1, 1), ("<stdin>", "NP401", "error", 2, 2)]
    assert records[1]["start"] == 18 and records[1]["end"] == 21 and records[1]["fix"] is None
    assert records[0]["name"] == "leading-keyword" and records[0]["hint"]


def test_lint_files_png_select_and_ignore(tmp_path):
    text_file = tmp_path / "prompt.txt"
    text_file.write_text("magical forest\nAND_PERP [pole AND_SALT companion]\nAND_SALT tornado :0\n", encoding="utf-8")
    png = tmp_path / "00012-1195978169.png"
    png.write_bytes(make_png((b"tEXt", b"parameters\0" + PARAMETERS.encode("latin-1"))))
    r = run("lint", "--format", "json", "-f", str(text_file), "-f", str(png), "--select", "NP3,NP4", "--ignore", "NP402")
    assert r.returncode == 1, r.stderr
    found = [(d["file"], d["code"], d["line"], d["column"], d["fix"]) for d in json.loads(r.stdout)]
    assert found == [(str(text_file), "NP404", 3, 1, ""), (str(png), "NP301", 1, 10, "AND_PERP")]
    # the negative prompt and the settings line are not linted; ignoring what was found makes it clean
    r = run("lint", "-f", str(png), "--ignore", "NP301")
    assert r.returncode == 0 and r.stdout == ""


def test_lint_usage_and_input_errors_exit_2(tmp_path):
    assert run("lint", "--select", "NP999", "x").returncode == 2
    r = run("lint", "-f", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt" in r.stderr
    bare = tmp_path / "bare.png"
    bare.write_bytes(make_png())
    r = run("lint", "-f", str(bare))
    assert r.returncode == 2 and "parameters" in r.stderr
    assert run("frobnicate").returncode == 2


def test_fmt_prints_canonical_and_check(tmp_path):
    r = run("fmt", "a castle : 1.5   AND_PERP  monster:-1", "[b AND c] tail")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["a castle :1.5 AND_PERP monster :-1", "[b AND c] AND tail"]
    canonical = tmp_path / "ok.txt"
    canonical.write_text("a castle AND_PERP monster :-1\n", encoding="utf-8")
    r = run("fmt", "--check", "-f", str(canonical), "a  AND b")
    assert r.returncode == 1 and r.stdout.splitlines() == ["would reformat <arg1>"]
    assert run("fmt", "--check", "-f", str(canonical)).returncode == 0
    r = run("fmt", "x :nan")
    assert r.returncode == 1 and "<arg1>:1:4: non-finite weight" in r.stderr


def test_explain_prints_tree_and_cost():
    r = run("explain", "a castle AND_PERP [monster AND_SALT house] :-1 AND_SALT a castle")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "tree:" in out
    assert '  AND_PERP [group] :-1  @1:10' in out and '    AND_SALT "house"  @1:28' in out
    assert "cost: 4 model evaluations per step" in out  # 3 unique texts + 1, with or without the compiler


def test_lint_and_fmt_import_no_torch():
    code = (
        "import sys, io, contextlib\n"
        "import neutral_lang as nl\n"
        "from neutral_lang.cli import main\n"
        "nl.lint('a AND_PERP b')\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['lint', 'a AND_PREP b']) == 1\n"
        "    assert main(['fmt', 'a  AND_PERP b']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --- in-process: the PNG reader and the parameters text --------------------------------------


def test_png_text_chunks_tEXt_zTXt_iTXt():
    itxt = b"parameters\0\x01\x00en\0\0" + zlib.compress("ein Schloss \u00e9\u4e2d AND_PERP x".encode("utf-8"))
    ztxt = b"Software\0\x00" + zlib.compress(b"A1111")
    chunks = cli.png_text_chunks(make_png((b"iTXt", itxt), (b"zTXt", ztxt), (b"tEXt", b"Comment\0hi")))
    assert chunks == {"parameters": "ein Schloss \u00e9\u4e2d AND_PERP x", "Software": "A1111", "Comment": "hi"}
    plain = b"parameters\0\x00\x00\0\0a AND b"
    assert cli.png_text_chunks(make_png((b"iTXt", plain)))["parameters"] == "a AND b"
    with pytest.raises(cli.InputError):
        cli.png_text_chunks(b"GIF89a")
    with pytest.raises(cli.InputError):
        cli.png_text_chunks(make_png((b"tEXt", b"parameters\0abc"))[:45])  # inside a chunk


@pytest.mark.parametrize("parameters,prompt", [
    (PARAMETERS, "a castle AND_PREP monster :-1"),
    ("line one\nAND_SALT line two\nSteps: 20, Seed: 1", "line one\nAND_SALT line two"),
    ("just a prompt", "just a prompt"),
    ("a\r\nNegative prompt: b\r\nSteps: 1", "a"),
])
def test_positive_prompt(parameters, prompt):
    assert cli.positive_prompt(parameters) == prompt
    assert parameters.startswith(prompt)  # a prefix: positions are positions in the chunk


def test_main_returns_codes_in_process(capsys):
    assert cli.main(["--version"]) == 0
    assert cli.main([]) == 2
    assert cli.main(["lint", "--format", "xml", "x"]) == 2
    capsys.readouterr()
    assert cli.main(["lint", "--select", "np1", "--select", "NP107", "a AND b"]) == 0  # info only: exit 0
    assert "<arg1>:1:1: NP107 3 model evaluations per step" in capsys.readouterr().out


def test_explain_without_the_compiler_prints_the_ast_cost(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "neutral_lang.compiler", None)  # as if not written yet
    assert cli.main(["explain", "a AND_PERP [b AND_SALT c] AND a"]) == 0
    out = capsys.readouterr().out
    assert '    AND_SALT "c"  @1:15' in out
    assert out.rstrip().endswith("cost: 4 model evaluations per step (3 unique texts + 1 unconditional), before optimisation")


def test_subcommands_are_registered_in_one_list():
    names = [a.dest for a in cli.build_parser()._subparsers._group_actions[0]._choices_actions]
    assert names == ["lint", "fmt", "explain", "run", "demo"]
    assert [f.__name__ for f in cli.SUBCOMMANDS] == ["add_lint", "add_fmt", "add_explain", "add_run", "add_demo"]
