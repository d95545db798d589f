"""The diffusers backend on tiny random-weight pipelines (offline, a few seconds in all).

What is proved here: `compile(prompt).run(pipe)` is the plain pipeline for a one-part prompt
(SD and SDXL, lists, num_images_per_prompt, negative prompts, guidance <= 1, img2img, inpaint); a
multi-part prompt costs one UNet call per step with (unique conditionings + 1) x batch samples;
the pipeline is left as it was, also after an exception; the text encoder sees A1111's emphasis,
chunks, BREAK and comma backtracking; prompt editing switches embeddings at A1111's step; and the
SEGA form of AND_TOPK reproduces diffusers' SemanticStableDiffusionPipeline.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from neutral_lang import emphasis, examples  # noqa: E402
from neutral_lang.backends.diffusers import tiny as tiny_pipes  # noqa: E402  (needs torch and diffusers)
from diffusers import (  # noqa: E402
    HeunDiscreteScheduler,
    SemanticStableDiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import ModelLoadError, load_pipeline  # noqa: E402
from neutral_lang.backends.diffusers.text_encoding import PromptEncoder, chunk_tokens  # noqa: E402
from diffusers_helpers import UNetCalls, hooks_on, seed  # noqa: E402

STEPS = 4


def plain(pipe, prompt, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "generator": seed(), "output_type": "np", **kwargs}
    return pipe(prompt, **kwargs).images


def ours(pipe, prompt, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "generator": seed(), "output_type": "np", **kwargs}
    return nl.compile(prompt).run(pipe, **kwargs).images


def assert_same_image(a, b):
    # Not bit-exact: the plan computes u + s*(c - u) as (1 - s)*u + s*c (float32 rounding only).
    assert a.shape == b.shape
    assert abs(a - b).max() < 1e-5


# -- equal to the plain pipeline ---------------------------------------------------------------


def test_one_part_prompt_equals_the_plain_pipeline(any_pipe):
    assert_same_image(ours(any_pipe, "a castle, red"), plain(any_pipe, "a castle, red"))


def test_list_of_prompts_and_images_per_prompt_equal_the_plain_pipeline(any_pipe):
    prompts = ["a castle", "a dog with glasses"]
    kwargs = {"num_images_per_prompt": 2, "negative_prompt": ["cat", "red"]}
    a = ours(any_pipe, prompts, **kwargs)
    assert a.shape[0] == 4
    assert_same_image(a, plain(any_pipe, prompts, **kwargs))


def test_negative_prompt_is_respected(any_pipe):
    with_negative = ours(any_pipe, "a castle", negative_prompt="a dog")
    assert_same_image(with_negative, plain(any_pipe, "a castle", negative_prompt="a dog"))
    assert abs(with_negative - ours(any_pipe, "a castle")).max() > 1e-3


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
def test_guidance_scale_at_most_one(any_pipe, scale):
    with UNetCalls(any_pipe.unet) as calls:
        image = ours(any_pipe, "a castle AND glasses :0.5", guidance_scale=scale)
    assert calls.batches == [3] * STEPS  # the uncond is evaluated although the pipeline skips it
    assert math.isfinite(float(image.sum()))
    if scale == 1.0:  # u + 1 * (c - u) is the conditional prediction: the plain pipeline's
        assert_same_image(ours(any_pipe, "a castle", guidance_scale=1.0), plain(any_pipe, "a castle", guidance_scale=1.0))


@pytest.mark.parametrize(
    "cls, extra",
    [
        pytest.param(StableDiffusionImg2ImgPipeline, {}, id="sd-img2img"),
        pytest.param(
            StableDiffusionInpaintPipeline,
            {"mask_image": torch.ones(1, 1, tiny_pipes.IMAGE_SIZE, tiny_pipes.IMAGE_SIZE)},
            id="sd-inpaint",
        ),
        pytest.param(StableDiffusionXLImg2ImgPipeline, {}, id="sdxl-img2img"),
    ],
)
def test_img2img_and_inpaint_equal_the_plain_pipeline(sd_pipe, sdxl_pipe, cls, extra):
    base = sdxl_pipe if cls is StableDiffusionXLImg2ImgPipeline else sd_pipe
    pipe = cls(**base.components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, tiny_pipes.IMAGE_SIZE, tiny_pipes.IMAGE_SIZE, generator=seed(1))
    kwargs = {"image": image, "strength": 0.5, **extra}
    with UNetCalls(pipe.unet) as calls:
        a = ours(pipe, "a castle", **kwargs)
    assert calls.batches == [2] * (STEPS // 2)  # strength 0.5 runs half the steps
    assert_same_image(a, plain(pipe, "a castle", **kwargs))


def test_guidance_rescale_is_the_run_time_cfg_rescale_and_never_recompiles(sd_pipe, monkeypatch):
    from neutral_lang import compiler

    program = nl.compile("a castle AND glasses")
    monkeypatch.setattr(compiler, "_compile", lambda *a: pytest.fail("run() recompiled the program"))
    seen = []
    guide = type(program).guide
    monkeypatch.setattr(type(program), "guide", lambda self, *a, **kw: seen.append(kw["cfg_rescale"]) or guide(self, *a, **kw))
    rescaled = program.run(sd_pipe, num_inference_steps=STEPS, generator=seed(), output_type="np",
                           guidance_rescale=0.7).images
    assert seen == [0.7] * STEPS
    assert abs(rescaled - ours(sd_pipe, "a castle AND glasses")).max() > 1e-4


@pytest.mark.parametrize("bad, error", [(1.5, ValueError), (float("nan"), ValueError), ("0.7", TypeError)])
def test_a_bad_guidance_rescale_is_refused_before_the_unet_runs(sd_pipe, bad, error):
    with UNetCalls(sd_pipe.unet) as calls, pytest.raises(error, match="cfg_rescale"):
        nl.compile("a castle").run(sd_pipe, num_inference_steps=STEPS, guidance_rescale=bad)
    assert calls.batches == []


def test_trace_records_every_step(sd_pipe):
    from neutral_lang.backends.torch.executor import Trace

    trace = Trace()
    nl.compile("a castle AND_TOPK glasses").run(sd_pipe, num_inference_steps=STEPS, output_type="latent", trace=trace)
    assert [r.step for r in trace.of("TOPK")] == list(range(STEPS))


def test_bfloat16_pipeline_runs():
    pipe = tiny_pipes.sd_pipeline().to(dtype=torch.bfloat16)
    images = nl.compile("a (castle:1.2) AND_PERP monster :-1 AND_SALT [glasses:dog:0.5]").run(
        pipe, num_inference_steps=STEPS, output_type="pt"
    ).images
    assert images.dtype == torch.bfloat16 and torch.isfinite(images).all()


def test_prompt_arguments_are_refused(sd_pipe):
    with pytest.raises(TypeError, match="compile"):
        nl.compile("a castle").run(sd_pipe, prompt="a dog")


@pytest.mark.parametrize("prompt, negative", [
    ("(" * 481 + "castle", None),  # one part: the unhooked path
    ("a castle AND " + "[" * 481 + "dog", None),
    ("a castle", "(" * 300 + "[" * 181 + "blurry"),  # the negative prompt too
    ("a " + "(" * 480 + "[castle:dog:2] AND b", None),  # as written: the edit's bracket is the 481st
])
def test_text_inside_too_many_brackets_is_refused_before_any_text_is_encoded(sd_pipe, prompt, negative):
    before = snapshot(sd_pipe)
    encoded = []
    forward = sd_pipe.text_encoder.forward
    sd_pipe.text_encoder.forward = lambda *a, **k: encoded.append(1) or forward(*a, **k)
    try:
        with UNetCalls(sd_pipe.unet) as calls, pytest.raises(emphasis.EmphasisTooDeepError, match="481 brackets"):
            nl.compile(prompt).run(sd_pipe, num_inference_steps=STEPS, negative_prompt=negative)
    finally:
        del sd_pipe.text_encoder.forward
    assert calls.batches == [] and encoded == []
    assert_unchanged(before, snapshot(sd_pipe))


def test_emphasis_none_reads_deep_brackets_as_text(sd_pipe):
    out = nl.compile("(" * 481 + "castle").run(sd_pipe, num_inference_steps=STEPS, emphasis="none",
                                             output_type="latent").images
    assert torch.isfinite(out).all()


# -- one batched UNet call per step ------------------------------------------------------------


@pytest.mark.parametrize("per_prompt", [1, 2])
def test_one_unet_call_per_step_with_unique_conditionings_plus_one(any_pipe, per_prompt):
    prompt = "a castle AND_PERP a monster :-1 AND a castle :0.5 AND_SALT glasses"
    assert len(nl.compile(prompt).prompts) == 3  # "a castle" twice is one conditioning
    with UNetCalls(any_pipe.unet) as calls:
        ours(any_pipe, prompt, num_images_per_prompt=per_prompt)
    assert calls.batches == [(3 + 1) * per_prompt] * STEPS


def test_items_of_a_list_skip_conditionings_they_do_not_use(sd_pipe):
    program = nl.compile(["a castle AND glasses", "a dog"])
    assert program.prompts == ("a castle", "glasses", "a dog")
    with UNetCalls(sd_pipe.unet) as calls:
        images = program.run(sd_pipe, num_inference_steps=STEPS, num_images_per_prompt=2, output_type="np").images
    # 4 unconds, items 0-1 need 2 conditionings each, items 2-3 one each
    assert calls.batches == [4 + 2 * 2 + 2 * 1] * STEPS
    assert images.shape[0] == 4 and math.isfinite(float(images.sum()))


def test_heun_counts_model_calls_as_steps(sd_pipe):
    pipe = StableDiffusionPipeline(**{**sd_pipe.components, "scheduler": HeunDiscreteScheduler.from_config(sd_pipe.scheduler.config)})
    pipe.set_progress_bar_config(disable=True)
    program = nl.compile("a castle AND_TOPK(start=0.5) glasses")
    seen = []

    class Recording:
        """The real program, with each guide call's step bookkeeping recorded."""

        def __getattr__(self, name):
            return getattr(program, name)

        def guide(self, *args, step, num_steps, **kwargs):
            seen.append((step, num_steps))
            return program.guide(*args, step=step, num_steps=num_steps, **kwargs)

    from neutral_lang.backends.diffusers import run

    run(Recording(), pipe, num_inference_steps=STEPS, output_type="np")
    calls = 2 * STEPS - 1  # Heun: one call for the first step, two for each later one
    assert seen == [(i, calls) for i in range(calls)]


