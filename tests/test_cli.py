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


def run(*args: str, stdin: str | bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess; ``stdin`` as text or bytes."""
    import os

    binary = isinstance(stdin, bytes)
    r = subprocess.run(
        [sys.executable, "-m", "neutral_lang", *args], input=stdin, capture_output=True, text=not binary,
        stdin=None if stdin is not None else subprocess.DEVNULL, timeout=120,
        env=None if env is None else {**os.environ, **env},
    )
    if binary:
        r.stdout, r.stderr = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    return r


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
    # a trailing backslash continues a prompt on the next line; offsets are into the prompt text
    r = run("lint", "--format", "json", stdin="AND_PERP monster \\\n:nan")
    assert r.returncode == 1
    records = json.loads(r.stdout)
    assert [(d["file"], d["code"], d["severity"], d["line"], d["column"]) for d in records] == [
        ("<stdin>", "NP101", "warning", 1, 1), ("<stdin>", "NP401", "error", 2, 2)]
    assert records[1]["start"] == 18 and records[1]["end"] == 21 and records[1]["fix"] is None
    assert records[0]["name"] == "leading-keyword" and records[0]["hint"]


def test_lint_files_png_select_and_ignore(tmp_path):
    text_file = tmp_path / "prompt.txt"
    text_file.write_text("magical forest \\\nAND_PERP [pole AND_SALT companion]\\\nAND_SALT tornado :0\n", encoding="utf-8")
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
    r = run("fmt", "--check", "-f", str(canonical), "-c", "a  AND b")
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
    assert names == ["lint", "fmt", "explain", "run", "grid", "demo"]
    assert [f.__name__ for f in cli.SUBCOMMANDS] == ["add_lint", "add_fmt", "add_explain", "add_run", "add_grid", "add_demo"]


# --- inputs: files, stdin, images, prompt files, limits (issue 12, issue 14) -----------------


def _exif_image(fmt: str, parameters: str) -> bytes:
    """An 8x8 image with A1111's infotext in EXIF UserComment (UNICODE, UTF-16 big-endian, as piexif writes)."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + parameters.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=fmt, exif=exif.tobytes())
    return buffer.getvalue()


def test_positional_files_are_read_and_file_names_are_never_linted(tmp_path):
    png = tmp_path / "image.png"
    png.write_bytes(make_png((b"tEXt", b"parameters\0" + PARAMETERS.encode("latin-1"))))
    r = run("lint", "--format", "json", str(png))
    assert r.returncode == 1 and [d["code"] for d in json.loads(r.stdout)] == ["NP301"]
    # a missing file whose name looks like one is an error, not the prompt "missing.png"
    for name in ("image_from_a1111.png", "prompts.txt", "dir/file"):
        r = run("lint", "--format", "json", name)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip() == f"neutral-lang lint: {name}: no such file (to check it as prompt text, use -c {name})"
    # -c is always text; plain words stay text
    assert run("lint", "-c", "prompts.txt").returncode == 0
    assert run("lint", "a castle").returncode == 0
    r = run("fmt", "--check", str(tmp_path / "prompts.txt"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_stdin_is_sniffed_like_a_file(tmp_path):
    png = make_png((b"tEXt", b"parameters\0" + PARAMETERS.encode("latin-1")))
    r = run("lint", "--format", "json", "-", stdin=png)
    assert r.returncode == 1 and [(d["file"], d["code"], d["column"]) for d in json.loads(r.stdout)] == [
        ("<stdin>", "NP301", 10)]
    # a BOM is dropped (no NP finding at column 1 for it), on stdin as in a file
    r = run("fmt", "-", stdin="\ufeffa  AND b\n".encode("utf-8"))
    assert r.returncode == 0 and r.stdout == "a AND b\n"
    # the same bytes are refused the same way through stdin and through a file
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 AND b".encode("latin-1"))
    from_file, from_stdin = run("lint", str(bad)), run("lint", "-", stdin=bad.read_bytes())
    assert from_file.returncode == from_stdin.returncode == 2
    assert "not UTF-8 text (byte 3 is b'\\xe9')" in from_file.stderr and "not UTF-8 text (byte 3" in from_stdin.stderr
    # `-` for explain too: not the prompt "-"
    r = run("explain", "-", stdin=b"a AND_PERP b")
    assert r.returncode == 0 and 'AND_PERP "b"' in r.stdout


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_jpeg_and_webp_infotext_from_exif(tmp_path, fmt):
    pytest.importorskip("PIL")
    path = tmp_path / f"00012.{fmt.lower()}"
    path.write_bytes(_exif_image(fmt, PARAMETERS))
    r = run("lint", "--format", "json", str(path))
    assert r.returncode == 1, r.stderr
    assert [(d["code"], d["line"], d["column"]) for d in json.loads(r.stdout)] == [("NP301", 1, 10)]


def test_prompt_file_one_prompt_per_line_with_options_and_continuations(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "beautiful castle landscape AND_PERP monster house castle :-1\n"
        "\n"
        "  a castle AND_PREP monster\n"
        '--prompt "x AND_PREP y" --negative_prompt "blurry" --steps 20\n'
        "magical tree forests \\\n"
        "   AND_PERP pole :nan\n", encoding="utf-8")
    r = run("lint", str(prompts))
    assert r.returncode == 1
    heads = [line for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [
        f"{prompts}:3:12: NP301 'AND_PREP' is not a keyword, so it is read as plain text: did you mean AND_PERP?",
        f"{prompts}:4:13: NP301 'AND_PREP' is not a keyword, so it is read as plain text: did you mean AND_PERP?",
        f"{prompts}:6:19: NP401 non-finite weight 'nan': the original would turn the whole image into NaN",
    ]
    assert "in 4 prompts" in r.stderr
    r = run("fmt", "--check", str(prompts))
    assert r.returncode == 1 and r.stdout == "" and f"{prompts}:6:19: non-finite weight" in r.stderr
    other = tmp_path / "other.txt"
    other.write_text("a AND b\n\na  AND b\n", encoding="utf-8")
    r = run("fmt", "--check", str(other))
    assert r.returncode == 1 and r.stdout.splitlines() == [f"would reformat {other}:3"]
    r = run("fmt", str(prompts))  # the nan prompt does not parse: reported with its file line
    assert f"{prompts}:6:19: non-finite weight" in r.stderr
    # fmt prints the file as `fmt -i` would write it: canonical prompts, everything else kept
    assert r.stdout.splitlines() == [
        "beautiful castle landscape AND_PERP monster house castle :-1", "", "  a castle AND_PREP monster",
        '--prompt "x AND_PREP y" --negative_prompt "blurry" --steps 20', "magical tree forests \\",
        "   AND_PERP pole :nan"]


def test_prompt_file_refuses_options_it_cannot_honour(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('a castle\n--prompt "b" --restore_faces true\n', encoding="utf-8")
    r = run("lint", str(prompts))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"{prompts}:2: --restore_faces is an A1111 option that neutral-lang cannot honour" in r.stderr


def test_reads_are_bounded_with_a_message_naming_the_limit(tmp_path):
    r = run("lint", "-f", "/dev/zero", env={"NEUTRAL_LANG_MAX_INPUT": "2M"})
    assert r.returncode == 2
    assert r.stderr.strip() == ("neutral-lang lint: /dev/zero: the input is larger than the input limit of 2 MiB; "
                                "raise it with --max-input-size SIZE or NEUTRAL_LANG_MAX_INPUT=SIZE (e.g. 256M)")
    r = run("lint", "--max-input-size", "1K", "-", stdin=b"a castle " * 200)
    assert r.returncode == 2 and "input limit of 1 KiB" in r.stderr
    assert run("lint", "--max-input-size", "2K", "-", stdin=b"a castle " * 200).returncode == 0
    assert run("lint", "--max-input-size", "lots", "x").returncode == 2
    # a zTXt bomb: 64 KiB of zlib that inflates to 64 MiB stops at the cap, in a small fraction of that memory
    bomb = zlib.compress(b"a" * (64 << 20), 9)
    png = tmp_path / "bomb.png"
    png.write_bytes(make_png((b"zTXt", b"parameters\0\0" + bomb)))
    r = run("lint", str(png), "--max-input-size", "1M")
    assert r.returncode == 2
    assert "a compressed PNG text chunk inflates past the input limit of 1 MiB" in r.stderr
    assert "Traceback" not in r.stderr


def test_control_characters_are_escaped_in_human_readable_output(tmp_path):
    hostile = "a castle \x1b]0;owned\x07\x1b[2J AND_PREP monster"
    png = tmp_path / "hostile.png"
    png.write_bytes(make_png((b"tEXt", b"parameters\0" + hostile.encode("latin-1"))))
    for command in ("lint", "explain"):
        r = run(command, str(png))
        assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
    # fmt's output is data (redirected into files): kept as it is when stdout is not a terminal
    assert run("fmt", str(png)).stdout == hostile + "\n"
    r = run("lint", str(png))
    assert "\u241b]0;owned\u2407" in r.stdout
    lines = r.stdout.splitlines()  # one visible character per control: the caret stays under its word
    at = next(i for i, line in enumerate(lines) if " NP301 " in line)
    assert lines[at + 2].index("^") == lines[at + 1].index("AND_PREP")
    r = run("lint", "--format", "json", str(png))
    assert "\x1b" not in r.stdout and "NP301" in [d["code"] for d in json.loads(r.stdout)]


def test_help_texts_show_defaults_and_no_repository_paths():
    for command in ("lint", "fmt", "explain", "run", "grid", "demo"):
        r = run(command, "--help")
        assert r.returncode == 0
        assert "docs/" not in r.stdout and "README" not in r.stdout
    text = " ".join(run("run", "--help").stdout.split())
    assert "(default: 30)" in text and "(default: 0)" in text and "(default: 7)" in text


def test_bench_runner_names_the_benchmark_that_failed():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import run; "
            "run.SCRIPTS = ('no_such_bench.py',); sys.exit(run.main())")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "benchmarks that failed: no_such_bench.py (exit 2)" in r.stderr
