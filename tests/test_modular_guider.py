"""ProgramGuidance: a compiled program as the guider of diffusers' modular SDXL pipeline.

Proved on a tiny offline modular SDXL (the components of `tiny.sdxl_components`): a one-part
program gives the latents of the modular pipeline's own ClassifierFreeGuidance (with and without a
negative prompt, and without CFG), and a multi-part program makes one UNet call per step holding
the uncond and every conditioning, whose guided prediction is the program's, and gives the latents
of `compile(p).run(pipe)` on a `StableDiffusionXLPipeline` of the same components. Modular SD3 and
Flux.1: `tests/test_modular_guider_families.py`.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
modular_sdxl = pytest.importorskip("diffusers.modular_pipelines.stable_diffusion_xl")

from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny  # noqa: E402
from neutral_lang.backends.diffusers.adapters import UnsupportedPipelineError  # noqa: E402
from neutral_lang.backends.diffusers.modular import ProgramGuidance  # noqa: E402

STEPS = 2
ONE = "a castle, glasses"


@pytest.fixture(scope="module")
def components():
    return tiny.sdxl_components()


@pytest.fixture(scope="module")
def pipe(components):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = modular_sdxl.StableDiffusionXLAutoBlocks().init_pipeline()
        pipe.update_components(**{k: v for k, v in components.items() if v is not None})
    return pipe


def latents(pipe, guider, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.update_components(guider=guider)
    return pipe(
        prompt=ONE,
        num_inference_steps=STEPS,
        height=32,
        width=32,
        output="latents",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_one_part_program_is_classifier_free_guidance(pipe, negative):
    kwargs = {} if negative is None else {"negative_prompt": negative}
    plain = latents(pipe, ClassifierFreeGuidance(guidance_scale=5.0), **kwargs)
    ours = latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=5.0).bind(pipe), **kwargs)
    assert ours.dtype == torch.float32
    assert (ours - plain).abs().max().item() <= 1e-5


def test_without_cfg_one_part_is_the_conditional_prediction(pipe):
    plain = latents(pipe, ClassifierFreeGuidance(guidance_scale=1.0))
    ours = latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=1.0).bind(pipe))
    assert (ours - plain).abs().max().item() <= 1e-5


def test_multi_part_is_one_unet_call_per_step(pipe):
    guider = ProgramGuidance(prompt="a castle AND glasses :0.5 AND_PERP dog :-0.3", guidance_scale=5.0).bind(pipe)
    seen, guided = [], []
    forward = pipe.unet.forward

    def recording_forward(sample, *args, **kwargs):
        seen.append((sample.shape[0], kwargs["encoder_hidden_states"].clone()))
        out = forward(sample, *args, **kwargs)
        guided.append(out[0].clone())
        return out

    pipe.unet.forward = recording_forward  # an instance attribute: called after the guider's hook
    try:
        got = latents(pipe, guider)
    finally:
        del pipe.unet.forward
    assert [rows for rows, _ in seen] == [4] * STEPS  # uncond + three conditionings, one image
    encoder = guider._encoder
    for _, hidden in seen:
        for row, text in enumerate(["a castle", "glasses", "dog"], start=1):
            assert torch.equal(hidden[row], encoder.encode(text).hidden)
    # the guided prediction of the last step is the program's on that step's four rows
    u, c1, c2, c3 = guided[-1].unflatten(0, (4, 1))
    expected = guider.program.guide(u, [c1, c2, c3], 5.0, step=STEPS - 1, num_steps=STEPS)
    output = guider.forward(guided[-1])
    assert torch.allclose(output.pred, expected, atol=1e-6)
    assert (got - latents(pipe, ProgramGuidance(prompt="a castle", guidance_scale=5.0).bind(pipe))).abs().max() > 1e-3
    assert not pipe.unet._forward_pre_hooks  # cleanup_models removed the guider's hook


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_multi_part_equals_run_on_the_plain_pipeline(pipe, components, negative):
    """The same components in a StableDiffusionXLPipeline: run(pipe) gives the same latents."""
    from diffusers import StableDiffusionXLPipeline

    from neutral_lang import compile

    kwargs = {} if negative is None else {"negative_prompt": negative}
    program = "a castle AND glasses :0.5 AND_PERP dog :-0.3"
    got = latents(pipe, ProgramGuidance(prompt=program, guidance_scale=5.0).bind(pipe), **kwargs)
    plain = StableDiffusionXLPipeline(**components)
    plain.set_progress_bar_config(disable=True)
    expected = compile(program).run(
        plain, guidance_scale=5.0, num_inference_steps=STEPS, height=32, width=32, output_type="latent",
        generator=torch.Generator().manual_seed(0), **kwargs,
    ).images
    assert (got - expected).abs().max().item() <= 1e-5


def test_a_lora_scale_the_guider_was_not_given_is_refused_leaving_no_hook(pipe):
    from diffusers_helpers import hooks_on

    from neutral_lang.backends.diffusers.adapters import UnsupportedFeatureError

    before = latents(pipe, ClassifierFreeGuidance(guidance_scale=5.0))
    with pytest.raises(UnsupportedFeatureError, match="cross_attention_kwargs"):
        latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=5.0).bind(pipe),
                cross_attention_kwargs={"scale": 0.5})
    assert hooks_on(pipe.unet) == 0  # the one-shot hook removed itself before refusing
    assert torch.equal(latents(pipe, ClassifierFreeGuidance(guidance_scale=5.0)), before)


def test_bind_refuses_other_pipelines():
    from neutral_lang.backends.diffusers.tiny import sd_pipeline

    supported = "StableDiffusionXLModularPipeline, StableDiffusion3ModularPipeline"
    with pytest.raises(UnsupportedPipelineError, match=supported):
        ProgramGuidance(prompt=ONE).bind(sd_pipeline())


def test_run_on_a_modular_pipeline_points_to_the_guider(pipe):
    # run() drives classic pipelines; a modular one is refused before any work, with the way to go
    with pytest.raises(UnsupportedPipelineError, match="ProgramGuidance"):
        nl.compile(ONE).run(pipe)


def test_text_inside_too_many_brackets_is_refused_when_the_guider_is_made():
    from neutral_lang import emphasis

    with pytest.raises(emphasis.EmphasisTooDeepError, match="481 brackets"):
        ProgramGuidance(prompt="a castle AND " + "(" * 481 + "dog")
    assert ProgramGuidance(prompt="(" * 481 + "dog", emphasis="none").program.prompts == ("(" * 481 + "dog",)
