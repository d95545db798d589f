"""Faithfulness experiments on the toy model: does each keyword do what its paper claims?

Each experiment renders the same seeds under a few prompts (conditions) and reads the images back
with :mod:`neutral_lang.toy.evaluate`. Subjects vary with the seed: the seeds are split over
``variants`` randomly drawn subjects, and all seeds of one subject go through one batched
pipeline call (``num_images_per_prompt`` with one generator per image). Used by
``benchmarks/bench_faithfulness.py`` (50+ seeds, the table in ``docs/toy.md``) and, with a few
seeds and steps, by ``tests/test_toy_model.py``.

A metric is a share of images in [0, 1]; ``changed`` is the mean share of pixels that differ
from the same seed's base image by more than :data:`CHANGED` in some channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import evaluate, world

CHANGED = 48  # 0..255: a pixel counts as changed when some channel moved by more than this


@dataclass(frozen=True)
class Settings:
    seeds: int = 50
    variants: int = 5
    steps: int = 20
    guidance_scale: float = 5.0
    first_seed: int = 1000


@dataclass
class Row:
    """One condition of one experiment: an example prompt and its metrics (shares in [0, 1])."""

    experiment: str
    condition: str
    example: str
    metrics: dict[str, float] = field(default_factory=dict)
    images: int = 0


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    run: Callable[..., list[Row]]


def generate(pipe, prompt: str, seeds: list[int], settings: Settings) -> list[np.ndarray]:
    """``[64, 64, 3]`` uint8 images of ``nl.compile(prompt).run(pipe)``, one per seed, in one call."""
    import torch

    import neutral_lang as nl

    result = nl.compile(prompt).run(
        pipe,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
    )
    return [np.asarray(image) for image in result.images]


def _subjects(name: str, settings: Settings):
    """``variants`` random (subject, other) object pairs, seeded by the experiment's name, each
    with its share of the seeds. ``other`` differs in colour, shape and position."""
    rng = np.random.default_rng(sum(map(ord, name)))
    seeds = list(range(settings.first_seed, settings.first_seed + settings.seeds))
    chunks = np.array_split(np.array(seeds), settings.variants)
    out = []
    for chunk in chunks:
        a = world.sample_thing(rng, size="big")
        b = world.sample_thing(
            rng,
            size="big",
            colour=str(rng.choice([c for c in world.COLOURS if c != a.colour])),
            shape=str(rng.choice([s for s in world.SHAPES if s != a.shape])),
            position=world.OPPOSITE[a.position],
        )
        out.append((a, b, [int(s) for s in chunk]))
    return out


def _say(thing: world.Thing, *, colour=True, shape=True, position=True) -> str:
    words = ["a"]
    if colour:
        words.append(thing.colour)
    words.append(thing.shape if shape else "shape")
    if position:
        words.append(world.POSITION_PHRASES[thing.position])
    return " ".join(words)


def _changed(image: np.ndarray, base: np.ndarray) -> float:
    return float((np.abs(image.astype(int) - base.astype(int)).max(-1) > CHANGED).mean())


def _collect(name: str, pipe, settings: Settings, conditions, measure) -> list[Row]:
    """Run ``conditions`` (label -> prompt builder(a, b)) over every subject; ``measure(label, a,
    b, found, image, base_image) -> dict`` of 0/1 or [0, 1] values, averaged per condition."""
    rows = {label: Row(name, label, build(*_subjects(name, settings)[0][:2])) for label, build in conditions}
    for a, b, seeds in _subjects(name, settings):
        base_images = None
        for label, build in conditions:
            images = generate(pipe, build(a, b), seeds, settings)
            if base_images is None:
                base_images = images
            row = rows[label]
            for image, base in zip(images, base_images):
                values = measure(label, a, b, evaluate.detect(image), image, base)
                for k, v in values.items():
                    row.metrics[k] = row.metrics.get(k, 0.0) + float(v)
                row.images += 1
    for row in rows.values():
        row.metrics = {k: v / row.images for k, v in row.metrics.items()}
    return list(rows.values())


def plain_captions(pipe, settings: Settings) -> list[Row]:
    """Full captions of held-out random scenes (one and two objects), straight through the pipe."""
    import torch

    rows = []
    for objects in (1, 2):
        rng = np.random.default_rng(777 + objects)
        scenes = [world.sample_scene(rng, count=objects) for _ in range(settings.seeds)]
        captions = [world.caption(s) for s in scenes]
        row = Row("plain captions", f"{objects} object{'s' * (objects > 1)}", captions[0])
        for start in range(0, len(scenes), 25):
            chunk = slice(start, start + 25)
            images = pipe(
                prompt=captions[chunk],
                generator=[torch.Generator().manual_seed(settings.first_seed + i) for i in range(start, start + len(captions[chunk]))],
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
            ).images
            for scene, image in zip(scenes[chunk], images):
                for k, v in evaluate.score(scene, evaluate.detect(np.asarray(image))).items():
                    row.metrics[k] = row.metrics.get(k, 0.0) + v
                row.images += 1
        row.metrics = {k: v / row.images for k, v in row.metrics.items()}
        rows.append(row)
    return rows


def and_adds(pipe, settings: Settings) -> list[Row]:
    conditions = (
        ("base", lambda a, b: _say(a)),
        ("AND", lambda a, b: f"{_say(a)} AND {_say(b)}"),
    )

    def measure(label, a, b, found, image, base):
        return {"subject": evaluate.has(found, colour=a.colour, shape=a.shape),
                "added": evaluate.has(found, colour=b.colour, shape=b.shape),
                "added colour": evaluate.has(found, colour=b.colour)}

    return _collect("AND adds a concept", pipe, settings, conditions, measure)


def perp_neg(pipe, settings: Settings) -> list[Row]:
    conditions = (
        ("base", lambda a, b: _say(a, position=False)),
        ("AND :-1", lambda a, b: f"{_say(a, position=False)} AND {_say(a, shape=False, position=False)} :-1"),
        ("AND_PERP :-1", lambda a, b: f"{_say(a, position=False)} AND_PERP {_say(a, shape=False, position=False)} :-1"),
    )

    def measure(label, a, b, found, image, base):
        return {"subject": evaluate.has(found, colour=a.colour, shape=a.shape),
                "subject colour": evaluate.has(found, colour=a.colour),
                "changed": _changed(image, base)}

    return _collect("negative overlapping concept", pipe, settings, conditions, measure)


def topk_attribute(pipe, settings: Settings, weight: float = 0.4) -> list[Row]:
    conditions = (
        ("base", lambda a, b: _say(a)),
        (f"AND :{weight}", lambda a, b: f"{_say(a)} AND {_say(b, shape=False, position=False)} :{weight}"),
        (f"AND_TOPK :{weight}", lambda a, b: f"{_say(a)} AND_TOPK {_say(b, shape=False, position=False)} :{weight}"),
    )

    def measure(label, a, b, found, image, base):
        return {"subject": evaluate.has(found, colour=a.colour, shape=a.shape),
                "attribute": evaluate.has(found, colour=b.colour),
                "changed": _changed(image, base)}

    return _collect("attribute at a small weight", pipe, settings, conditions, measure)


def salt_two_subjects(pipe, settings: Settings) -> list[Row]:
    conditions = (
        ("base", lambda a, b: _say(a, position=False)),
        ("AND", lambda a, b: f"{_say(a, position=False)} AND {_say(b, position=False)}"),
        ("AND_SALT", lambda a, b: f"{_say(a, position=False)} AND_SALT {_say(b, position=False)}"),
    )

    def measure(label, a, b, found, image, base):
        first = evaluate.has(found, colour=a.colour, shape=a.shape)
        second = evaluate.has(found, colour=b.colour, shape=b.shape)
        return {"first": first, "second": second, "both": first and second,
                "both colours": evaluate.has(found, colour=a.colour) and evaluate.has(found, colour=b.colour)}

    return _collect("two subjects", pipe, settings, conditions, measure)


def weight_sweep(pipe, settings: Settings, weights=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[Row]:
    conditions = tuple(
        (f"AND :{w}", lambda a, b, w=w: f"{_say(a)} AND {_say(b)} :{w}") for w in weights
    )

    def measure(label, a, b, found, image, base):
        return {"subject": evaluate.has(found, colour=a.colour, shape=a.shape),
                "added": evaluate.has(found, colour=b.colour, shape=b.shape),
                "added colour": evaluate.has(found, colour=b.colour),
                "changed": _changed(image, base)}

    return _collect("weight sweep", pipe, settings, conditions, measure)


EXPERIMENTS = (
    Experiment("plain captions", "the model draws what a full caption says: colour, shape, position, size, count",
               plain_captions),
    Experiment("AND adds a concept", "AND adds a second object and keeps the first (composable diffusion)", and_adds),
    Experiment("negative overlapping concept",
               "a negative AND on a concept the subject shares (its colour) destroys the subject; "
               "AND_PERP keeps it (Perp-Neg)", perp_neg),
    Experiment("attribute at a small weight",
               "AND_TOPK :0.4 adds a colour while changing fewer pixels than AND :0.4 (SEGA)", topk_attribute),
    Experiment("two subjects", "AND_SALT puts two subjects into one image, AND blends them (MagicFusion)",
               salt_two_subjects),
    Experiment("weight sweep", "as the weight of an AND part rises from 0 to 1 its object appears", weight_sweep),
)
