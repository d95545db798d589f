"""`neutral-lang run` and `grid` on a tiny random-weight checkpoint saved to disk, offline.

Argument errors run the real entry point in a subprocess (they must end before any model is
loaded, in one line). Images are made in-process through ``cli.main`` (torch is loaded once),
except the scale-out test, which starts two processes with ``accelerate launch``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image, ImageChops  # noqa: E402

from neutral_lang import cli, infotext  # noqa: E402
from neutral_lang.backends.diffusers import tiny  # noqa: E402
from neutral_lang.inputs import image_parameters  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny.sd_pipeline().save_pretrained(folder)
    return str(folder)


def entry(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neutral_lang", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env={**os.environ, **(env or {})})


FAST = ("--steps", "2", "--size", "32", "--device", "cpu")


@pytest.mark.parametrize("args,message", [
    (("--steps", "0"), "steps must be at least 1, not 0"),
    (("--steps", "-3"), "steps must be at least 1, not -3"),
    (("--size", "33"), "the width must be a positive multiple of 8 pixels (the VAE works on 8x8 blocks), not 33"),
    (("--out", "no-such-folder/x.png"), "the output folder 'no-such-folder' does not exist; create it first"),
    (("--sampler", "Frobnicator"), "unknown sampler 'Frobnicator'"),
    (("--cfg-rescale", "2"), "the CFG rescale must be between 0 and 1, not 2.0"),
])
def test_run_refuses_bad_arguments_before_loading_anything(args, message, tmp_path):
    r = entry("run", "--model", str(tmp_path / "missing-model"), "a AND b", *args)
    assert r.returncode == 2 and message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_run_answers_missing_models_and_devices_fast(tmp_path):
    r = entry("run", "--model", str(tmp_path / "nothing-here"), "a AND b")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such folder" in r.stderr
    r = entry("run", "--model", "model.safetensors", "a AND b")
    assert r.returncode == 2 and "--model model.safetensors: no such checkpoint file" in r.stderr
    if not torch.cuda.is_available():
        r = entry("run", "--model", "some/model", "a AND b", "--device", "cuda")
        assert r.returncode == 2 and "no CUDA; use --device cpu" in r.stderr and r.stderr.count("\n") == 1


def test_run_single_file_checkpoints_go_through_from_single_file(tmp_path, capsys):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert cli.main(["run", "--model", str(junk), "a AND b", "--device", "cpu", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"--model {junk}: not a checkpoint diffusers can read" in err
    # SD and SDXL checkpoints are told apart by their keys (read lazily) and built by from_single_file;
    # offline and without --config, the missing model configuration is named with the command to get it
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES
    from safetensors.torch import save_file

    first_conv = {CHECKPOINT_KEY_NAMES["inpainting"]: torch.zeros(8, 4, 3, 3)}
    for name, extra, cls, repo in (
        ("sd15.safetensors", {}, "StableDiffusionPipeline", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("sdxl.safetensors", {CHECKPOINT_KEY_NAMES["xl_base"]: torch.zeros(4)}, "StableDiffusionXLPipeline",
         "stabilityai/stable-diffusion-xl-base-1.0"),
    ):
        save_file({**first_conv, **extra}, str(tmp_path / name))
        assert cli.main(["run", "--model", str(tmp_path / name), "a AND b", "--device", "cpu",
                         "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert f"could not build a {cls} from this single-file checkpoint" in err and f"hf download {repo}" in err


def test_run_names_the_missing_extra():
    code = ("import sys; sys.modules['diffusers'] = None\n"
            "from neutral_lang.cli import main\n"
            "sys.exit(main(['run', '--model', 'org/name', 'a AND b', '--device', 'cpu']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert 'generating images needs diffusers: pip install "neutral-lang[diffusers]"' in r.stderr


def test_run_writes_infotext_and_from_regenerates_the_same_image(model, tmp_path, capsys):
    first = tmp_path / "castle.png"
    assert cli.main(["run", "--model", model, "a castle AND_PREP monster :-1", *FAST, "--seed", "5",
                     "--cfg-rescale", "0.5", "--out", str(first)]) == 0
    err = capsys.readouterr().err
    assert "NP301 'AND_PREP' is not a keyword" in err  # lint warnings before generating
    info = infotext.parse(image_parameters(first.read_bytes()))
    assert info.prompt == "a castle AND_PREP monster :-1" and info.negative_prompt is None
    assert info.settings == {"steps": 2, "sampler_name": "DDIM", "cfg_scale": 7.0, "seed": 5, "width": 32,
                             "height": 32, "model": os.path.basename(model), "cfg_rescale": 0.5}
    again = tmp_path / "again.png"
    assert cli.main(["run", "--model", model, "--from", str(first), "--device", "cpu", "--out", str(again)]) == 0
    assert again.read_bytes() == first.read_bytes()
    r = entry("run", "--model", model, "--from", str(first), "--out", str(first))
    assert r.returncode == 2 and "would overwrite an input; give another --out" in r.stderr
    other = tmp_path / "other.png"  # a flag overrides the infotext
    assert cli.main(["run", "--model", model, "--from", str(first), "--seed", "6", "--device", "cpu",
                     "--out", str(other)]) == 0
    assert infotext.parse(image_parameters(other.read_bytes())).settings["seed"] == 6


def test_run_over_a_prompt_file_with_per_line_options(model, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('a castle\n--prompt "a dog AND_PERP cat :-1" --negative_prompt "blurry" --seed 9 '
                       '--sampler_name "Euler a" --cfg_scale 5\n', encoding="utf-8")
    out = tmp_path / "batch.png"
    assert cli.main(["run", "--model", model, str(prompts), *FAST, "--seed", "1", "--out", str(out)]) == 0
    one, two = (infotext.parse(image_parameters((tmp_path / f"batch-000{i}.png").read_bytes())) for i in (1, 2))
    assert (one.prompt, one.settings["seed"], one.settings["sampler_name"]) == ("a castle", 1, "DDIM")
    assert (two.prompt, two.negative_prompt, two.settings["seed"], two.settings["cfg_scale"],
            two.settings["sampler_name"]) == ("a dog AND_PERP cat :-1", "blurry", 9, 5.0, "Euler a")
    assert "wrote" in capsys.readouterr().out


def test_grid_sweeps_a_weight_over_seeds_into_one_labelled_png(model, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli.main(["grid", "--model", model, "1girl, blue hair AND_TOPK glasses :0", "--x", "weight:2=0-1 [3]",
                     "--y", "seed=1,2", *FAST, "--out", str(out), "--cells"]) == 0
    captured = capsys.readouterr()
    assert "6/6" in captured.err  # the progress bar
    picture = Image.open(out)
    assert picture.width > 3 * 32 and picture.height > 2 * 32
    info = infotext.parse(picture.info["parameters"])
    assert info.prompt == "1girl, blue hair AND_TOPK glasses :0" and info.extra["Grid"] == "X: weight:2=0-1 [3]; Y: seed=1,2"
    cell = infotext.parse(Image.open(tmp_path / "grid-0005.png").info["parameters"])  # row 2, column 2
    assert cell.prompt == "1girl, blue hair AND_TOPK glasses :0.5" and cell.settings["seed"] == 2


@pytest.mark.multiprocess
def test_grid_across_two_processes_equals_one_process(model, tmp_path):
    """accelerate launch with two CPU processes (gloo): every cell is the single-process image."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if accelerate is None:
        pytest.skip("accelerate is not installed (pip install 'neutral-lang[scale]')")
    args = ["grid", "--model", model, "a AND_SALT b :0.5", "--x", "seed=1-2", "--y", "cfg=3,7", *FAST]
    single = tmp_path / "single.png"
    assert cli.main([*args, "--out", str(single)]) == 0  # in-process; conftest pins 1 thread, as accelerate does
    double = tmp_path / "double.png"
    r = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "neutral_lang", *args,
                        "--out", str(double)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    teardown_abort = r.returncode != 0 and "terminate called without an active exception" in r.stderr
    assert r.returncode == 0 or teardown_abort, r.stderr[-3000:]
    assert "grid 1/2" in r.stderr and "grid 2/2" in r.stderr  # two processes, two shares
    a, b = Image.open(single).convert("RGB"), Image.open(double).convert("RGB")
    assert a.size == b.size and ImageChops.difference(a, b).getbbox() is None
    if teardown_abort:
        # Known and documented (docs/cli.md): a gloo process sometimes aborts in C++ at exit,
        # after the grid is complete and right; reported as an expected failure, not hidden.
        pytest.xfail("a gloo process aborted at exit after writing a correct grid (docs/cli.md)")


def test_run_from_honours_or_refuses_every_infotext_setting(model, tmp_path, capsys):
    source = tmp_path / "a1111.png"
    base = "a castle AND_PERP monster :-1\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 4, Size: 32x32, Model hash: abc"
    for extra, named in ((", Hires upscale: 2, Hires steps: 10", "Hires upscale: 2"),
                         (', Lora hashes: "detail: 0123abcd"', "Lora hashes: detail: 0123abcd")):
        infotext.save_png(Image.new("RGB", (8, 8)), source, base + extra)
        assert cli.main(["run", "--model", model, "--from", str(source), "--out", str(tmp_path / "x.png")]) == 2
        assert f"its infotext has '{named}', which changes the image" in capsys.readouterr().err
    infotext.save_png(Image.new("RGB", (8, 8)), source, base + ", Clip skip: 2, Emphasis: No norm")
    out = tmp_path / "again.png"
    assert cli.main(["run", "--model", model, "--from", str(source), "--device", "cpu", "--out", str(out)]) == 0
    info = infotext.parse(image_parameters(out.read_bytes()))
    assert (info.settings["sampler_name"], info.settings["seed"], info.extra["Clip skip"], info.extra["Emphasis"]) == (
        "Euler", 4, "2", "No norm")
