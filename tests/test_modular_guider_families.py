"""ProgramGuidance on diffusers' modular SD3 pipeline, and its refusal of modular Flux.1.

Proved on a tiny offline modular SD3 (the components of `tiny_families.sd3_components`): a one-part
program gives the latents of the modular pipeline's stock ClassifierFreeGuidance (negative prompt
given or not, with and without CFG, img2img, two images per prompt, a shorter T5 sequence); a
multi-part program makes one transformer call per step holding the uncond and every conditioning,
and gives exactly the latents of `compile(p).run(pipe)` on a `StableDiffusion3Pipeline` built from
the same components. Modular Flux.1 has no guider component: `bind` refuses it.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
modular_sd3 = pytest.importorskip("diffusers.modular_pipelines.stable_diffusion_3")

from diffusers import StableDiffusion3Pipeline  # noqa: E402
from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402
from diffusers_helpers import hooks_on, seed  # noqa: E402

import neutral_lang  # noqa: E402
from neutral_lang.backends.diffusers import tiny_families  # noqa: E402
from neutral_lang.backends.diffusers.adapters import UnsupportedFeatureError, UnsupportedPipelineError  # noqa: E402
from neutral_lang.backends.diffusers.modular import ProgramGuidance  # noqa: E402

STEPS = 2
ONE = "a castle, glasses"
MULTI = "a castle AND glasses :0.5 AND_PERP dog :-0.3"
SIZE = dict(num_inference_steps=STEPS, height=32, width=32)


@pytest.fixture(scope="module")
def components():
    return {k: v for k, v in tiny_families.sd3_components().items() if v is not None}


@pytest.fixture(scope="module")
def pipe(components):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = modular_sd3.StableDiffusion3AutoBlocks().init_pipeline()
        pipe.update_components(**components)
    return pipe


def latents(pipe, guider, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.update_components(guider=guider)
    return pipe(prompt=ONE, output="latents", generator=seed(), **{**SIZE, **kwargs})


class TransformerCalls:
    """Records the text and batch size of each transformer call, from inside the transformer."""

    def __init__(self, transformer):
        self.hidden: list[torch.Tensor] = []
        self.handle = transformer.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.hidden.append(kwargs["encoder_hidden_states"].clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize(
    "extra",
    [
        dict(negative_prompt="blurry"),
        dict(negative_prompt=""),
        dict(),  # no negative prompt: modular SD3 makes no uncond, its CFG is the cond prediction
        dict(negative_prompt="blurry", num_images_per_prompt=2, max_sequence_length=64),
        dict(negative_prompt="blurry", clip_skip=1),
    ],
    ids=["negative", "empty-negative", "no-negative", "two-images-short-t5", "clip-skip"],
)
@pytest.mark.parametrize("scale", [5.0, 1.0])
def test_one_part_program_is_classifier_free_guidance(pipe, extra, scale):
    # the text settings the pipeline's text block reads are the guider's to give
    text = {name: extra[name] for name in ("max_sequence_length", "clip_skip") if name in extra}
    plain = latents(pipe, ClassifierFreeGuidance(guidance_scale=scale), **extra)
    guider = ProgramGuidance(prompt=ONE, guidance_scale=scale, **text).bind(pipe)
    ours = latents(pipe, guider, **extra)
    assert ours.dtype == torch.float32 and ours.shape == plain.shape
    assert (ours - plain).abs().max().item() <= 1e-5


def test_one_part_img2img_is_classifier_free_guidance(pipe):
    image = dict(image=torch.rand(1, 3, 32, 32, generator=seed()), strength=0.75, negative_prompt="blurry")
    plain = latents(pipe, ClassifierFreeGuidance(guidance_scale=5.0), **image)
    ours = latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=5.0).bind(pipe), **image)
    assert (ours - plain).abs().max().item() <= 1e-5


def test_multi_part_is_one_transformer_call_per_step_and_equals_run(pipe, components):
    guider = ProgramGuidance(prompt=MULTI, guidance_scale=5.0).bind(pipe)
    with TransformerCalls(pipe.transformer) as calls:
        got = latents(pipe, guider, negative_prompt="blurry")
    assert [h.shape[0] for h in calls.hidden] == [4] * STEPS  # uncond + three conditionings, one image
    for hidden in calls.hidden:
        for row, text in enumerate(["a castle", "glasses", "dog"], start=1):
            assert torch.equal(hidden[row], guider._encoder.encode(text).hidden)
    assert hooks_on(pipe.transformer) == 0

    plain_pipe = StableDiffusion3Pipeline(**components)
    plain_pipe.set_progress_bar_config(disable=True)
    expected = neutral_lang.compile(MULTI).run(
        plain_pipe, negative_prompt="blurry", guidance_scale=5.0, output_type="latent", generator=seed(), **SIZE
    ).images
    assert (got - expected).abs().max().item() <= 1e-5
    single = ProgramGuidance(prompt="a castle", guidance_scale=5.0).bind(pipe)
    one_part = latents(pipe, single, negative_prompt="blurry")
    assert (got - one_part).abs().max().item() > 1e-3  # the other parts changed the image


def test_disabled_guider_is_the_program_without_cfg(pipe):
    """``enabled=False`` (which modular SD3's loop leaves alone) means ``u + full(root)``."""
    disabled = latents(pipe, ProgramGuidance(prompt=MULTI, guidance_scale=5.0, enabled=False).bind(pipe),
                       negative_prompt="blurry")
    unit = latents(pipe, ProgramGuidance(prompt=MULTI, guidance_scale=1.0).bind(pipe), negative_prompt="blurry")
    cfg = latents(pipe, ProgramGuidance(prompt=MULTI, guidance_scale=5.0).bind(pipe), negative_prompt="blurry")
    assert (disabled - unit).abs().max().item() <= 1e-6
    assert (disabled - cfg).abs().max().item() > 1e-3


def test_multi_part_without_a_negative_prompt_is_refused_before_the_transformer_runs(pipe):
    guider = ProgramGuidance(prompt=MULTI, guidance_scale=5.0).bind(pipe)
    with TransformerCalls(pipe.transformer) as calls, pytest.raises(UnsupportedFeatureError, match="negative_prompt"):
        latents(pipe, guider)
    assert calls.hidden == []


def test_a_t5_length_given_to_the_pipeline_only_is_refused(pipe):
    guider = ProgramGuidance(prompt=ONE, guidance_scale=5.0).bind(pipe)
    with TransformerCalls(pipe.transformer) as calls, pytest.raises(UnsupportedFeatureError,
                                                                    match="max_sequence_length"):
        latents(pipe, guider, negative_prompt="blurry", max_sequence_length=64)
    assert calls.hidden == []


def test_text_encoder_lora_scale_is_the_pipelines():
    # joint_attention_kwargs={"scale": s} scales the transformer's LoRA and, in the text block,
    # the CLIPs'; the guider encodes its texts at its own lora_scale
    peft = pytest.importorskip("peft")
    components = {k: v for k, v in tiny_families.sd3_components(seed=1).items() if v is not None}
    components["transformer"].add_adapter(
        peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    )
    clip = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    peft.inject_adapter_in_model(clip, components["text_encoder"])
    peft.inject_adapter_in_model(clip, components["text_encoder_2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = modular_sd3.StableDiffusion3AutoBlocks().init_pipeline()
        pipe.update_components(**components)
    results = []
    for scale in (0.5, 0.0):
        extra = dict(negative_prompt="blurry", joint_attention_kwargs={"scale": scale})
        plain = latents(pipe, ClassifierFreeGuidance(guidance_scale=5.0), **extra)
        ours = latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=5.0, lora_scale=scale).bind(pipe), **extra)
        assert (ours - plain).abs().max().item() <= 1e-5
        results.append(ours)
    assert (results[0] - results[1]).abs().max().item() > 1e-3  # the scale matters

    computed = []
    probe = pipe.transformer.register_forward_hook(lambda module, args, out: computed.append(1))
    try:
        with pytest.raises(UnsupportedFeatureError, match=r"lora_scale=0\.5"):
            latents(pipe, ProgramGuidance(prompt=ONE, guidance_scale=5.0).bind(pipe),
                    negative_prompt="blurry", joint_attention_kwargs={"scale": 0.5})
    finally:
        probe.remove()
    assert computed == []  # refused before the transformer computed anything
    assert hooks_on(pipe.transformer) == 0


def test_modular_flux_takes_no_guider_and_bind_refuses_it():
    modular_flux = pytest.importorskip("diffusers.modular_pipelines.flux")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flux = modular_flux.FluxAutoBlocks().init_pipeline()
    assert "guider" not in flux.component_names  # its denoise block calls the transformer directly
    with pytest.raises(UnsupportedPipelineError, match="takes? no guider") as refused:
        ProgramGuidance(prompt=ONE).bind(flux)
    assert "StableDiffusion3ModularPipeline" in str(refused.value)
    assert "run(pipe)" in str(refused.value)
