"""`neutral-lang run` and `neutral-lang demo` end to end, on tiny random-weight pipelines, offline."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from neutral_lang import cli, demo  # noqa: E402
from neutral_lang.backends.diffusers import tiny  # noqa: E402


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny.sd_pipeline().save_pretrained(folder)
    return folder


def test_run_writes_an_image_from_a_saved_checkpoint(saved_model, tmp_path, capsys):
    out = tmp_path / "castle.png"
    code = cli.main(["run", "--model", str(saved_model), "beautiful castle landscape AND_PERP monster :-1",
                     "--steps", "3", "--seed", "1", "--size", "32", "--out", str(out), "--device", "cpu"])
    assert code == 0
    image = Image.open(out)
    assert image.size == (32, 32)
    assert "wrote" in capsys.readouterr().out


def test_run_reports_a_missing_model_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "neutral_lang", "run", "--model", str(tmp_path / "nothing-here"), "a AND b"],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode == 2
    assert "no such folder" in proc.stderr  # a missing local path is answered before any loading
    assert "Traceback" not in proc.stderr


def test_run_reports_a_bad_prompt_with_a_caret(saved_model, capsys):
    code = cli.main(["run", "--model", str(saved_model), "a AND b :nan"])
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite weight" in err and "^" in err


def test_demo_writes_images_and_guidance_maps(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.main(parser.parse_args(["--random", "--out", str(tmp_path), "--steps", "3"])) == 0
    output = capsys.readouterr().out
    assert "RANDOM weights" in output and "lint: clean" in output and "plan:" in output
    for name, prompt in demo.PROMPTS:
        figure = Image.open(tmp_path / f"{name}.png")
        assert figure.info["parameters"].startswith(prompt + "\nSteps: 3, ")  # A1111 infotext
        # the before and after images (256 px each) side by side, the guidance maps below them
        assert figure.size[0] >= 2 * 256 and figure.size[1] > 256 + 96
