"""Read a toy-world image back into objects: colour, shape, position, size and count, from pixels.

Analytic and independent of the model that drew the image: nothing here is learned. The steps:

1. a pixel belongs to an object when it is saturated (largest minus smallest RGB channel above
   :data:`SATURATION`); the light background is grey, every object colour is saturated;
2. each object pixel takes the world colour of the nearest hue (hue survives the blend of an
   anti-aliased edge with the grey background; RGB distance does not: a red edge is nearer yellow);
3. 4-connected components of same-coloured object pixels, smaller than :data:`MIN_AREA` pixels
   dropped as specks, are the objects;
4. shape from the fill ratio of the component's bounding box (square 1, circle pi/4, upright
   triangle 1/2); position from the centroid relative to the image centre; size from the longer
   side of the bounding box.

Its own accuracy on ground-truth renders is measured by :func:`accuracy_on_ground_truth` (see
``docs/toy.md``). Numpy only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from . import world

SATURATION = 60  # 0..255; the background's is 8, the least saturated object colour's 174
MIN_AREA = 20  # pixels; the smallest object (a small triangle) covers about 70
CENTRE_BOX = 8.0  # pixels from the image centre within which an object counts as in the centre
BIG_SIDE = 18.0  # pixels; the bounding box of a small object is at most 15 wide, a big one at least 22

_NAMES = tuple(world.COLOURS)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of ``[..., 3]`` RGB (the HSV hexcone formula)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(-1), rgb.min(-1)
    span = np.maximum(hi - lo, 1e-6)
    hue = np.where(hi == r, (g - b) / span % 6, np.where(hi == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue * 60.0


_HUES = _hue(np.array([world.COLOURS[n] for n in _NAMES], dtype=np.float32))


@dataclass(frozen=True)
class Found:
    """One object read from an image; ``x``, ``y`` its centroid in pixels, ``fill`` its box fill."""

    colour: str
    shape: str
    position: str
    size: str
    x: float
    y: float
    area: int
    fill: float


def detect(image) -> list[Found]:
    """The objects of a 64x64 RGB image (uint8 array ``[64, 64, 3]`` or PIL image), largest first."""
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    saturated = pixels.max(-1) - pixels.min(-1) > SATURATION
    gap = np.abs(_hue(pixels)[:, :, None] - _HUES[None, None])
    label = np.where(saturated, np.minimum(gap, 360.0 - gap).argmin(-1), -1)
    found = [_describe(_NAMES[c], ys, xs) for c, ys, xs in _components(label) if len(ys) >= MIN_AREA]
    return sorted(found, key=lambda f: -f.area)


def _components(label: np.ndarray):
    """``(class, ys, xs)`` for each 4-connected region of equal non-negative labels."""
    h, w = label.shape
    seen = np.zeros_like(label, dtype=bool)
    for y0, x0 in zip(*np.nonzero(label >= 0)):
        if seen[y0, x0]:
            continue
        c = label[y0, x0]
        seen[y0, x0] = True
        queue, ys, xs = deque([(y0, x0)]), [], []
        while queue:
            y, x = queue.popleft()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and label[ny, nx] == c:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        yield int(c), np.array(ys), np.array(xs)


def _describe(colour: str, ys: np.ndarray, xs: np.ndarray) -> Found:
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(ys) / float(height * width)
    shape = "square" if fill > 0.88 else "triangle" if fill < 0.64 else "circle"
    x, y = xs.mean() + 0.5, ys.mean() + 0.5
    return Found(colour, shape, position_of(x, y), "big" if max(height, width) > BIG_SIDE else "small",
                 float(x), float(y), len(ys), round(fill, 3))


def position_of(x: float, y: float) -> str:
    """The position word for a centroid: centre inside the central box, else the dominant axis."""
    dx, dy = x - world.SIZE / 2, y - world.SIZE / 2
    if max(abs(dx), abs(dy)) < CENTRE_BOX:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def has(found: list[Found], **attributes: str) -> bool:
    """Whether some found object has all the given attributes, e.g. ``has(f, colour="red")``."""
    return any(all(getattr(f, k) == v for k, v in attributes.items()) for f in found)


def score(scene: world.Scene, found: list[Found]) -> dict[str, bool]:
    """Per-attribute hits of one image against the scene its caption described.

    ``count``: as many objects found as described. For each attribute, the share of described
    objects matched by a found object of the same colour (the colour by itself for ``colour``;
    the colour and that attribute for the others) -- 1.0 or 0.0 for one object.
    """
    out = {"count": float(len(found) == len(scene.things))}
    for attribute in ("colour", "shape", "position", "size"):
        hits = [has(found, colour=t.colour, **({} if attribute == "colour" else {attribute: getattr(t, attribute)}))
                for t in scene.things]
        out[attribute] = sum(hits) / len(hits)
    return out


def accuracy_on_ground_truth(count: int = 500, seed: int = 12345, objects: int | None = None) -> dict[str, float]:
    """The evaluator's own accuracy (0..1 per attribute) on ``count`` exact renders of random scenes."""
    rng = np.random.default_rng(seed)
    totals: dict[str, float] = {}
    for _ in range(count):
        scene = world.sample_scene(rng, count=objects)
        for k, v in score(scene, detect(world.render(scene))).items():
            totals[k] = totals.get(k, 0.0) + v
    return {k: v / count for k, v in totals.items()}
