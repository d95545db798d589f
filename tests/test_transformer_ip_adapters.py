"""IP-Adapters of the transformer families through ``run(pipe)``: SD3 and Flux.1, on tiny offline
pipelines with random IP-Adapters (``tiny_families.load_sd3_ip_adapter`` / ``load_flux_ip_adapter``:
image encoder and adapter weights built in code, loaded with diffusers' own ``load_ip_adapter``).

Both pipelines hand the image embeddings to the transformer inside ``joint_attention_kwargs``
(``ip_adapter_image_embeds``): SD3 as one tensor ``[negative rows, image rows]`` under CFG, Flux
as a list with one tensor per adapter, the image's on the cond call and the negative image's on
the uncond call of true CFG. What is proved here, for each:

- the identity law: a one-part program equals the plain pipeline (max abs difference <= 1e-5 on
  float32 latents) with an IP-Adapter image or precomputed embeddings, a negative prompt (SD3) or
  true CFG (Flux), two images per prompt, no CFG, img2img and inpaint;
- a multi-part program gives the IP-Adapter's image projection exactly the transformer's rows at
  every call: the uncond rows read the negative image embeddings (zeros for SD3's
  ``ip_adapter_image``, a black image's for Flux), every conditioning row the image's own;
  without CFG the pipeline makes no negative embeddings and every row reads the image's;
- ``max_batch`` splits those embeddings with the rest of the batch, and no hook stays behind.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny_families  # noqa: E402
from neutral_lang.backends.diffusers.tiny import IMAGE_SIZE, quiet  # noqa: E402
from diffusers_helpers import Hooks, hooks_on, seed  # noqa: E402

ONE = "a castle, glasses"
MANY = "a castle AND glasses :0.5 AND_PERP dog :-0.3"
STEPS = 2
CALL = dict(num_inference_steps=STEPS, output_type="latent", height=IMAGE_SIZE, width=IMAGE_SIZE)
# per family: its builder and the call arguments it needs at this size
FAMILIES = {
    "sd3": (lambda: tiny_families.load_sd3_ip_adapter(tiny_families.sd3_pipeline()), dict(guidance_scale=5.0)),
    "flux": (
        lambda: tiny_families.load_flux_ip_adapter(tiny_families.flux_pipeline()),
        dict(guidance_scale=3.5, max_sequence_length=32),
    ),
}
TRUE_CFG = dict(negative_prompt="blurry", true_cfg_scale=3.0)  # Flux's uncond branch


@pytest.fixture(scope="module")
def pipes():
    return {name: build() for name, (build, _) in FAMILIES.items()}


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(7))


def plain(pipe, prompt, **kwargs):
    return pipe(prompt, generator=seed(), **{**CALL, **FAMILIES[_family(pipe)][1], **kwargs}).images


def ours(pipe, program, **kwargs):
    kwargs = {**CALL, **FAMILIES[_family(pipe)][1], **kwargs}
    return nl.compile(program).run(pipe, generator=seed(), **kwargs).images


def _family(pipe) -> str:
    return "flux" if type(pipe).__name__.startswith("Flux") else "sd3"


def diff(a, b) -> float:
    assert a.shape == b.shape and a.dtype == torch.float32
    return (a - b).abs().max().item()


def image_embeds(pipe, picture) -> torch.Tensor:
    """The image's embedding as the IP-Adapter's projection receives it, one row: ``[16, 16]``
    (SD3: SigLIP's penultimate hidden states) or ``[1, 16]`` (Flux: CLIP's image embedding)."""
    if _family(pipe) == "flux":
        return pipe.encode_image(picture, "cpu", 1)
    return pipe.encode_image(picture, "cpu")[0]


def negative_embeds(pipe, picture) -> torch.Tensor:
    """The negative row the pipeline makes for ``ip_adapter_image`` under CFG: SD3 zeros, Flux a
    black image's embedding."""
    if _family(pipe) == "flux":
        return image_embeds(pipe, np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
    return torch.zeros_like(image_embeds(pipe, picture))


def test_the_tiny_ip_adapters_change_the_image(pipes, image):
    # otherwise the identity tests below could not tell an image-blind run from a right one
    other = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(8))
    for pipe in pipes.values():
        assert pipe.is_ip_adapter_active if _family(pipe) == "sd3" else pipe.transformer.encoder_hid_proj is not None
        assert diff(plain(pipe, ONE, ip_adapter_image=image), plain(pipe, ONE, ip_adapter_image=other)) > 1e-3


IDENTITY = [
    ("sd3", {}),
    ("sd3", {"negative_prompt": "blurry"}),
    ("sd3", {"num_images_per_prompt": 2}),
    ("sd3", {"guidance_scale": 1.0}),
    ("flux", {}),  # distilled: no uncond branch
    ("flux", TRUE_CFG),
    ("flux", {"num_images_per_prompt": 2, **TRUE_CFG}),
]


@pytest.mark.parametrize("name, extra", IDENTITY, ids=[f"{n}-{'-'.join(e) or 'plain'}" for n, e in IDENTITY])
def test_one_part_program_with_an_ip_adapter_image_is_the_plain_pipeline(pipes, image, name, extra):
    pipe, extra = pipes[name], {"ip_adapter_image": image, **extra}
    assert diff(ours(pipe, ONE, **extra), plain(pipe, ONE, **extra)) <= 1e-5