# -- the pipeline is left as it was ------------------------------------------------------------


def snapshot(pipe):
    return {
        "modules": {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)},
        "scheduler": dict(pipe.scheduler.config),
        "processors": {k: type(v) for k, v in pipe.unet.attn_processors.items()},
        "hooks": hooks_on(pipe.unet),
        "forward": pipe.unet.forward,
    }


def assert_unchanged(before, after):
    assert before["scheduler"] == after["scheduler"]
    assert before["processors"] == after["processors"]
    assert before["hooks"] == after["hooks"] == 0
    assert before["forward"] == after["forward"]
    for name, tensors in before["modules"].items():
        for key, value in tensors.items():
            assert torch.equal(value, after["modules"][name][key]), f"{name}.{key} changed"


def test_pipeline_is_unchanged_after_a_run_and_after_an_interrupted_run(any_pipe):
    build = tiny_pipes.sd_pipeline if isinstance(any_pipe, StableDiffusionPipeline) else tiny_pipes.sdxl_pipeline
    pipe = build()
    before = snapshot(pipe)
    reference = plain(pipe, "a castle")

    ours(pipe, "a castle AND_PERP monster :-1")
    assert_unchanged(before, snapshot(pipe))

    def interrupt(pipe, step, timestep, tensors):
        if step == 1:
            raise KeyboardInterrupt("stop")
        return tensors

    with pytest.raises(KeyboardInterrupt):
        ours(pipe, "a castle AND_PERP monster :-1", callback_on_step_end=interrupt)
    assert_unchanged(before, snapshot(pipe))
    assert (plain(pipe, "a castle") == reference).all()
    assert (plain(build(), "a castle") == reference).all()


