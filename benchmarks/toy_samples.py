"""The toy model on plain captions: the picture ``docs/images/toy/samples.png``.

    .venv/bin/python benchmarks/toy_samples.py [--model PATH] [--out docs/images/toy/samples.png]

Eight fixed captions (one or two objects, every colour and shape), seeds 0-7 in order, 20 DDIM
steps, guidance scale 5, each image drawn once and shown as drawn (none picked), 2x enlarged,
captioned under it. Read the figures of ``docs/toy.md`` for what the model gets right over 50
seeds; this is what a newcomer sees.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neutral_lang import toy  # noqa: E402
from neutral_lang.demo import _font  # noqa: E402

CAPTIONS = (
    "a red circle on the left",
    "a big blue square on the right",
    "a yellow triangle at the top",
    "a green circle at the bottom",
    "a small red square in the centre",
    "a blue triangle on the left and a yellow circle on the right",
    "a big green square",
    "a yellow circle",
)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, ImageDraw

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a pipeline folder (default: the shipped toy model)")
    parser.add_argument("--out", default="docs/images/toy/samples.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = toy.pipeline(args.model)
    images = pipe(list(CAPTIONS), generator=[torch.Generator().manual_seed(i) for i in range(len(CAPTIONS))],
                  num_inference_steps=20, guidance_scale=5.0).images
    tile, pad, text_h, cols = 160, 12, 56, 4
    rows = (len(images) + cols - 1) // cols
    top = 34
    canvas = Image.new("RGB", (cols * (tile + pad) + pad, top + rows * (tile + text_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), "The toy model on plain captions (seeds 0-7, 20 DDIM steps, guidance scale 5): "
              "not one picked", fill="black", font=_font(15))
    for i, (image, caption) in enumerate(zip(images, CAPTIONS)):
        x, y = pad + (i % cols) * (tile + pad), top + (i // cols) * (tile + text_h + pad)
        canvas.paste(image.resize((tile, tile), Image.NEAREST), (x, y))
        draw.multiline_text((x, y + tile + 4), "\n".join(textwrap.wrap(caption, 24)), fill="black", font=_font(13))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
