"""In-process: line index, escaping, infotext, prompt files, grid axes (the pieces behind the CLI)."""

from __future__ import annotations

import random

import pytest

from neutral_lang import grid, infotext, inputs
from neutral_lang.errors import line_col
from neutral_lang.prompt_file import read_prompt_file


def test_line_index_agrees_with_line_col():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab\n ") for _ in range(rng.randrange(0, 40)))
        index = inputs.LineIndex(text)
        for pos in range(len(text) + 1):
            assert index.line_col(pos) == line_col(text, pos)


def test_caret_excerpt_of_a_long_line_is_windowed_and_the_same_as_errors():
    from neutral_lang.errors import caret_excerpt

    text = "x" * 5000 + " AND_PREP " + "y" * 5000
    source = inputs.Source("<t>", text)
    assert inputs.caret_excerpt(source, 5001, 5009) == caret_excerpt(text, 5001, 5009)
    short = inputs.Source("<t>", "a\nb AND_PREP c")
    assert inputs.caret_excerpt(short, 4, 12) == caret_excerpt(short.text, 4, 12)


def test_escape_controls_keeps_one_cell_per_character():
    text = "a\x1b[2Jb\x07c\u202ed\x9bx"
    shown = inputs.escape_controls(text)
    assert len(shown) == len(text) and shown == "a\u241b[2Jb\u2407c\ufffdd\ufffdx"
    assert inputs.escape_controls("a\nb") == "a\nb"
    assert inputs.escape_json('"\x9b"') == '"\\u009b"'


def test_infotext_round_trip_and_quoting():
    text = infotext.encode("a castle AND_PERP monster :-1\nsecond line", negative_prompt="blurry, lowres",
                           steps=20, sampler_name="Euler a", cfg_scale=7.5, seed=3, width=512, height=768,
                           model="sd15", cfg_rescale=0.7, extra={"Grid": "X: seed=1,2"})
    info = infotext.parse(text)
    assert info.prompt == "a castle AND_PERP monster :-1\nsecond line"
    assert info.negative_prompt == "blurry, lowres"
    assert info.settings == {"steps": 20, "sampler_name": "Euler a", "cfg_scale": 7.5, "seed": 3, "width": 512,
                             "height": 768, "model": "sd15", "cfg_rescale": 0.7}
    assert info.extra["Grid"] == "X: seed=1,2" and info.extra["Version"].startswith("neutral-lang ")
    assert "CFG Rescale phi: 0.7" in text and "CFG Rescale phi" not in infotext.encode("a", steps=1)


def test_infotext_of_a1111_with_schedule_type():
    info = infotext.parse("a AND b\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
                          'Size: 512x512, Model hash: abc, Lora hashes: "x: 1, y: 2", Version: v1.10.1')
    assert info.settings["sampler_name"] == "DPM++ 2M Karras" and info.extra["Lora hashes"] == "x: 1, y: 2"
    assert infotext.split("only a prompt") == ("only a prompt", None, None)


def test_prompt_file_positions_and_options():
    sources = read_prompt_file('  one AND two\n\n--prompt "x AND y" --steps 20 --cfg_scale 5\nthree \\\n  four\n', "f")
    assert [s.text for s in sources] == ["one AND two", "x AND y", "three\nfour"]
    assert sources[0].position(4) == (1, 7)
    assert sources[1].options == {"steps": 20, "cfg_scale": 5.0} and sources[1].position(2) == (3, 13)
    assert sources[2].position(7) == (5, 4)
    with pytest.raises(inputs.InputError, match="f:1: --steps takes int"):
        read_prompt_file("--prompt a --steps many", "f")
    with pytest.raises(inputs.InputError, match="unknown option --frobnicate"):
        read_prompt_file("--prompt a --frobnicate 1", "f")


