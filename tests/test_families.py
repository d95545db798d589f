"""The transformer families (SD3, Flux.1, PixArt-Sigma, AuraFlow) on tiny random-weight pipelines.

What is proved here, per family (offline, float32 latents, 32x32 pixels, 2 steps):

- the identity law: a one-part program gives the plain pipeline's latents (max abs difference
  <= 1e-5; they come out equal) for negative prompts None / "" / text, with and without CFG, and
  with two images per prompt;
- a multi-part program makes exactly one denoiser call per step (Flux with true CFG: one per
  branch) whose text inputs are, row by row, the encodings of every conditioning it needs, and
  its result differs from the one-part run;
- unsupported pipelines and unsupported features are refused before any text is encoded, and the
  pipeline keeps no hook;
- T5 emphasis: the token weights follow the characters of each emphasis run, weights of 1 give the
  pipeline's own embedding, ``no_norm`` scales exactly, ``original`` keeps the text's mean, and a
  mean of zero warns instead of dividing by it.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny_families  # noqa: E402
from neutral_lang.backends.diffusers.adapters import (  # noqa: E402
    UnsupportedFeatureError,
    UnsupportedPipelineError,
    adapter_for,
)
from neutral_lang.backends.diffusers.t5_encoding import T5TextEncoder, weighted_text  # noqa: E402
from neutral_lang.backends.diffusers.text_encoding import EmphasisWarning  # noqa: E402
from diffusers_helpers import hooks_on, seed  # noqa: E402

STEPS = 2
SIZE = dict(height=32, width=32)
ONE = "a castle, glasses"
MANY = "a castle AND glasses :0.5 AND_PERP dog :-0.3"


# Each family: how to build it and the call arguments it needs at this size.
FAMILIES = {
    "sd3": (tiny_families.sd3_pipeline, dict(guidance_scale=5.0)),
    "sd3-no-t5": (lambda: tiny_families.sd3_pipeline(t5=False), dict(guidance_scale=5.0)),
    "flux": (tiny_families.flux_pipeline, dict(guidance_scale=3.5, max_sequence_length=32)),
    "flux-schnell": (lambda: tiny_families.flux_pipeline(guidance_embeds=False), dict(max_sequence_length=32)),
    "pixart": (tiny_families.pixart_sigma_pipeline, dict(use_resolution_binning=False, clean_caption=False)),
    "auraflow": (tiny_families.auraflow_pipeline, dict(max_sequence_length=32)),
}


@pytest.fixture(scope="module")
def pipes():
    return {name: build() for name, (build, _) in FAMILIES.items()}


def call_args(name: str, **extra) -> dict:
    return {"num_inference_steps": STEPS, "output_type": "latent", **SIZE, **FAMILIES[name][1], **extra}


def plain(pipe, name, prompt, **extra):
    return pipe(prompt, generator=seed(), **call_args(name, **extra)).images


def ours(pipe, name, prompt, **extra):
    return nl.compile(prompt).run(pipe, generator=seed(), **call_args(name, **extra)).images


def assert_identity(a, b):
    assert a.shape == b.shape
    assert a.dtype == torch.float32
    assert (a - b).abs().max().item() <= 1e-5


class DenoiserCalls:
    """Records each call of ``pipe.transformer``'s forward, with the inputs the model itself gets
    (after run()'s pre-hook has expanded the batch): batch size and text inputs."""

    def __init__(self, pipe):
        self.calls: list[dict] = []
        self.module = pipe.transformer
        forward = self.module.forward

        def recording_forward(*args, **kwargs):
            sample = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            mask = kwargs.get("encoder_attention_mask")
            pooled = kwargs.get("pooled_projections")
            self.calls.append(
                {
                    "rows": sample.shape[0],
                    "hidden": kwargs["encoder_hidden_states"].detach().clone(),
                    "pooled": None if pooled is None else pooled.clone(),
                    "mask": None if mask is None else mask.clone(),
                }
            )
            return forward(*args, **kwargs)

        self.module.forward = recording_forward  # an instance attribute: called after the hooks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        del self.module.forward


# -- identity law -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("negative", [None, "", "blurry, (ugly:1.2)"])
def test_one_part_program_is_the_plain_pipeline(pipes, name, negative):
    pipe = pipes[name]
    extra = {} if negative is None else {"negative_prompt": negative}
    if name.startswith("flux") and negative is not None:
        extra["true_cfg_scale"] = 3.0  # Flux runs its uncond branch only with a negative prompt
    # the pipeline reads brackets as text; so does emphasis="none"
    options = {"emphasis": "none"} if negative is not None and "(" in negative else {}
    expected = plain(pipe, name, ONE, **extra)
    assert_identity(ours(pipe, name, ONE, **options, **extra), expected)
    # and through the hooks, which max_batch needs (PixArt and AuraFlow otherwise run unhooked)
    assert_identity(ours(pipe, name, ONE, max_batch=64, **options, **extra), expected)


@pytest.mark.parametrize("name", ["sd3", "pixart", "auraflow"])
def test_identity_without_cfg_and_with_two_images_per_prompt(pipes, name):
    pipe = pipes[name]
    for extra in ({"guidance_scale": 1.0}, {"num_images_per_prompt": 2}):
        assert_identity(ours(pipe, name, ONE, **extra), plain(pipe, name, ONE, **extra))


def test_flux_identity_with_true_cfg_and_two_images(pipes):
    pipe = pipes["flux"]
    extra = {"negative_prompt": "blurry", "true_cfg_scale": 4.0, "num_images_per_prompt": 2}
    assert_identity(ours(pipe, "flux", ONE, **extra), plain(pipe, "flux", ONE, **extra))
    # true_cfg_scale > 1 without a negative prompt: the pipeline runs no CFG, and neither do we
    with DenoiserCalls(pipe) as calls:
        got = ours(pipe, "flux", ONE, true_cfg_scale=4.0)
    assert_identity(got, plain(pipe, "flux", ONE, true_cfg_scale=4.0))
    assert [c["rows"] for c in calls.calls] == [1] * STEPS


IMAGE = dict(strength=0.75, num_inference_steps=4, output_type="latent", height=32, width=32)


def _image_and_mask():
    image = torch.rand(1, 3, 32, 32, generator=seed())
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    return image, mask


@pytest.mark.parametrize(
    "pipeline, components, extra",
    [
        ("StableDiffusion3Img2ImgPipeline", tiny_families.sd3_components, dict(guidance_scale=5.0)),
        ("StableDiffusion3InpaintPipeline", tiny_families.sd3_components, dict(guidance_scale=5.0, mask=True)),
        ("FluxImg2ImgPipeline", tiny_families.flux_components, dict(max_sequence_length=32)),
        (
            "FluxInpaintPipeline",
            tiny_families.flux_components,
            dict(max_sequence_length=32, mask=True, negative_prompt="blurry", true_cfg_scale=3.0),
        ),
        ("PixArtAlphaPipeline", tiny_families.pixart_sigma_components, dict(use_resolution_binning=False,
                                                                            clean_caption=False, plain=True)),
    ],
)
def test_identity_for_image_to_image_and_inpaint_pipelines(pipeline, components, extra):
    import diffusers

    pipe = getattr(diffusers, pipeline)(**components())
    pipe.set_progress_bar_config(disable=True)
    image, mask = _image_and_mask()
    extra = dict(extra)
    kwargs = {**IMAGE}
    if not extra.pop("plain", False):
        kwargs["image"] = image
    if extra.pop("mask", False):
        kwargs["mask_image"] = mask
    if "strength" in kwargs and "image" not in kwargs:
        del kwargs["strength"]
    kwargs.update(extra)
    a = pipe(ONE, generator=seed(), **kwargs).images
    b = nl.compile(ONE).run(pipe, generator=seed(), **kwargs).images
    assert_identity(b, a)


def test_sd3_clip_skip_is_the_pipelines(pipes):
    # SD3's encode_prompt applies clip_skip to the prompt and not to the negative prompt
    pipe = pipes["sd3"]
    for negative in (None, "blurry"):
        extra = {"clip_skip": 1, "negative_prompt": negative}
        assert_identity(ours(pipe, "sd3", ONE, **extra), plain(pipe, "sd3", ONE, **extra))


def test_max_batch_splits_the_branch_calls(pipes):
    pipe = pipes["flux"]
    extra = {"negative_prompt": "blurry", "true_cfg_scale": 4.0}
    with DenoiserCalls(pipe) as calls:
        chunked = ours(pipe, "flux", MANY, max_batch=2, **extra)
    assert [c["rows"] for c in calls.calls] == [2, 1, 1] * STEPS  # the cond branch's 3 rows in two calls
    assert (chunked - ours(pipe, "flux", MANY, **extra)).abs().max() <= 1e-5


# -- one batched call per step, every conditioning in it ---------------------------------------


def _encodings(pipe, name, texts, **extra):
    """Each text's conditioning as the family's text encoder makes it for this call."""
    from neutral_lang.backends.diffusers.adapters import TextOptions

    family = adapter_for(pipe)
    kwargs = call_args(name, **extra)
    encoder = family.text_encoder(pipe, TextOptions(max_sequence_length=kwargs.get("max_sequence_length")))
    return [encoder.encode(t) for t in texts]


@pytest.mark.parametrize("name", ["sd3", "sd3-no-t5", "pixart", "auraflow"])
def test_multi_part_is_one_joint_call_per_step(pipes, name):
    pipe = pipes[name]
    with DenoiserCalls(pipe) as calls:
        got = ours(pipe, name, MANY)
    assert len(calls.calls) == STEPS
    expected = _encodings(pipe, name, ["", "a castle", "glasses", "dog"])
    for call in calls.calls:
        assert call["rows"] == 4  # uncond + three conditionings, one image
        for row, conditioning in enumerate(expected):
            assert torch.equal(call["hidden"][row], conditioning.hidden)
            if conditioning.pooled is not None:
                assert torch.equal(call["pooled"][row], conditioning.pooled)
            if name == "pixart":
                assert torch.equal(call["mask"][row].bool(), conditioning.mask)
    one = ours(pipe, name, ONE)
    assert torch.isfinite(got).all()
    if name != "auraflow":  # the tiny AuraFlow barely reads its text (differences ~1e-5)
        assert (got - one).abs().max() > 1e-3


def test_flux_true_cfg_calls_once_per_branch_with_every_conditioning(pipes):
    pipe = pipes["flux"]
    extra = {"negative_prompt": "blurry", "true_cfg_scale": 4.0}
    with DenoiserCalls(pipe) as calls:
        got = ours(pipe, "flux", MANY, **extra)
    assert [c["rows"] for c in calls.calls] == [3, 1] * STEPS  # cond branch, then uncond branch
    conds = _encodings(pipe, "flux", ["a castle", "glasses", "dog"])
    (uncond,) = _encodings(pipe, "flux", ["blurry"])
    for cond_call, uncond_call in zip(calls.calls[::2], calls.calls[1::2]):
        for row, conditioning in enumerate(conds):
            assert torch.equal(cond_call["hidden"][row], conditioning.hidden)
            assert torch.equal(cond_call["pooled"][row], conditioning.pooled)
        assert torch.equal(uncond_call["hidden"][0], uncond.hidden)
    assert (got - ours(pipe, "flux", ONE, **extra)).abs().max() > 1e-3


def test_flux_without_true_cfg_composes_from_the_empty_prompt(pipes, monkeypatch):
    pipe = pipes["flux"]
    raw, guided = [], []
    # registered before run()'s own hooks, so it sees the transformer's 3-row prediction
    handle = pipe.transformer.register_forward_hook(lambda m, a, k, out: raw.append(out[0].clone()), with_kwargs=True)
    step = pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        guided.append(model_output.clone())
        return step(model_output, *args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", recording_step)
    try:
        with DenoiserCalls(pipe) as calls:
            ours(pipe, "flux", "a castle AND glasses :0.5")
    finally:
        handle.remove()
    assert [c["rows"] for c in calls.calls] == [3] * STEPS  # "", "a castle", "glasses" in one call
    (empty,) = _encodings(pipe, "flux", [""])
    assert torch.equal(calls.calls[0]["hidden"][0], empty.hidden)
    for prediction, g in zip(raw, guided):
        u, c1, c2 = prediction[0:1], prediction[1:2], prediction[2:3]
        assert torch.allclose(g, u + (c1 - u) + 0.5 * (c2 - u), atol=1e-5)  # u + full(root), scale 1


# -- refusals before any work ------------------------------------------------------------------


def test_unsupported_pipeline_is_refused_naming_the_families():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    pipe = DDPMPipeline(
        unet=UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8),
                         down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=2),
        scheduler=DDPMScheduler(),
    )
    with pytest.raises(UnsupportedPipelineError) as caught:
        nl.compile(ONE).run(pipe)
    message = str(caught.value)
    for name in ("StableDiffusion3Pipeline", "FluxPipeline", "PixArtSigmaPipeline", "AuraFlowPipeline"):
        assert name in message


