"""The toy world and its evaluator, without any model: determinism, captions, geometry, and the
evaluator reading exact renders back."""

from __future__ import annotations

import numpy as np
import pytest

from neutral_lang.toy import evaluate, world


def _scenes(seed: int, n: int, **kw):
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng, **kw) for _ in range(n)]


def test_same_seed_same_scenes_and_captions():
    a, b = _scenes(3, 20), _scenes(3, 20)
    assert a == b
    assert [world.caption(s, np.random.default_rng(1)) for s in a] == [world.caption(s, np.random.default_rng(1)) for s in b]
    assert all(np.array_equal(world.render(x), world.render(y)) for x, y in zip(a, b))
    assert _scenes(4, 20) != a


def test_full_caption_says_every_attribute():
    scene = world.Scene((world.Thing("red", "circle", "left", "big", 16, 32, 12),
                         world.Thing("blue", "square", "top", "small", 32, 16, 7)))
    assert world.caption(scene) == "a big red circle on the left and a small blue square at the top"


def test_training_captions_only_use_the_vocabulary():
    rng = np.random.default_rng(0)
    words = {w for s in _scenes(5, 200) for w in world.caption(s, rng).split()}
    assert words <= set(world.VOCABULARY)
    assert "shape" in words  # shapes are sometimes left unsaid


def test_two_objects_never_touch_and_keep_their_places():
    for scene in _scenes(6, 100, count=2):
        first, second = scene.things
        assert first.position != second.position
        assert not (world._dilate(world.mask(first), 1) & world.mask(second)).any()


def test_render_is_64x64_rgb_on_the_background():
    image = world.render(_scenes(7, 1, count=1)[0])
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == world.BACKGROUND


@pytest.mark.parametrize("objects", [1, 2])
def test_evaluator_reads_ground_truth_back(objects):
    accuracy = evaluate.accuracy_on_ground_truth(60, seed=99, objects=objects)
    assert accuracy == {"count": 1.0, "colour": 1.0, "shape": 1.0, "position": 1.0, "size": 1.0}


def test_evaluator_sees_nothing_on_a_blank_image_and_the_wrong_colour_when_swapped():
    blank = np.full((64, 64, 3), world.BACKGROUND, dtype=np.uint8)
    assert evaluate.detect(blank) == []
    scene = world.Scene((world.Thing("green", "triangle", "right", "big", 48, 32, 12),))
    found = evaluate.detect(world.render(scene))
    assert [(f.colour, f.shape, f.position, f.size) for f in found] == [("green", "triangle", "right", "big")]
    wrong = world.Scene((world.Thing("yellow", "triangle", "right", "big", 48, 32, 12),))
    assert evaluate.score(wrong, found)["colour"] == 0.0


def test_every_caption_word_is_one_token():
    pytest.importorskip("transformers")
    from neutral_lang.toy import architecture

    tok = architecture.tokenizer()
    for word in world.VOCABULARY:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
