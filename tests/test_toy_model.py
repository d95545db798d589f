"""The shipped toy model, end to end: it loads like a user's checkpoint, draws what its captions
say, and each keyword moves its images the way docs/toy.md measures -- a few seeds and steps, with
thresholds well below the benchmark's figures, so that a regression in the compiler's semantics
(a lost part, a flipped sign, an ignored weight) fails here."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from neutral_lang import toy  # noqa: E402
from neutral_lang.demo import TOY  # noqa: E402
from neutral_lang.toy import evaluate, experiments, world  # noqa: E402

FAST = experiments.Settings(seeds=4, variants=2, steps=10, guidance_scale=5.0)
SEEDS = [1195978169 + i for i in range(4)]  # the demo's seeds and settings
DEMO = experiments.Settings(steps=20, guidance_scale=5.0)


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return toy.pipeline()


def _rows(rows):
    return {r.condition: r.metrics for r in rows}


def test_it_loads_through_from_pretrained_like_a_user_checkpoint(pipe):
    from diffusers import StableDiffusionPipeline

    assert isinstance(pipe, StableDiffusionPipeline)
    size = sum(f.stat().st_size for f in toy.WEIGHTS.rglob("*") if f.is_file())
    assert size < 26e6
    assert pipe.tokenizer.tokenize("a red circle") == ["a</w>", "red</w>", "circle</w>"]


def test_identity_law_on_the_toy_model(pipe):
    import neutral_lang as nl

    kw = dict(num_inference_steps=4, guidance_scale=5.0)
    plain = pipe("a blue square", generator=torch.Generator().manual_seed(3), output_type="np", **kw).images
    ours = nl.compile("a blue square").run(pipe, generator=torch.Generator().manual_seed(3), output_type="np", **kw).images
    assert np.array_equal(plain, ours)


def test_captions_come_out_in_their_colour_and_shape(pipe):
    things = [world.Thing(c, s, p, "big", 0, 0, 0) for c, s, p in
              (("red", "circle", "left"), ("blue", "square", "right"), ("yellow", "triangle", "top"),
               ("green", "circle", "bottom"))]
    captions = [world.caption(world.Scene((t,))) for t in things]
    images = pipe(captions, generator=[torch.Generator().manual_seed(i) for i in range(4)],
                  num_inference_steps=FAST.steps, guidance_scale=FAST.guidance_scale).images
    found = [evaluate.detect(np.asarray(image)) for image in images]
    colours = sum(evaluate.has(f, colour=t.colour) for f, t in zip(found, things))
    both = sum(evaluate.has(f, colour=t.colour, shape=t.shape) for f, t in zip(found, things))
    # measured over 50 held-out captions (docs/toy.md): colour 94%, shape 80%; chance is 25%, 33%
    # (these four: 4 of 4 each; positions are not learnt and not asked for)
    assert all(found) and colours >= 3 and both >= 2, (captions, found)


def _figure(pipe, name: str, trace=None):
    """The images of one demo figure's panels, by label: 4 seeds each, the demo's settings."""
    (comparison,) = [c for c in TOY if c.name == name]
    return {label: experiments.generate(pipe, prompt, SEEDS, DEMO) for label, prompt in comparison.panels}


def _changed(images, base):
    return float(np.mean([experiments._changed(i, b) for i, b in zip(images, base)]))


def _largest_colour(image):
    found = evaluate.detect(image)
    return found[0].colour if found else None


def test_and_perp_keeps_the_subject_a_negative_and_destroys(pipe):
    panels = _figure(pipe, "AND_PERP")
    # the largest object's colour: a negative AND leaves a yellow fringe around a blue disc
    yellow = {label: sum(_largest_colour(i) == "yellow" for i in images) for label, images in panels.items()}
    # measured on these seeds: AND_PERP 4 of 4 yellow, the negative AND 1 of 4
    assert yellow["AND_PERP"] >= 3 and yellow["negative AND"] <= yellow["AND_PERP"] - 2, yellow


def test_a_positive_and_perp_part_moves_the_image_towards_it(pipe):
    # what AND_PERP adds has the part's sign: at +2 the orthogonal share of "a blue shape" recolours
    # the red circles (to green, on this model: red and blue directions add up to green); a flipped
    # sign would leave them red. Measured on these seeds: base 3 of 4 red, AND_PERP :2 0 of 4 red.
    base = [_largest_colour(i) for i in experiments.generate(pipe, "a red circle", SEEDS, DEMO)]
    pushed = [_largest_colour(i) for i in
              experiments.generate(pipe, "a red circle AND_PERP a blue shape :2", SEEDS, DEMO)]
    assert base.count("red") >= 2 and pushed.count("red") <= 1, (base, pushed)


def test_and_topk_changes_fewer_pixels_than_and_at_the_same_weight(pipe):
    panels = _figure(pipe, "AND_TOPK")
    base = panels["before"]
    changed = {label: _changed(images, base) for label, images in panels.items()}
    print(changed)
    assert changed["AND_TOPK :0.4"] < changed["AND :0.4"], changed


def test_weight_zero_leaves_the_image_and_weight_one_changes_it(pipe):
    panels = _figure(pipe, "weights")
    base = experiments.generate(pipe, "a red circle on the left", SEEDS, DEMO)
    changed = {label: _changed(images, base) for label, images in panels.items()}
    print(changed)
    assert changed[":0"] < 0.01 and changed[":1"] > 0.02, changed


def test_and_salt_parts_compete_for_the_latent_pixels(pipe):
    import neutral_lang as nl
    from neutral_lang.backends.torch.executor import Trace

    trace = Trace()
    nl.compile("a red circle AND_SALT a blue triangle").run(
        pipe, trace=trace, num_inference_steps=DEMO.steps, guidance_scale=DEMO.guidance_scale,
        generator=torch.Generator().manual_seed(SEEDS[0]))
    shares = [float((r.data["winners"] > 0).float().mean()) for r in trace.of("SALT")]
    print(shares)
    assert len(shares) == DEMO.steps and 0.05 < float(np.mean(shares)) < 0.95, shares


def test_demo_draws_one_figure_per_keyword_on_the_toy_model(tmp_path, capsys):
    import argparse

    from neutral_lang import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.main(parser.parse_args(["--out", str(tmp_path), "--steps", "3"])) == 0
    output = capsys.readouterr().out
    assert "the toy model" in output
    for comparison in TOY:
        assert str(tmp_path / f"{comparison.name}.png") in output and comparison.shows in output
        from PIL import Image

        figure = Image.open(tmp_path / f"{comparison.name}.png")
        assert figure.size[0] >= len(comparison.panels) * 260


def test_cli_run_without_model_uses_the_toy_model(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "circle.png"
    proc = subprocess.run([sys.executable, "-m", "neutral_lang", "run", "a red circle AND_PERP a red shape :-1",
                           "--steps", "2", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    assert Image.open(out).size == (64, 64)
