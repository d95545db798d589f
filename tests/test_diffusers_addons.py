"""Add-ons inside the denoising step on tiny offline pipelines: ControlNet (single, multi, SDXL,
guess mode) and T2I-Adapter see the program's expanded batch, a one-part prompt equals the plain
pipeline, and ``max_batch`` splits the batch without changing the result."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    StableDiffusionAdapterPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLAdapterPipeline,
    StableDiffusionXLControlNetPipeline,
)
from diffusers.models.controlnets import MultiControlNetModel  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny  # noqa: E402
from neutral_lang.backends.diffusers.tiny import quiet  # noqa: E402
from neutral_lang.backends.torch.executor import Trace  # noqa: E402
from diffusers_helpers import UNetCalls, seed  # noqa: E402

STEPS = 3
SIZE = tiny.IMAGE_SIZE


def control_image(n: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=seed(n))


@pytest.fixture(scope="module")
def sd_control(sd_pipe):
    return quiet(StableDiffusionControlNetPipeline(**sd_pipe.components, controlnet=tiny.controlnet(sd_pipe.unet)))


@pytest.fixture(scope="module")
def sd_multi_control(sd_pipe, sd_control):
    nets = MultiControlNetModel([sd_control.controlnet, tiny.controlnet(sd_pipe.unet, seed=5)])
    return quiet(StableDiffusionControlNetPipeline(**sd_pipe.components, controlnet=nets))


@pytest.fixture(scope="module")
def sdxl_control(sdxl_pipe):
    return quiet(StableDiffusionXLControlNetPipeline(**sdxl_pipe.components, controlnet=tiny.controlnet(sdxl_pipe.unet)))


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def t2i(request):
    """A T2I-Adapter pipeline (SD or SDXL) on a UNet whose residual sizes fit the tiny adapter."""
    if request.param == "sd":
        components, cls = tiny.sd_components(unet_options=tiny.T2I_UNET), StableDiffusionAdapterPipeline
    else:
        components, cls = tiny.sdxl_components(unet_options=tiny.T2I_UNET), StableDiffusionXLAdapterPipeline
    accepted = inspect.signature(cls.__init__).parameters
    return quiet(cls(**{k: v for k, v in components.items() if k in accepted}, adapter=tiny.t2i_adapter()))


def latents(pipe, prompt=None, program=None, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "generator": seed(), "output_type": "latent", **kwargs}
    if program is not None:
        return nl.compile(program).run(pipe, **kwargs).images
    return pipe(prompt, **kwargs).images


CONTROL_CASES = [
    pytest.param("sd_control", {}, id="sd"),
    pytest.param("sd_control", {"guess_mode": True}, id="sd-guess"),
    pytest.param("sd_control", {"guidance_scale": 1.0}, id="sd-no-cfg"),
    pytest.param("sd_multi_control", {}, id="multi"),
    pytest.param("sdxl_control", {}, id="sdxl"),
    pytest.param("sdxl_control", {"guess_mode": True}, id="sdxl-guess"),
]


@pytest.mark.parametrize("name, extra", CONTROL_CASES)
def test_controlnet_one_part_prompt_equals_the_plain_pipeline(request, name, extra):
    pipe = request.getfixturevalue(name)
    image = [control_image(), control_image(4)] if name == "sd_multi_control" else control_image()
    kwargs = {"image": image, **extra}
    expected = latents(pipe, "a castle", **kwargs)
    got = latents(pipe, program="a castle", **kwargs)
    assert (got - expected).abs().max() <= 1e-5
    hooked = latents(pipe, program="a castle", trace=Trace(), **kwargs)  # a trace needs the hooks
    assert (hooked - expected).abs().max() <= 1e-5
    # the ControlNet matters here: without it the image is another one
    off = latents(pipe, "a castle", controlnet_conditioning_scale=0.0, **kwargs)
    assert (off - expected).abs().max() > 1e-2


@pytest.mark.parametrize("guess", [False, True], ids=["plain", "guess"])
def test_controlnet_sees_every_conditioning_of_a_multi_part_prompt(sd_control, guess):
    """One ControlNet call and one UNet call per step, both with the same text rows."""
    prompt = "a castle AND_PERP a monster :-1 AND glasses :0.5"
    with UNetCalls(sd_control.controlnet) as control, UNetCalls(sd_control.unet) as unet:
        latents(sd_control, program=prompt, image=control_image(), guess_mode=guess)
    assert unet.batches == [4] * STEPS  # uncond + 3 conditionings
    assert control.batches == ([3] if guess else [4]) * STEPS  # guess mode: the conds alone
    for c, u in zip(control.hidden, unet.hidden):
        assert torch.equal(c, u[1:] if guess else u)
        assert torch.unique(c.flatten(1), dim=0).shape[0] == c.shape[0]  # every row its own text


def test_controlnet_with_uncond_and_cond_of_different_lengths(sd_control):
    """ControlNet takes no text mask: the uncond and cond rows go in two calls, each unpadded."""
    long_prompt = "a castle, " * 40 + "AND glasses"
    with UNetCalls(sd_control.controlnet) as control, UNetCalls(sd_control.unet) as unet:
        out = latents(sd_control, program=long_prompt, image=control_image())
    assert torch.isfinite(out).all()
    assert unet.batches == [3] * STEPS
    assert control.batches == [1, 2] * STEPS
    assert [h.shape[1] for h in control.hidden[:2]] == [77, 2 * 77]


def test_t2i_adapter_one_part_prompt_equals_the_plain_pipeline(t2i):
    kwargs = {"image": control_image()}
    expected = latents(t2i, "a castle", **kwargs)
    assert (latents(t2i, program="a castle", **kwargs) - expected).abs().max() <= 1e-5
    hooked = latents(t2i, program="a castle", trace=Trace(), **kwargs)
    assert (hooked - expected).abs().max() <= 1e-5
    off = latents(t2i, "a castle", adapter_conditioning_scale=0.0, **kwargs)
    assert (off - expected).abs().max() > 1e-2


@pytest.mark.parametrize("max_batch", [1, 3])
def test_max_batch_splits_the_batch_with_the_same_result(sd_control, max_batch):
    prompt = "a castle AND_PERP a monster :-1 AND_TOPK glasses :0.5"
    kwargs = {"image": control_image(), "num_images_per_prompt": 2}
    whole = latents(sd_control, program=prompt, **kwargs)
    with UNetCalls(sd_control.controlnet) as control, UNetCalls(sd_control.unet) as unet:
        split = latents(sd_control, program=prompt, max_batch=max_batch, **kwargs)
    rows = 2 * 4  # 2 images x (uncond + 3 conditionings)
    calls = -(-rows // max_batch)
    assert unet.batches == ([max_batch] * (rows // max_batch) + [rows % max_batch] * (rows % max_batch > 0)) * STEPS
    assert len(control.batches) == calls * STEPS
    # Float rounding only: a convolution's reduction order can depend on the batch size.
    assert (split - whole).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="max_batch"):
        nl.compile("a castle").run(sd_control, image=control_image(), max_batch=0)


def test_model_cpu_offload_gives_the_images_of_the_pipeline_without_it():
    # accelerate's offload hooks wrap each model's forward on the instance; device="cpu" lets them
    # run here (no accelerator): the program's hooks and encodings must work through them
    kw = dict(num_inference_steps=3, output_type="latent", height=32, width=32, guidance_scale=5.0)
    three = "a castle AND glasses :0.5 AND_PERP dog :-0.3"
    expected = nl.compile(three).run(tiny.sd_pipeline(), generator=seed(), **kw).images
    pipe = tiny.sd_pipeline()
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook")  # the offload is really on
    plain = pipe("a castle", generator=seed(), **kw).images
    assert torch.equal(nl.compile("a castle").run(pipe, generator=seed(), **kw).images, plain)
    assert torch.equal(nl.compile(three).run(pipe, generator=seed(), **kw).images, expected)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pipe.unet.modules()) == 0
