"""SD3 and Flux ControlNets on tiny offline pipelines: the ControlNet is a side module of the
transformer, so it sees the program's expanded batch with every row's own text, a one-part
prompt equals the plain pipeline (unhooked and hooked), and what cannot be honoured is refused
before any work."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    FluxControlNetImg2ImgPipeline,
    FluxControlNetInpaintPipeline,
    FluxControlNetPipeline,
    StableDiffusion3ControlNetInpaintingPipeline,
    StableDiffusion3ControlNetPipeline,
)
from diffusers.models.controlnets import FluxMultiControlNetModel, SD3MultiControlNetModel  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny_families as tf  # noqa: E402
from neutral_lang.backends.diffusers.adapters import UnsupportedFeatureError  # noqa: E402
from neutral_lang.backends.diffusers.tiny import IMAGE_SIZE, quiet  # noqa: E402
from diffusers_helpers import Hooks, hooks_on, seed  # noqa: E402

STEPS = 3
MULTI = "a castle AND_PERP a monster :-1 AND glasses :0.5"


def image(n: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=seed(n))


def mask() -> torch.Tensor:
    m = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    m[..., IMAGE_SIZE // 4 : 3 * IMAGE_SIZE // 4, :] = 1.0
    return m


# -- pipelines ------------------------------------------------------------------------------------


def _sd3(cls=StableDiffusion3ControlNetPipeline, **net):
    components = tf.sd3_components(layers=2)
    controlnet = tf.sd3_controlnet(components["transformer"], **net)
    return quiet(cls(**components, controlnet=controlnet))


def _flux(cls=FluxControlNetPipeline, multi: bool = False, **net):
    components = tf.flux_components()
    components.pop("image_encoder"), components.pop("feature_extractor")
    controlnet = tf.flux_controlnet(components["transformer"], **net)
    if multi:
        controlnet = FluxMultiControlNetModel([controlnet, tf.flux_controlnet(components["transformer"], seed=5)])
    return quiet(cls(**components, controlnet=controlnet))


@pytest.fixture(scope="module")
def sd3_control():
    return _sd3()


@pytest.fixture(scope="module")
def flux_control():
    return _flux()


def _sd3_multi():
    pipe = _sd3()
    pipe.controlnet = SD3MultiControlNetModel([pipe.controlnet, tf.sd3_controlnet(pipe.transformer, seed=5)])
    return pipe


SIZE = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
IP_IMAGE = torch.rand(1, 3, 32, 32, generator=seed(9))  # the tiny IP-Adapters' image size
# (pipeline builder, call arguments)
CASES = {
    "sd3": (_sd3, {"control_image": image()}),
    "sd3-no-cfg": (_sd3, {"control_image": image(), "guidance_scale": 1.0}),
    "sd3-negative": (_sd3, {"control_image": image(), "negative_prompt": "blurry"}),
    "sd3-two-images": (_sd3, {"control_image": image(), "num_images_per_prompt": 2}),
    "sd3.5-no-text": (lambda: _sd3(text=False), {"control_image": image()}),
    "sd3-instantx-zero-pooled": (lambda: _sd3(zero_pooled=True), {"control_image": image()}),
    "sd3-multi": (
        _sd3_multi,
        {"control_image": [image(), image(4)], "controlnet_conditioning_scale": [1.0, 0.5]},
    ),
    "sd3-ip-adapter": (
        lambda: tf.load_sd3_ip_adapter(_sd3()),
        {"control_image": image(), "ip_adapter_image": IP_IMAGE},
    ),
    "sd3-inpaint": (
        lambda: _sd3(StableDiffusion3ControlNetInpaintingPipeline, extra_conditioning_channels=1),
        {"control_image": image(), "control_mask": mask()},
    ),
    "flux": (_flux, {"control_image": image(), **SIZE}),
    "flux-true-cfg": (
        _flux,
        {"control_image": image(), "negative_prompt": "blurry", "true_cfg_scale": 3.0, **SIZE},
    ),
    "flux-union": (lambda: _flux(num_mode=4), {"control_image": image(), "control_mode": 2, **SIZE}),
    "flux-multi": (
        lambda: _flux(multi=True),
        {"control_image": [image(), image(4)], "controlnet_conditioning_scale": [1.0, 0.5], **SIZE},
    ),
    "flux-ip-adapter": (
        lambda: tf.load_flux_ip_adapter(_flux()),
        {"control_image": image(), "ip_adapter_image": IP_IMAGE, "negative_prompt": "blurry", "true_cfg_scale": 3.0}
        | SIZE,
    ),
    "flux-img2img": (
        lambda: _flux(FluxControlNetImg2ImgPipeline),
        {"image": image(6), "control_image": image(), "strength": 0.9, **SIZE},
    ),
    "flux-inpaint": (
        lambda: _flux(FluxControlNetInpaintPipeline),
        {"image": image(6), "mask_image": mask(), "control_image": image(), "strength": 0.9, **SIZE},
    ),
}


def latents(pipe, prompt=None, program=None, **kwargs):
    # The pipelines VAE-encode the control image with an unseeded sample(): seed torch too.
    torch.manual_seed(7)
    kwargs = {"num_inference_steps": STEPS, "generator": seed(), "output_type": "latent", **kwargs}
    if program is not None:
        return nl.compile(program).run(pipe, **kwargs).images
    return pipe(prompt, **kwargs).images


@pytest.mark.parametrize("case", list(CASES))
def test_one_part_prompt_equals_the_plain_pipeline(case):
    build, kwargs = CASES[case]
    pipe = build()
    expected = latents(pipe, "a castle", **kwargs)
    assert (latents(pipe, program="a castle", **kwargs) - expected).abs().max() <= 1e-5
    # max_batch forces the hooked path: the ControlNet then runs on the program's batch
    hooked = latents(pipe, program="a castle", max_batch=64, **kwargs)
    assert (hooked - expected).abs().max() <= 1e-5
    # the ControlNet matters here: without it the image is another one
    scale = [0.0, 0.0] if isinstance(kwargs["control_image"], list) else 0.0
    off = latents(pipe, "a castle", **{**kwargs, "controlnet_conditioning_scale": scale})
    assert (off - expected).abs().max() > 1e-2
    assert hooks_on(pipe.transformer) == hooks_on(pipe.controlnet) == 0
    if "control_mode" in kwargs:  # the union ControlNet's mode matters too
        other = latents(pipe, "a castle", **{**kwargs, "control_mode": 0})
        assert (other - expected).abs().max() > 1e-3


class TextCalls(Hooks):
    """Records each call of an SD3/Flux transformer or ControlNet from inside it: the text rows its
    ``context_embedder`` reads (``[rows, L, D]``; none for a ControlNet without text) and the
    pooled rows its ``time_text_embed`` reads (``[rows, D]``)."""

    def __init__(self, module):
        super().__init__()
        self.hidden: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] = []
        if module.context_embedder is not None:
            self.add(module.context_embedder.register_forward_pre_hook(self._hidden))
        self.add(module.time_text_embed.register_forward_pre_hook(self._pooled))

    def _hidden(self, module, args):
        self.hidden.append(args[0].clone())

    def _pooled(self, module, args):
        self.pooled.append(args[-1].clone())


def _distinct_rows(t: torch.Tensor) -> int:
    return torch.unique(t.flatten(1), dim=0).shape[0]


@pytest.mark.parametrize("max_batch", [None, 2])
def test_sd3_controlnet_sees_every_conditioning_row(sd3_control, max_batch):
    """One ControlNet call per transformer call, with exactly the transformer's text rows."""
    with TextCalls(sd3_control.controlnet) as control, TextCalls(sd3_control.transformer) as denoiser:
        latents(sd3_control, program=MULTI, control_image=image(), max_batch=max_batch)
    calls = STEPS * (1 if max_batch is None else 2)  # 4 rows: uncond + 3 conditionings
    assert len(control.hidden) == len(denoiser.hidden) == calls
    for c, d, cp, dp in zip(control.hidden, denoiser.hidden, control.pooled, denoiser.pooled):
        assert torch.equal(c, d) and torch.equal(cp, dp)
    step = torch.cat(denoiser.hidden[: calls // STEPS])  # the rows of the first step
    assert step.shape[0] == 4 and _distinct_rows(step) == 4


@pytest.mark.parametrize("net", [{"text": False}, {"zero_pooled": True}], ids=["sd3.5-no-text", "instantx"])
def test_sd3_controlnet_reads_no_text_where_the_pipeline_gives_it_none(net):
    pipe = _sd3(**net)
    with TextCalls(pipe.controlnet) as control, TextCalls(pipe.transformer) as denoiser:
        latents(pipe, program=MULTI, control_image=image())
    assert len(control.pooled) == len(denoiser.pooled) == STEPS
    if net.get("text") is False:
        assert pipe.controlnet.context_embedder is None and control.hidden == []
        assert all(torch.equal(c, d) for c, d in zip(control.pooled, denoiser.pooled))
    else:
        assert all(torch.equal(c, d) for c, d in zip(control.hidden, denoiser.hidden))
        assert all(p.shape[0] == 4 and not p.any() for p in control.pooled)  # zeros, as the pipeline gives


def test_flux_controlnet_sees_every_conditioning_row(flux_control):
    """Without true CFG: one ControlNet and one transformer call per step, the same rows."""
    with TextCalls(flux_control.controlnet) as control, TextCalls(flux_control.transformer) as denoiser:
        latents(flux_control, program=MULTI, control_image=image(), **SIZE)
    assert len(control.hidden) == len(denoiser.hidden) == STEPS
    for c, d, cp, dp in zip(control.hidden, denoiser.hidden, control.pooled, denoiser.pooled):
        assert torch.equal(c, d) and torch.equal(cp, dp)
        assert c.shape[0] == 4 and _distinct_rows(c) == 4  # the uncond and 3 conditionings


def test_flux_true_cfg_controlnet_runs_once_on_the_conditionings(flux_control):
    """True CFG: the ControlNet runs once per step, on the cond call's rows (every conditioning),
    as the pipeline runs it on the prompt; the uncond call reuses its residuals."""
    kwargs = {"control_image": image(), "negative_prompt": "blurry", "true_cfg_scale": 3.0, **SIZE}
    with TextCalls(flux_control.controlnet) as control, TextCalls(flux_control.transformer) as denoiser:
        out = latents(flux_control, program=MULTI, **kwargs)
    assert torch.isfinite(out).all()
    assert len(control.hidden) == STEPS and len(denoiser.hidden) == 2 * STEPS
    for step, c in enumerate(control.hidden):
        cond_call, uncond_call = denoiser.hidden[2 * step], denoiser.hidden[2 * step + 1]
        assert torch.equal(c, cond_call) and c.shape[0] == 3 and _distinct_rows(c) == 3
        assert uncond_call.shape[0] == 1


def test_flux_true_cfg_uncond_rows_reuse_their_items_first_conditioning_residuals(flux_control):
    """The pipeline gives the uncond call the residuals computed on the prompt; under a program
    each item's uncond row gets those of its first conditioning (row 0 of the cond call here)."""
    transformer = flux_control.transformer
    seen = []

    def forward(*args, **kwargs):  # wrapped on the instance: runs after every hook
        seen.append([t.clone() for t in kwargs["controlnet_block_samples"]])
        return type(transformer).forward(transformer, *args, **kwargs)

    transformer.forward = forward
    try:
        kwargs = {"control_image": image(), "negative_prompt": "blurry", "true_cfg_scale": 3.0, **SIZE}
        latents(flux_control, program=MULTI, **kwargs)
    finally:
        del transformer.forward
    assert len(seen) == 2 * STEPS
    for cond_call, uncond_call in zip(seen[::2], seen[1::2]):
        for c, u in zip(cond_call, uncond_call):
            assert c.shape[0] == 3 and u.shape[0] == 1
            assert torch.equal(u[0], c[0]) and not torch.equal(c[0], c[1])


@pytest.mark.parametrize("case", ["sd3-two-images", "flux-true-cfg"])
def test_max_batch_splits_controlnet_and_transformer_with_the_same_result(case):
    build, kwargs = CASES[case]
    pipe = build()
    whole = latents(pipe, program=MULTI, **kwargs)
    split = latents(pipe, program=MULTI, max_batch=1, **kwargs)
    # Float rounding only: a reduction order can depend on the batch size (docs/diffusers.md).
    assert torch.isfinite(whole).all() and (split - whole).abs().max() <= 1e-4


def test_controlnet_pooled_projections_is_refused_before_any_work(sd3_control):
    encoded = []
    with Hooks() as hooks:
        hooks.add(sd3_control.text_encoder.register_forward_pre_hook(lambda *a: encoded.append(1)))
        with pytest.raises(UnsupportedFeatureError, match="controlnet_pooled_projections"):
            nl.compile(MULTI).run(
                sd3_control, control_image=image(), controlnet_pooled_projections=torch.zeros(1, 64)
            )
    assert encoded == []
    assert hooks_on(sd3_control.transformer) == hooks_on(sd3_control.controlnet) == 0