def test_grid_axes_and_edits():
    assert grid.parse_axis("weight:2=0-1 [5]").values == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert grid.parse_axis("seed=1-3, 10").values == (1, 2, 3, 10)
    assert grid.parse_axis("steps=10-30 (+10)").values == (10, 20, 30)
    assert grid.parse_axis("cfg=-1,2.5").values == (-1.0, 2.5)
    for bad in ("weight=0,1", "colour=1", "seed=a", "k:2=1-0 (+1)", "seed"):
        with pytest.raises(inputs.InputError):
            grid.parse_axis(bad)
    prompt = "1girl, blue hair AND_TOPK glasses :0"
    assert grid.with_weight(prompt, 2, 0.6) == "1girl, blue hair AND_TOPK glasses :0.6"
    assert grid.with_weight("a AND b", 1, 2) == "a :2 AND b"
    assert grid.with_option(prompt, 2, "k", 0.1) == "1girl, blue hair AND_TOPK(k=0.1) glasses :0"
    assert grid.with_option("a AND_TOPK(k=0.1) b", 2, "start", 1.0, fraction=True) == "a AND_TOPK(k=0.1, start=1.0) b"
    assert grid.with_option("a AND_TOPK(k=0.1) b", 2, "k", 0.3) == "a AND_TOPK(k=0.3) b"
    with pytest.raises(inputs.InputError, match="no part 3"):
        grid.with_weight("a AND b", 3, 1)


def test_png_text_chunks_are_bounded():
    import zlib

    from tests.test_cli import make_png

    bomb = make_png((b"iTXt", b"parameters\0\x01\x00\0\0" + zlib.compress(b"a" * (4 << 20))))
    with pytest.raises(inputs.InputError, match="inflates past the input limit"):
        inputs.png_text_chunks(bomb, limit=1 << 20)
    assert inputs.png_text_chunks(bomb, limit=8 << 20)["parameters"] == "a" * (4 << 20)
    huge = make_png((b"tEXt", b"parameters\0" + b"a" * (2 << 20)))  # plain text chunks are bounded too
    with pytest.raises(inputs.InputError, match="a PNG tEXt chunk of 2097163 bytes is larger than the input limit"):
        inputs.png_text_chunks(huge, limit=1 << 20)


def test_sampler_names_round_trip():
    pytest.importorskip("diffusers")
    from diffusers import DDIMScheduler

    base = DDIMScheduler()
    for name in ("Euler a", "DPM++ 2M Karras", "DDIM", "UniPC"):
        assert infotext.sampler_name(infotext.scheduler_for(name, base)) == name
    with pytest.raises(ValueError, match="unknown sampler"):
        infotext.scheduler_for("Frobnicator", base)


def test_program_diagnostics_are_the_linters_computed_once():
    import neutral_lang as nl

    program = nl.compile("a castle AND_PREP monster :-1")
    assert [d.code for d in program.diagnostics] == ["NP301"]
    assert program.diagnostics is program.diagnostics
    assert nl.compile("a castle AND_PERP monster :-1").diagnostics == ()


@pytest.mark.parametrize("signature", [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x10\x00\x00\x00WEBP", b""])
def test_damaged_inputs_are_input_errors_never_crashes(signature, tmp_path):
    """Random and truncated bytes behind each signature: a prompt or an InputError, nothing else."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    from tests.test_cli import PARAMETERS, make_png

    good = make_png((b"zTXt", b"parameters\0\0" + __import__("zlib").compress(PARAMETERS.encode())))
    path = tmp_path / "input.bin"

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
    @hypothesis.given(st.binary(max_size=300), st.integers(0, len(good)))
    def check(tail: bytes, cut: int) -> None:
        for data in (signature + tail, good[:cut] + tail):
            path.write_bytes(data)
            try:
                inputs.read_input(str(path), limit=4096)
            except inputs.InputError:
                pass

    check()


def test_infotext_size_with_a_superscript_digit_is_not_a_size():
    """str.isdigit() is true for '³', int() refuses it: found by fuzz/hostile.py (seed 1, 266422)."""
    from neutral_lang import infotext

    info = infotext.parse("a castle\nSteps: 20, Size: ³4x64")
    assert info.extra.get("Size") == "³4x64" and "width" not in info.settings