def _no_encoding(pipe, monkeypatch):
    """Make any use of the pipeline's text encoders fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError("a text encoder ran before the refusal")

    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            monkeypatch.setattr(module, "forward", boom)


def test_sd3_skip_layer_guidance_is_refused_before_encoding(pipes, monkeypatch):
    pipe = pipes["sd3"]
    _no_encoding(pipe, monkeypatch)
    with pytest.raises(UnsupportedFeatureError, match="skip_guidance_layers"):
        nl.compile(MANY).run(pipe, skip_guidance_layers=[0], **call_args("sd3"))
    assert hooks_on(pipe.transformer) == 0


def test_pixart_caption_cleaning_is_refused_when_it_would_run(pipes, monkeypatch):
    import diffusers.utils

    pipe = pipes["pixart"]
    monkeypatch.setattr(diffusers.utils, "is_bs4_available", lambda: True)
    monkeypatch.setattr(diffusers.utils, "is_ftfy_available", lambda: True)
    _no_encoding(pipe, monkeypatch)
    with pytest.raises(UnsupportedFeatureError, match="clean_caption=False"):
        nl.compile(ONE).run(pipe, **call_args("pixart", clean_caption=True))
    assert hooks_on(pipe.transformer) == 0


def test_flux_prompt_callbacks_are_refused(pipes, monkeypatch):
    pipe = pipes["flux"]
    _no_encoding(pipe, monkeypatch)
    with pytest.raises(UnsupportedFeatureError, match="placeholders"):
        nl.compile(ONE).run(
            pipe,
            callback_on_step_end=lambda p, i, t, k: k,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
            **call_args("flux"),
        )
    assert hooks_on(pipe.transformer) == 0


def test_the_pipe_is_unchanged_after_an_error_mid_run(pipes):
    pipe = pipes["flux"]
    before = plain(pipe, "flux", ONE, negative_prompt="x", true_cfg_scale=2.0)

    def fail(p, i, t, k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nl.compile(MANY).run(pipe, negative_prompt="x", true_cfg_scale=2.0, callback_on_step_end=fail,
                             generator=seed(), **call_args("flux"))
    assert hooks_on(pipe.transformer) == 0
    assert torch.equal(plain(pipe, "flux", ONE, negative_prompt="x", true_cfg_scale=2.0), before)


# -- T5 text encoding --------------------------------------------------------------------------


def test_weighted_text_follows_the_emphasis_runs():
    text, weights = weighted_text("a (castle:1.5) BREAK [dog]")
    assert text == "a castle dog"
    assert weights == [1.0, 1.0] + [1.5] * 6 + [1.0] + [1 / 1.1] * 3
    assert weighted_text("  A (Castle)  ", lower_strip=True) == ("a castle", [1.0, 1.0] + [1.1] * 6)
    assert weighted_text("a (b:2)", "none") == ("a (b:2)", [1.0] * 7)
    assert weighted_text("a (b:2)", "ignore") == ("a b", [1.0] * 3)


@pytest.fixture(scope="module")
def flux_t5(pipes):
    pipe = pipes["flux"]
    return pipe, lambda **options: T5TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, max_length=16,
                                                 device="cpu", **options)


def test_t5_tokens_take_the_weight_of_their_run(flux_t5):
    _, make = flux_t5
    ids, mask, weights = make().tokenize("a (castle:1.5), glasses")
    plain_ids, plain_mask, _ = make().tokenize("a castle, glasses")
    assert ids == plain_ids and mask == plain_mask  # one tokenization of the plain text
    assert weights[:5] == [1.0, 1.5, 1.0, 1.0, 1.0]  # ▁a ▁castle , ▁glasses </s>


def test_t5_emphasis_modes(flux_t5):
    pipe, make = flux_t5
    with torch.no_grad():
        ids = pipe.tokenizer_2("a castle, glasses", padding="max_length", max_length=16, return_tensors="pt").input_ids
        reference = pipe.text_encoder_2(ids)[0][0]
    assert torch.equal(make().encode("a castle, glasses").hidden, reference)
    no_norm = make(emphasis="no_norm").encode("a (castle:1.5), glasses")
    assert torch.allclose(no_norm.hidden[1], 1.5 * reference[1])
    assert torch.equal(no_norm.hidden[0], reference[0])
    original = make().encode("a (castle:1.5), glasses")
    text_rows = original.mask
    assert torch.allclose(original.hidden[text_rows].mean(), reference[text_rows].mean(), atol=1e-6)
    assert torch.equal(original.hidden[~text_rows], reference[~text_rows])  # padding untouched
    assert make(emphasis="ignore").encode("a (castle:1.5), glasses").hidden.equal(reference)


def test_t5_mean_restoration_never_divides_by_zero(flux_t5):
    _, make = flux_t5
    encoder = make()
    z = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([True, True, False])
    with pytest.warns(EmphasisWarning):
        out = encoder._emphasize(z, [1.0, -1.0, 1.0], mask, "x")  # mean(z * w) over the text is 0
    assert torch.isfinite(out).all()
    assert torch.equal(out, z * torch.tensor([[1.0], [-1.0], [1.0]]))


def test_t5_truncation_warns_with_the_lost_text(flux_t5):
    _, make = flux_t5
    encoder = T5TextEncoder(flux_t5[0].tokenizer_2, flux_t5[0].text_encoder_2, max_length=4, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode("a castle glasses dog")
    assert any("'dog'" in str(w.message) for w in caught)


def test_flux_t5_reads_multi_vector_textual_inversion_as_the_pipeline():
    # Flux rewrites "<toy>" to "<toy> <toy>_1" for T5 (maybe_convert_prompt), and so does run()
    pipe = tiny_families.flux_pipeline()
    pipe.tokenizer_2.add_tokens(["<toy>", "<toy>_1"])
    pipe.text_encoder_2.resize_token_embeddings(len(pipe.tokenizer_2))
    with torch.no_grad():
        pipe.text_encoder_2.get_input_embeddings().weight[-2:] = torch.randn(2, tiny_families.T5_HIDDEN)
    prompt = "a <toy> castle"
    assert_identity(ours(pipe, "flux", prompt), plain(pipe, "flux", prompt))
    weights = T5TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, max_length=16, device="cpu",
                            convert=lambda t: pipe.maybe_convert_prompt(t, pipe.tokenizer_2)).tokenize(
        "a (<toy>:1.5) castle")[2]
    assert weights[:4] == [1.0, 1.5, 1.5, 1.0]  # ▁a <toy> <toy>_1 ▁castle


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_lora_scale_reaches_the_transformer_and_the_text_encoders(name):
    # joint_attention_kwargs={"scale": s} scales the transformer's LoRA and, in encode_prompt, the
    # text encoders' (SD3: the two CLIPs; Flux: CLIP and T5)
    peft = pytest.importorskip("peft")
    pipe = FAMILIES[name][0]()
    pipe.transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                                 init_lora_weights=False))
    clip = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    t5 = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["q", "k", "v"], init_lora_weights=False)
    peft.inject_adapter_in_model(clip, pipe.text_encoder)
    peft.inject_adapter_in_model(clip if name == "sd3" else t5, pipe.text_encoder_2)  # Flux: T5
    results = []
    for scale in (0.5, 0.0):
        extra = {"joint_attention_kwargs": {"scale": scale}}
        got = ours(pipe, name, ONE, **extra)
        assert_identity(got, plain(pipe, name, ONE, **extra))
        results.append(got)
    assert (results[0] - results[1]).abs().max() > 1e-3  # the scale matters


@pytest.mark.parametrize(
    "name, extra, rows",
    [
        ("pixart", {}, [2] * STEPS),
        ("auraflow", {}, [2] * STEPS),
        ("sd3", {}, [2] * STEPS),
        ("flux", {}, [1] * STEPS),  # distilled: no uncond branch
        ("flux", {"negative_prompt": "blurry", "true_cfg_scale": 3.0}, [1, 1] * STEPS),  # true CFG: per branch
    ],
)
def test_one_part_programs_run_these_pipelines_unhooked(pipes, name, extra, rows):
    # direct_inputs: the pipeline's own guidance step on the program's embeddings, no hook at all
    pipe = pipes[name]
    seen = []
    probe = pipe.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(len(m._forward_pre_hooks)),
                                                       with_kwargs=True)
    try:
        with DenoiserCalls(pipe) as calls:
            got = ours(pipe, name, ONE, **extra)
    finally:
        probe.remove()
    assert [c["rows"] for c in calls.calls] == rows
    assert seen == [1] * len(rows)  # only the probe itself
    assert_identity(got, plain(pipe, name, ONE, **extra))


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_two_images_per_prompt_use_the_hooks_where_given_embeddings_are_not_repeated(pipes, name):
    # SD3 and Flux do not repeat given prompt_embeds per image: the direct path would hand the
    # pipeline one row per prompt for two images, so the run goes through the hooks instead
    pipe = pipes[name]
    seen = []
    probe = pipe.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(len(m._forward_pre_hooks)),
                                                       with_kwargs=True)
    try:
        got = ours(pipe, name, ONE, num_images_per_prompt=2)
    finally:
        probe.remove()
    assert seen and all(count > 1 for count in seen)  # our pre-hook ran beside the probe
    assert_identity(got, plain(pipe, name, ONE, num_images_per_prompt=2))
