"""The toy world: procedural 64x64 scenes of flat shapes, and their captions.

A scene holds one or two objects on a light background. Each object has a colour (red, green,
blue, yellow), a shape (circle, square, triangle), a position (left, right, top, bottom,
centre) and a size (small, big); its centre and radius are jittered by a few pixels. Everything
is a pure function of a ``numpy.random.Generator``, so a seed fixes the scene and its caption:

    >>> rng = np.random.default_rng(7)
    >>> scene = sample_scene(rng)
    >>> caption(scene, rng)                 # e.g. 'a big red circle on the left'
    >>> render(scene).shape                 # (64, 64, 3) uint8

Imports numpy and Pillow only (no torch), so the evaluator and the tests use it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64  # image height and width in pixels
BACKGROUND = (240, 238, 232)

#: name -> RGB of the flat fill.
COLOURS = {
    "red": (214, 48, 40),
    "green": (46, 160, 66),
    "blue": (44, 86, 214),
    "yellow": (236, 196, 28),
}
SHAPES = ("circle", "square", "triangle")
#: name -> (x, y) centre in pixels before jitter.
POSITIONS = {
    "left": (16.0, 32.0),
    "right": (48.0, 32.0),
    "top": (32.0, 16.0),
    "bottom": (32.0, 48.0),
    "centre": (32.0, 32.0),
}
#: each position and the one across the image from it.
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "centre": "top"}
#: name -> (lowest, highest) radius in pixels (half the side of the bounding square).
SIZES = {"small": (6.0, 7.5), "big": (11.0, 13.0)}
#: how a caption says where an object is.
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
JITTER = 2.0  # the largest shift of an object's centre from its position, in pixels

#: every word a caption can use: the word-level tokenizer gives each one token.
VOCABULARY = tuple(
    dict.fromkeys(
        ["a", "and", "shape", *COLOURS, *SHAPES, *SIZES]
        + [w for phrase in POSITION_PHRASES.values() for w in phrase.split()]
    )
)


@dataclass(frozen=True)
class Thing:
    """One object of a scene: its attributes and its exact geometry (pixels, y down)."""

    colour: str
    shape: str
    position: str
    size: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]


def sample_thing(rng: np.random.Generator, *, position: str | None = None, colour: str | None = None,
                 shape: str | None = None, size: str | None = None) -> Thing:
    """A random object; any attribute given is kept as given."""
    colour = colour or str(rng.choice(list(COLOURS)))
    shape = shape or str(rng.choice(SHAPES))
    position = position or str(rng.choice(list(POSITIONS)))
    size = size or str(rng.choice(list(SIZES)))
    cx, cy = POSITIONS[position]
    dx, dy = rng.uniform(-JITTER, JITTER, size=2)
    radius = float(rng.uniform(*SIZES[size]))
    return Thing(colour, shape, position, size, float(cx + dx), float(cy + dy), radius)


def sample_scene(rng: np.random.Generator, *, count: int | None = None) -> Scene:
    """One or two objects (half each by default); two objects never share a position or touch."""
    count = count or int(rng.integers(1, 3))
    if count == 1:
        return Scene((sample_thing(rng),))
    # Some pairs can never fit (a big object in the centre touches every other place), so the
    # whole pair is drawn again until it fits.
    while True:
        first = sample_thing(rng)
        place = str(rng.choice([p for p in POSITIONS if p != first.position]))
        second = sample_thing(rng, position=place)
        if not (_dilate(mask(first)) & mask(second)).any():
            return Scene((first, second))


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """The scene in words, e.g. ``'a red circle on the left and a small blue square at the top'``.

    Without ``rng`` every attribute is said. With it, training captions leave some attributes out
    (size half the time, position a quarter, colour or shape a tenth each), so the model also
    learns what ``'a blue shape'`` or ``'a circle'`` means; the objects' order is random.
    """
    things = list(scene.things)
    if rng is not None and len(things) > 1 and rng.random() < 0.5:
        things.reverse()
    return " and ".join(_describe(t, rng) for t in things)


def _describe(thing: Thing, rng: np.random.Generator | None) -> str:
    def keep(p_drop: float) -> bool:
        return rng is None or rng.random() >= p_drop

    words = ["a"]
    if keep(0.5):
        words.append(thing.size)
    if keep(0.1):
        words.append(thing.colour)
    words.append(thing.shape if keep(0.1) else "shape")
    if keep(0.25):
        words.append(POSITION_PHRASES[thing.position])
    return " ".join(words)


_SUPERSAMPLE = 4


def mask(thing: Thing, *, supersample: int = 1) -> np.ndarray:
    """Boolean ``[SIZE*s, SIZE*s]`` mask of the object's pixels (pixel centres inside the shape)."""
    n = SIZE * supersample
    coords = (np.arange(n) + 0.5) / supersample
    xs, ys = np.meshgrid(coords, coords)
    dx, dy, r = xs - thing.x, ys - thing.y, thing.radius
    if thing.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if thing.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    # an upright triangle: apex at the top middle, base along the bottom of the bounding square
    inside_y = (dy <= r) & (dy >= -r)
    half_width = (dy + r) / 2.0  # 0 at the apex, r at the base
    return inside_y & (np.abs(dx) <= half_width)


def _dilate(m: np.ndarray, steps: int = 2) -> np.ndarray:
    out = m.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def render(scene: Scene) -> np.ndarray:
    """The scene as a ``[64, 64, 3]`` uint8 RGB array, anti-aliased by 4x4 supersampling."""
    s = _SUPERSAMPLE
    canvas = np.empty((SIZE * s, SIZE * s, 3), dtype=np.float32)
    canvas[:] = BACKGROUND
    for thing in scene.things:
        canvas[mask(thing, supersample=s)] = COLOURS[thing.colour]
    small = canvas.reshape(SIZE, s, SIZE, s, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)