def test_one_part_program_with_precomputed_image_embeddings_is_the_plain_pipeline(pipes, image):
    sd3, flux = pipes["sd3"], pipes["flux"]
    positive = sd3.encode_image(image, "cpu")
    embeds = torch.cat([torch.randn(positive.shape, generator=seed(8)), positive])  # [negative, image]
    assert diff(ours(sd3, ONE, ip_adapter_image_embeds=embeds), plain(sd3, ONE, ip_adapter_image_embeds=embeds)) <= 1e-5
    given = dict(
        ip_adapter_image_embeds=[image_embeds(flux, image)[None]],
        negative_ip_adapter_image_embeds=[torch.randn(1, 1, tiny_families.FLUX_IMAGE_EMBED, generator=seed(9))],
        **TRUE_CFG,
    )
    assert diff(ours(flux, ONE, **given), plain(flux, ONE, **given)) <= 1e-5


@pytest.mark.parametrize("task", ["Img2Img", "Inpaint"])
@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_img2img_and_inpaint_with_an_ip_adapter_image_are_the_plain_pipeline(pipes, image, name, task):
    base = pipes[name]
    other = quiet(getattr(diffusers, type(base).__name__.replace("Pipeline", f"{task}Pipeline"))(**base.components))
    extra = dict(
        image=torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(9)),
        strength=0.75,
        num_inference_steps=4,
        ip_adapter_image=image,
    )
    if task == "Inpaint":
        extra["mask_image"] = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        extra["mask_image"][..., 8:24, 8:24] = 1
    assert diff(ours(other, ONE, **extra), plain(other, ONE, **extra)) <= 1e-5


class ImageRows(Hooks):
    """Per transformer call, from inside the model: its batch (``batches``), and the image
    embeddings its IP-Adapter projection receives (``embeds``; Flux's first adapter's)."""

    def __init__(self, pipe):
        super().__init__()
        self.batches: list[int] = []
        self.embeds: list[torch.Tensor] = []
        transformer = pipe.transformer
        if _family(pipe) == "flux":
            patches, projection = transformer.x_embedder, transformer.encoder_hid_proj
        else:
            patches, projection = transformer.pos_embed, transformer.image_proj
        self.add(patches.register_forward_hook(lambda m, a, out: self.batches.append(out.shape[0])))
        self.add(projection.register_forward_hook(self._projection))

    def _projection(self, module, args, out):
        embeds = args[0]
        self.embeds.append((embeds[0] if isinstance(embeds, (list, tuple)) else embeds).clone())


MULTI = [
    # name, images, extra, rows per call (negative rows first in each), negative rows per call
    ("sd3", 1, {}, [4], [1]),
    ("sd3", 2, {}, [8], [2]),
    ("sd3", 1, {"guidance_scale": 1.0}, [4], [0]),  # no CFG: no negative embeddings
    ("flux", 1, {}, [4], [0]),  # distilled: one call, the uncond rows read the image's embeddings
    ("flux", 1, TRUE_CFG, [3, 1], [0, 1]),  # true CFG: the cond call, then the uncond call
    ("flux", 2, TRUE_CFG, [6, 2], [0, 2]),
]


@pytest.mark.parametrize("name, images, extra, rows, negatives", MULTI,
                         ids=[f"{m[0]}-{m[1]}-{'-'.join(m[2]) or 'plain'}" for m in MULTI])
def test_multi_part_program_gives_every_row_its_image_embeddings(pipes, image, name, images, extra, rows, negatives):
    pipe = pipes[name]
    positive, negative = image_embeds(pipe, image), negative_embeds(pipe, image)
    with ImageRows(pipe) as seen:
        ours(pipe, MANY, ip_adapter_image=image, num_images_per_prompt=images, **extra)
    assert seen.batches == rows * STEPS
    assert [e.shape[0] for e in seen.embeds] == seen.batches
    for call, embeds in enumerate(seen.embeds):
        for row in range(embeds.shape[0]):
            expected = negative if row < negatives[call % len(rows)] else positive
            assert torch.equal(embeds[row], expected), f"call {call}, row {row}"
    assert hooks_on(pipe.transformer) == 0


@pytest.mark.parametrize("name, extra", [("sd3", {}), ("flux", TRUE_CFG)], ids=["sd3", "flux-true-cfg"])
def test_max_batch_splits_the_image_embeddings_with_the_batch(pipes, image, name, extra):
    pipe = pipes[name]
    whole = ours(pipe, MANY, ip_adapter_image=image, **extra)
    with ImageRows(pipe) as seen:
        split = ours(pipe, MANY, ip_adapter_image=image, max_batch=2, **extra)
    assert [e.shape[0] for e in seen.embeds] == seen.batches
    assert max(seen.batches) == 2 and sum(seen.batches) == 4 * STEPS
    assert diff(split, whole) <= 1e-4
    assert hooks_on(pipe.transformer) == 0