# -- text encoding -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(sd_pipe):
    return PromptEncoder(sd_pipe)


def test_emphasis_changes_the_embedding(sd_pipe, encoder):
    plain_x = encoder.encode("a castle").hidden
    assert not torch.equal(encoder.encode("a (castle:1.5)").hidden, plain_x)
    assert torch.equal(encoder.encode("a (castle:1)").hidden, plain_x)
    # A1111's default mode restores the chunk's mean
    assert torch.allclose(encoder.encode("a (castle:1.5)").hidden.mean(), plain_x.mean(), atol=1e-6)
    no_norm = PromptEncoder(sd_pipe, emphasis="no_norm").encode("a (castle:1.5)").hidden
    weights = torch.ones(77, 1)
    weights[2] = 1.5  # BOS, "a", "castle"
    assert torch.allclose(no_norm, plain_x * weights)
    assert torch.equal(PromptEncoder(sd_pipe, emphasis="ignore").encode("a (castle:1.5)").hidden, plain_x)
    literal = PromptEncoder(sd_pipe, emphasis="none")
    assert literal.tokenize("(x:1.5)", sd_pipe.tokenizer)[0].tokens[1:4] != encoder.tokenize("x", sd_pipe.tokenizer)[0].tokens[1:4]


def test_emphasis_and_clip_skip_on_sdxl(sdxl_pipe):
    encoder = PromptEncoder(sdxl_pipe)
    a, b = encoder.encode("a castle"), encoder.encode("a (castle:1.3)")
    assert a.hidden.shape == (77, 2 * tiny_pipes.TEXT_HIDDEN)
    assert not torch.equal(a.hidden, b.hidden)
    assert torch.equal(a.pooled, b.pooled)  # the pooled embedding never sees emphasis
    skipped = PromptEncoder(sdxl_pipe, clip_skip=1).encode("a castle")
    assert not torch.equal(a.hidden, skipped.hidden)


