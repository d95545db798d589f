"""SD3's IP-Adapter through ``run(pipe)``, on a tiny offline SD3 pipeline with a random IP-Adapter
(``tiny_families.load_sd3_ip_adapter``: SigLIP image encoder and adapter weights built in code).

SD3 hands the image embeddings to its transformer inside ``joint_attention_kwargs``
(``ip_adapter_image_embeds``, ``[negative rows, image rows]`` under CFG). What is proved here:

- the identity law: a one-part program equals the plain pipeline (max abs difference <= 1e-5 on
  float32 latents) with ``ip_adapter_image`` or ``ip_adapter_image_embeds``, a negative prompt,
  two images per prompt, no CFG, img2img and inpaint;
- a multi-part program gives the IP-Adapter's resampler exactly the transformer's expanded batch at
  every step: the uncond rows read the negative image embeddings (zeros, as the pipeline makes
  them for ``ip_adapter_image``), every conditioning row the image's own (without CFG the
  pipeline makes no negative ones, and every row reads the image's);
- ``max_batch`` splits those embeddings with the rest of the batch, and no hook stays behind.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny_families  # noqa: E402
from neutral_lang.backends.diffusers.tiny import IMAGE_SIZE, quiet  # noqa: E402
from diffusers_helpers import Hooks, hooks_on, seed  # noqa: E402

ONE = "a castle, glasses"
MANY = "a castle AND glasses :0.5 AND_PERP dog :-0.3"
CALL = dict(num_inference_steps=2, output_type="latent", height=IMAGE_SIZE, width=IMAGE_SIZE, guidance_scale=5.0)


@pytest.fixture(scope="module")
def pipe():
    return tiny_families.load_sd3_ip_adapter(tiny_families.sd3_pipeline())


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(7))


def plain(pipe, prompt, **kwargs):
    return pipe(prompt, generator=seed(), **{**CALL, **kwargs}).images


def ours(pipe, program, **kwargs):
    return nl.compile(program).run(pipe, generator=seed(), **{**CALL, **kwargs}).images


def diff(a, b) -> float:
    assert a.shape == b.shape and a.dtype == torch.float32
    return (a - b).abs().max().item()


def test_the_tiny_ip_adapter_changes_the_image(pipe, image):
    # otherwise the identity tests below could not tell an image-blind run from a right one
    assert pipe.is_ip_adapter_active
    assert diff(plain(pipe, ONE, ip_adapter_image=image), plain(pipe, ONE)) > 1e-3


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="cfg"),
        pytest.param({"negative_prompt": "blurry"}, id="negative"),
        pytest.param({"num_images_per_prompt": 2}, id="two-images"),
        pytest.param({"guidance_scale": 1.0}, id="no-cfg"),
    ],
)
def test_one_part_program_with_an_ip_adapter_image_is_the_plain_pipeline(pipe, image, extra):
    assert diff(ours(pipe, ONE, ip_adapter_image=image, **extra), plain(pipe, ONE, ip_adapter_image=image, **extra)) <= 1e-5


def test_one_part_program_with_precomputed_image_embeddings_is_the_plain_pipeline(pipe, image):
    positive = pipe.encode_image(image, "cpu")
    embeds = torch.cat([torch.randn(positive.shape, generator=seed(8)), positive])  # [negative, image]
    assert diff(ours(pipe, ONE, ip_adapter_image_embeds=embeds), plain(pipe, ONE, ip_adapter_image_embeds=embeds)) <= 1e-5


@pytest.mark.parametrize("task", [StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline], ids=["img2img", "inpaint"])
def test_img2img_and_inpaint_with_an_ip_adapter_image_are_the_plain_pipeline(pipe, image, task):
    other = quiet(task(**pipe.components))  # the same modules, IP-Adapter included
    picture = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(9))
    extra = dict(image=picture, strength=0.75, num_inference_steps=4, ip_adapter_image=image)
    if task is StableDiffusion3InpaintPipeline:
        extra["mask_image"] = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        extra["mask_image"][..., 8:24, 8:24] = 1
    assert diff(ours(other, ONE, **extra), plain(other, ONE, **extra)) <= 1e-5


class ImageRows(Hooks):
    """Per transformer call, from inside the model: its batch, and the image embeddings the
    IP-Adapter's resampler (``transformer.image_proj``) receives."""

    def __init__(self, transformer):
        super().__init__()
        self.batches: list[int] = []
        self.embeds: list[torch.Tensor] = []
        self.add(transformer.pos_embed.register_forward_hook(lambda m, a, out: self.batches.append(out.shape[0])))
        self.add(transformer.image_proj.register_forward_hook(lambda m, a, out: self.embeds.append(a[0].clone())))


@pytest.mark.parametrize("images, scale", [(1, 5.0), (2, 5.0), (1, 1.0)], ids=["cfg", "cfg-two-images", "no-cfg"])
def test_multi_part_program_gives_every_row_its_image_embeddings(pipe, image, images, scale):
    positive = pipe.encode_image(image, "cpu")[0]
    with ImageRows(pipe.transformer) as seen:
        ours(pipe, MANY, ip_adapter_image=image, num_images_per_prompt=images, guidance_scale=scale)
    rows = images * (1 + 3)  # uncond + three conditionings, per image
    assert seen.batches == [rows] * CALL["num_inference_steps"]
    assert [e.shape[0] for e in seen.embeds] == seen.batches
    negative = torch.zeros_like(positive) if scale > 1 else positive  # no CFG: no negative embeddings
    for embeds in seen.embeds:
        for row in range(rows):
            expected = negative if row < images else positive
            assert torch.equal(embeds[row], expected), f"row {row}"
    assert hooks_on(pipe.transformer) == 0


def test_max_batch_splits_the_image_embeddings_with_the_batch(pipe, image):
    whole = ours(pipe, MANY, ip_adapter_image=image)
    with ImageRows(pipe.transformer) as seen:
        split = ours(pipe, MANY, ip_adapter_image=image, max_batch=3)
    assert seen.batches == [3, 1] * CALL["num_inference_steps"]
    assert [e.shape[0] for e in seen.embeds] == seen.batches
    assert diff(split, whole) <= 1e-4
    assert hooks_on(pipe.transformer) == 0
