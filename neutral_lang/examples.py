"""The prompts real users wrote (``shared/examples/prompts.md``): the seed's AND_TOPK experiments
and the original extension's README examples. One list for the demo, the tests and the docs."""

from __future__ import annotations

#: ``<base>`` of the seed's experiments (same seed, 1195978169, each line one experiment).
SEED_BASE = (
    "1girl, teen, blue hair, short hair, red eye, small breast, wearing T-shirts, outdoors, parkscape, "
    "detailed face, detailed background, best quality, masterpiece"
)

#: The seed's AND_TOPK experiments, in the write-up's order.
SEED_PROMPTS = (
    SEED_BASE,
    f"{SEED_BASE} AND_TOPK glasses :1",
    f"{SEED_BASE} AND_TOPK (glasses:1.2) :0.4",
    f"{SEED_BASE}, wearing glasses",
    f"{SEED_BASE} AND_TOPK (glasses:1.3),(smile:1.3) :0.4",
    f"{SEED_BASE} AND_TOPK (glasses:1.3),(smile:1.3),(curly hair:1.4) :0.4",
    f"{SEED_BASE} AND_TOPK (ukiyo-e style:1.3) :0.4",
    f"{SEED_BASE} AND_TOPK (old school style:1.3) :0.4",
)

#: The README's nested example: blend, make perpendicular, compete for salient pixels.
README_NESTED = (
    "magical tree forests, eternal city\n"
    "AND_PERP [\n    electrical pole voyage\n    AND_SALT small nocturne companion\n]\n"
    "AND_SALT [\n    electrical tornado\n    AND_SALT electric arcs, bzzz, sparks\n]"
)

#: The original extension's README examples.
README_PROMPTS = (
    "beautiful castle landscape AND monster house castle :-1",
    "beautiful castle landscape AND_PERP monster house castle :-1",
    "a vibrant rainforest with lush green foliage\n"
    "AND_SALT the glimmering rays of a golden sunset piercing through the trees",
    README_NESTED,
)

ALL = SEED_PROMPTS + README_PROMPTS