def test_clip_skip_is_diffusers_clip_skip(sd_pipe):
    # diffusers' SD: layer -(clip_skip + 1), then the final layer norm. (diffusers 0.42's own
    # encode_prompt cannot do it on transformers 5: it looks for text_encoder.text_model.)
    ids = torch.tensor([tiny_pipes.make_tokenizer()("a castle", padding="max_length").input_ids])
    with torch.no_grad():
        out = sd_pipe.text_encoder(ids, output_hidden_states=True)
        expected = sd_pipe.text_encoder.final_layer_norm(out.hidden_states[-2])[0]
    got = PromptEncoder(sd_pipe, clip_skip=1).encode("a castle").hidden
    assert torch.equal(got, expected)
    assert not torch.equal(got, PromptEncoder(sd_pipe).encode("a castle").hidden)


def short_encoder(model_max_length=16, **options):
    pipe = tiny_pipes.sd_pipeline(model_max_length=model_max_length)
    return pipe, PromptEncoder(pipe, **options)


def test_long_prompts_are_chunked_and_break_starts_a_chunk():
    pipe, encoder = short_encoder()  # 14 tokens per chunk
    tokenizer = pipe.tokenizer
    assert len(encoder.tokenize("cat " * 14, tokenizer)) == 1
    assert len(encoder.tokenize("cat " * 15, tokenizer)) == 2
    assert encoder.encode("cat " * 30).hidden.shape == (3 * 16, tiny_pipes.TEXT_HIDDEN)
    assert len(encoder.tokenize("cat BREAK dog", tokenizer)) == 2
    assert len(encoder.tokenize("BREAK cat", tokenizer)) == 2  # an empty first chunk, as A1111
    assert len(encoder.tokenize("cat (BREAK) dog", tokenizer)) == 1  # weighted BREAK is a word
    assert len(PromptEncoder(pipe, emphasis="none").tokenize("cat BREAK dog", tokenizer)) == 1
    first, second = encoder.tokenize("a castle BREAK glasses", tokenizer)
    vocab = tokenizer.get_vocab()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert first.tokens == (bos, vocab["a</w>"], vocab["castle</w>"], eos) + (eos,) * 12
    assert second.tokens[:3] == (bos, vocab["glasses</w>"], eos)


def test_comma_backtrack_moves_the_words_after_a_late_comma():
    pipe, encoder = short_encoder()  # 14 tokens per chunk
    tokenizer = pipe.tokenizer
    cat, comma, dog = (tokenizer.get_vocab()[w + "</w>"] for w in ("cat", ",", "dog"))
    eos = tokenizer.eos_token_id
    (only,) = encoder.tokenize("cat " * 12 + ", dog", tokenizer)  # exactly full: nothing moves
    assert only.tokens[1:15] == (cat,) * 12 + (comma, dog)
    text = "cat " * 12 + ", dog dog dog"
    first, second = encoder.tokenize(text, tokenizer)
    assert first.tokens[1:16] == (cat,) * 12 + (comma, eos, eos)
    assert second.tokens[1:5] == (dog, dog, dog, eos)
    _, no_backtrack = short_encoder(comma_backtrack=0)
    first, second = no_backtrack.tokenize(text, tokenizer)
    assert first.tokens[1:15] == (cat,) * 12 + (comma, dog)
    assert second.tokens[1:4] == (dog, dog, eos)


def test_chunk_tokens_weights_and_padding():
    chunks = chunk_tokens([([1, 2], 1.5), (None, -1.0), ([3], 1.0)], length=3, bos=8, eos=9, pad=0, comma=None)
    assert [c.tokens for c in chunks] == [(8, 1, 2, 9, 0), (8, 3, 9, 0, 0)]
    assert [c.weights for c in chunks] == [(1.0, 1.5, 1.5, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0, 1.0)]
    assert [c.tokens for c in chunk_tokens([], length=3, bos=8, eos=9, pad=0, comma=None)] == [(8, 9, 0, 0, 0)]


def test_long_prompts_run_and_the_uncond_is_masked_to_its_own_length():
    pipe, encoder = short_encoder()
    with UNetCalls(pipe.unet) as calls:
        image = ours(pipe, "cat " * 20 + "AND dog")
    assert math.isfinite(float(image.sum()))
    assert {h.shape[1] for h in calls.hidden} == {32}  # two chunks for the long part
    # Masked batching equals A1111's separate call for the shorter uncond.
    unet = pipe.unet
    latents = torch.randn(1, 4, 8, 8, generator=seed())
    short, long = encoder.encode("dog").hidden, encoder.encode("cat " * 20).hidden
    alone = unet(latents, 10, encoder_hidden_states=short[None]).sample
    padded = torch.cat([short, torch.zeros_like(short)])
    mask = torch.tensor([[True] * 16 + [False] * 16, [True] * 32])
    both = unet(latents.repeat(2, 1, 1, 1), 10, encoder_hidden_states=torch.stack([padded, long]), encoder_attention_mask=mask).sample
    assert torch.allclose(both[:1], alone, atol=1e-5)


def test_prompt_editing_switches_the_embedding_at_a1111s_step(any_pipe):
    encoder = PromptEncoder(any_pipe)
    castle, dog = encoder.encode("a castle").hidden, encoder.encode("a dog").hidden
    # schedule("a [castle:dog:0.5]", 4) == [(2, "a castle"), (4, "a dog")]: steps 0-2, then 3
    with UNetCalls(any_pipe.unet) as calls:
        ours(any_pipe, "a [castle:dog:0.5] AND glasses")
    assert len(calls.hidden) == STEPS
    for step, hidden in enumerate(calls.hidden):
        expected = castle if step <= 2 else dog
        assert torch.equal(hidden[1], expected), step


def test_alternation_in_the_negative_prompt(sd_pipe):
    encoder = PromptEncoder(sd_pipe)
    with UNetCalls(sd_pipe.unet) as calls:
        ours(sd_pipe, "a castle", negative_prompt="[cat|dog]")
    texts = ["cat", "cat", "dog", "cat"]  # A1111: the first option holds for two steps
    for hidden, text in zip(calls.hidden, texts):
        assert torch.equal(hidden[0], encoder.encode(text).hidden)


# -- every example prompt --------------------------------------------------------------------


# The seed's AND_TOPK experiments and the original README's prompts.
EXAMPLES = examples.ALL


@pytest.mark.parametrize("prompt", EXAMPLES, ids=range(len(EXAMPLES)))
def test_every_example_prompt_runs(any_pipe, prompt):
    images = ours(any_pipe, prompt, output_type="pt")
    assert images.shape == (1, 3, tiny_pipes.IMAGE_SIZE, tiny_pipes.IMAGE_SIZE)
    assert torch.isfinite(images).all()


# -- SEGA ----------------------------------------------------------------------------------------

SEGA = {"steps": 12, "warmup": 2, "scale": 7.5, "edit_scale": 5.0, "momentum": 0.1, "beta": 0.4}


@pytest.fixture(scope="module")
def sega():
    pipe = SemanticStableDiffusionPipeline(
        **{k: v for k, v in tiny_pipes.sd_components().items() if k != "image_encoder"}
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sega_program(sign: float = 1.0):
    s = SEGA
    return nl.compile(
        f"a castle AND_TOPK(k=0.1, per_channel=1, start={s['warmup']}, momentum={s['momentum']}, "
        f"beta={s['beta']}) glasses :{sign * s['edit_scale'] / s['scale']!r}"
    )


def run_sega(pipe, **kwargs):
    s = SEGA
    return pipe(
        "a castle",
        num_inference_steps=s["steps"],
        guidance_scale=s["scale"],
        generator=seed(),
        editing_prompt=["glasses"],
        edit_guidance_scale=s["edit_scale"],
        edit_threshold=0.9,
        edit_warmup_steps=s["warmup"],
        edit_momentum_scale=s["momentum"],
        edit_mom_beta=s["beta"],
        **kwargs,
    )


def test_sega_guidance_equals_semantic_stable_diffusion_step_by_step(sega):
    """Fed SEGA's own predictions, the program returns SEGA's guided prediction at every step."""
    run_sega(sega, output_type="latent")
    program, s = sega_program(), SEGA
    state = program.new_state()
    for i in range(s["steps"]):
        u, c, e = sega.uncond_estimates[i], sega.text_estimates[i], sega.edit_estimates[i, 0]
        expected = u + s["scale"] * (c - u) + sega.sem_guidance[i]
        got = program.guide(u, torch.stack([c, e]), s["scale"], step=i, num_steps=s["steps"], state=state)
        assert torch.allclose(got, expected, rtol=0, atol=2e-6), i
    assert sega.sem_guidance[: s["warmup"]].abs().max() == 0 < sega.sem_guidance[s["warmup"]].abs().max()


@pytest.mark.parametrize("reverse", [False, True], ids=["edit", "reverse"])
def test_sega_run_reproduces_semantic_stable_diffusion(sega, sd_pipe, reverse):
    """reverse_editing_direction is a negative weight."""
    s = SEGA
    expected = run_sega(sega, output_type="np", reverse_editing_direction=reverse).images
    got = sega_program(-1.0 if reverse else 1.0).run(
        sd_pipe, num_inference_steps=s["steps"], guidance_scale=s["scale"], generator=seed(), output_type="np"
    ).images
    unedited = plain(sd_pipe, "a castle", num_inference_steps=s["steps"], guidance_scale=s["scale"])
    assert abs(expected - unedited).max() > 1e-3  # the edit is visible ...
    assert abs(got - expected).max() < 1e-5  # ... and ours is SEGA's to float32 rounding


# -- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("build, cls", [(tiny_pipes.sd_pipeline, StableDiffusionPipeline), (tiny_pipes.sdxl_pipeline, StableDiffusionXLPipeline)])
def test_load_pipeline_detects_sd_and_sdxl(tmp_path, build, cls):
    build().save_pretrained(tmp_path)
    pipe = load_pipeline(str(tmp_path), device="cpu", dtype=torch.float32)
    assert type(pipe) is cls
    pipe.set_progress_bar_config(disable=True)
    assert torch.isfinite(nl.compile("a castle AND glasses").run(pipe, num_inference_steps=2, output_type="pt").images).all()


def test_load_pipeline_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="neither a local folder nor a model in the Hugging Face cache"):
        load_pipeline("nobody-here/no-such-model-xyz")
    with pytest.raises(ModelLoadError, match="does not hold a diffusers pipeline"):
        load_pipeline(str(tmp_path))
    assert issubclass(ModelLoadError, RuntimeError)
