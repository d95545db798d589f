"""diffusers' own conventions, reproduced by ``run(pipe)`` on tiny offline pipelines.

No CFG at ``guidance_scale <= 1`` (and on LCM-distilled UNets); ``negative_prompt=None`` versus
``""``; multi-vector textual inversion; text-encoder LoRA scale; ``clip_skip``; prompt editing on
the whole trajectory across an SDXL base/refiner split; emphasis that cannot turn NaN; a UNet
forward wrapped without ``functools.wraps``; PAG refused before the loop; concurrency; and the
pipeline left as it was after every refusal and error.
"""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    StableDiffusionPAGPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
)

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import UnsupportedFeatureError, tiny  # noqa: E402
from neutral_lang.backends.diffusers.runner import DenoiserBusyError  # noqa: E402
from neutral_lang.backends.diffusers.text_encoding import EmphasisWarning, PromptEncoder  # noqa: E402
from neutral_lang.backends.diffusers.tiny import quiet  # noqa: E402
from diffusers_helpers import UNetCalls, hooks_on, seed  # noqa: E402

STEPS = 3


def plain(pipe, prompt, **kwargs):
    return pipe(prompt, **{"num_inference_steps": STEPS, "generator": seed(), "output_type": "latent", **kwargs}).images


def ours(pipe, program, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "generator": seed(), "output_type": "latent", **kwargs}
    return nl.compile(program).run(pipe, **kwargs).images


def diff(a, b) -> float:
    return float((a - b).abs().max())


# -- no CFG at guidance_scale <= 1 ----------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_without_cfg_a_one_part_prompt_is_the_conditional_prediction(any_pipe, scale):
    with UNetCalls(any_pipe.unet) as calls:
        castle = ours(any_pipe, "a castle", guidance_scale=scale)
    assert calls.batches == [1] * STEPS  # no uncond row at all
    assert diff(castle, plain(any_pipe, "a castle", guidance_scale=scale)) == 0.0
    assert diff(castle, ours(any_pipe, "a dog", guidance_scale=scale)) > 1e-3  # the prompt is not erased


def test_without_cfg_a_multi_part_prompt_is_composed_at_scale_one(sd_pipe):
    prompt = "a castle AND_PERP a monster :-1 AND glasses :0.5"
    at_zero = ours(sd_pipe, prompt, guidance_scale=0.0)
    assert diff(at_zero, ours(sd_pipe, prompt, guidance_scale=0.5)) == 0.0  # the scale is not used
    assert diff(at_zero, ours(sd_pipe, prompt, guidance_scale=7.5)) > 1e-3
    assert torch.isfinite(at_zero).all()


def test_lcm_distilled_unet_runs_without_cfg():
    pipe = quiet(StableDiffusionPipeline(**tiny.sd_components(unet_options={"time_cond_proj_dim": 8})))
    assert diff(ours(pipe, "a castle", guidance_scale=8.0), plain(pipe, "a castle", guidance_scale=8.0)) == 0.0
    with UNetCalls(pipe.unet) as calls:
        ours(pipe, "a castle AND glasses", guidance_scale=8.0)
    assert calls.batches == [3] * STEPS  # uncond + 2, composed at scale 1 on the embedded guidance


# -- negative prompts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("negative", [None, "", "a dog"], ids=["None", "empty", "text"])
def test_negative_prompt_means_what_it_means_to_the_pipeline(sdxl_pipe, negative):
    assert diff(ours(sdxl_pipe, "a castle", negative_prompt=negative), plain(sdxl_pipe, "a castle", negative_prompt=negative)) <= 1e-5


def test_sdxl_none_and_empty_negative_prompts_differ(sdxl_pipe):
    assert sdxl_pipe.config.force_zeros_for_empty_prompt
    assert diff(ours(sdxl_pipe, "a castle"), ours(sdxl_pipe, "a castle", negative_prompt="")) > 1e-3


# -- textual inversion, LoRA, clip skip ------------------------------------------------------------


def test_multi_vector_textual_inversion_is_expanded_as_diffusers_does():
    pipe = tiny.sd_pipeline()
    pipe.load_textual_inversion(torch.randn(3, tiny.TEXT_HIDDEN, generator=seed(7)), token="<toy>",
                                tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder)
    vocab = pipe.tokenizer.get_vocab()
    tokens = PromptEncoder(pipe).tokenize("a (<toy>:1.2) castle", pipe.tokenizer)[0].tokens
    assert [vocab[t] for t in ("<toy>", "<toy>_1", "<toy>_2")] == list(tokens[2:5])
    assert diff(ours(pipe, "a <toy> castle"), plain(pipe, "a <toy> castle")) <= 1e-5


def test_lora_scale_reaches_the_unet_and_the_text_encoder():
    peft = pytest.importorskip("peft")
    pipe = tiny.sd_pipeline()
    pipe.unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], init_lora_weights=False),
        pipe.text_encoder,
    )
    loaded = PromptEncoder(pipe).encode("a castle").hidden
    halved = PromptEncoder(pipe, lora_scale=0.5).encode("a castle").hidden
    assert diff(loaded, halved) > 1e-3
    assert torch.equal(PromptEncoder(pipe).encode("a castle").hidden, loaded)  # the scale is undone
    for scale in (0.5, 0.0):
        kwargs = {"cross_attention_kwargs": {"scale": scale}}
        assert diff(ours(pipe, "a castle", **kwargs), plain(pipe, "a castle", **kwargs)) <= 1e-5


def test_sdxl_clip_skip_equals_the_pipeline(sdxl_pipe):
    skipped = ours(sdxl_pipe, "a castle", clip_skip=1)
    assert diff(skipped, plain(sdxl_pipe, "a castle", clip_skip=1)) <= 1e-5
    assert diff(skipped, ours(sdxl_pipe, "a castle")) > 1e-3


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sdxl_clip_skip_leaves_the_negative_prompt_alone_as_the_pipeline(sdxl_pipe, negative):
    # diffusers' SDXL encode_prompt skips layers for the prompt only: the negative prompt reads
    # hidden_states[-2] whatever clip_skip is.
    kwargs = {"clip_skip": 1, "guidance_scale": 7.5, "negative_prompt": negative, "num_inference_steps": 2}
    expected = plain(sdxl_pipe, "a castle", **kwargs)
    assert diff(ours(sdxl_pipe, "a castle", **kwargs), expected) <= 1e-5
    assert diff(ours(sdxl_pipe, "a castle", max_batch=64, **kwargs), expected) <= 1e-5  # through the hooks


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sd_clip_skip_leaves_the_negative_prompt_alone_as_diffusers_formula(sd_pipe, negative):
    # diffusers 0.42's own SD encode_prompt(clip_skip=...) fails on transformers 5 (it looks for
    # text_encoder.text_model), so its formula is written out: the prompt is layer -(clip_skip + 1)
    # through the final layer norm, the negative prompt the encoder's last output ([0]).
    tokenizer, encoder = sd_pipe.tokenizer, sd_pipe.text_encoder

    def ids(text):
        padded = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        return padded.input_ids

    with torch.no_grad():
        prompt_embeds = encoder.final_layer_norm(encoder(ids("a castle"), output_hidden_states=True).hidden_states[-2])
        negative_embeds = encoder(ids(negative))[0]
    kwargs = {"guidance_scale": 7.5, "num_inference_steps": 2}
    embeds = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
    expected = sd_pipe(generator=seed(), output_type="latent", **embeds, **kwargs).images
    kwargs.update(clip_skip=1, negative_prompt=negative)
    assert diff(ours(sd_pipe, "a castle", **kwargs), expected) <= 1e-5
    assert diff(ours(sd_pipe, "a castle", max_batch=64, **kwargs), expected) <= 1e-5  # through the hooks


# -- base/refiner: prompt editing counted on the whole trajectory ----------------------------------


def test_prompt_editing_switches_on_the_whole_trajectory_across_a_refiner(sdxl_pipe):
    refiner = quiet(StableDiffusionXLImg2ImgPipeline(**sdxl_pipe.components))
    encoder = PromptEncoder(sdxl_pipe)
    castle, dog = encoder.encode("a castle").hidden, encoder.encode("a dog").hidden
    program = nl.compile("a [castle:dog:0.5]")  # 4 steps: "a castle" at steps 0-2, "a dog" at 3
    with UNetCalls(sdxl_pipe.unet) as calls:  # the refiner shares the UNet
        half = program.run(sdxl_pipe, num_inference_steps=4, denoising_end=0.5, output_type="latent").images
        program.run(refiner, image=half, num_inference_steps=4, denoising_start=0.5, output_type="latent")
    assert calls.batches == [2] * 4
    seen = ["castle" if torch.equal(h[1], castle) else "dog" if torch.equal(h[1], dog) else "?" for h in calls.hidden]
    assert seen == ["castle", "castle", "castle", "dog"]


# -- emphasis never turns NaN ----------------------------------------------------------------------


def test_original_emphasis_skips_the_mean_restoration_when_the_mean_is_zero(sd_pipe):
    encoder = PromptEncoder(sd_pipe)
    z = torch.tensor([[[1.0], [-1.0], [1.0]]])  # [1 chunk, 3 tokens, 1 feature]
    weights = [(1.0, 2.0, 1.0)]  # z * w = (1, -2, 1): mean 0
    with pytest.warns(EmphasisWarning, match="mean zero"):
        out = encoder._emphasize(z, weights, "x")
    assert torch.equal(out, torch.tensor([[[1.0], [-2.0], [1.0]]]))
    ordinary = encoder._emphasize(torch.tensor([[[1.0], [2.0], [3.0]]]), [(1.0, 2.0, 1.0)], "x")
    assert torch.allclose(ordinary.mean(), torch.tensor(2.0))  # the mean is restored elsewhere


# -- the UNet call, read by its class signature ----------------------------------------------------


def test_a_forward_wrapper_without_functools_wraps(sd_pipe):
    original = sd_pipe.unet.forward
    sd_pipe.unet.forward = lambda *args, **kwargs: original(*args, **kwargs)
    try:
        got = ours(sd_pipe, "a castle")
        multi = ours(sd_pipe, "a castle AND glasses")
    finally:
        del sd_pipe.unet.forward
    assert diff(got, plain(sd_pipe, "a castle")) <= 1e-5
    assert diff(multi, ours(sd_pipe, "a castle AND glasses")) == 0.0


# -- the pipeline is left as it was ------------------------------------------------------------------


def state(pipe):
    return (
        {k: type(v).__name__ for k, v in pipe.unet.attn_processors.items()},
        dict(pipe.scheduler.config),
        hooks_on(pipe.unet),
        "forward" in vars(pipe.unet),
    )


def test_pag_is_refused_before_the_loop_and_the_pipe_is_unchanged(sd_pipe):
    pag = quiet(StableDiffusionPAGPipeline(**sd_pipe.components, pag_applied_layers=["mid"]))
    before = state(pag)
    with UNetCalls(pag.unet) as calls, pytest.raises(UnsupportedFeatureError, match="pag_scale"):
        ours(pag, "a castle AND glasses", pag_scale=3.0)
    assert calls.batches == [] and state(pag) == before
    assert diff(plain(pag, "a castle", pag_scale=2.0), plain(pag, "a castle", pag_scale=2.0)) == 0.0  # next plain call works
    assert diff(ours(pag, "a castle", pag_scale=0.0), plain(pag, "a castle", pag_scale=0.0)) <= 1e-5


def test_pipe_is_unchanged_after_errors(sd_pipe):
    before = state(sd_pipe)
    reference = plain(sd_pipe, "a castle")

    def fail(pipe, step, timestep, tensors):
        raise ValueError("callback failed")

    failures = [
        (ValueError, dict(callback_on_step_end=fail)),
        (TypeError, dict(prompt_embeds=torch.zeros(1, 77, 32))),
        (ValueError, dict(max_batch=-1)),
        (ValueError, dict(emphasis="loud")),
        (ValueError, dict(negative_prompt=["a", "b", "c"])),
    ]
    for error, kwargs in failures:
        with pytest.raises(error):
            ours(sd_pipe, "a castle AND_PERP monster :-1", **kwargs)
        assert state(sd_pipe) == before, kwargs
    assert diff(plain(sd_pipe, "a castle"), reference) == 0.0


# -- concurrency -----------------------------------------------------------------------------------


def test_a_plain_call_on_another_pipe_sharing_the_unet_during_a_run_is_exact(sd_pipe):
    other = quiet(StableDiffusionPipeline(**sd_pipe.components))
    alone = plain(other, "a dog", guidance_scale=5.0)
    seen = {}

    def at_step(pipe, step, timestep, tensors):
        if step == 0:  # our hooks are on the shared UNet now
            thread = threading.Thread(target=lambda: seen.setdefault("latents", plain(other, "a dog", guidance_scale=5.0)))
            thread.start()
            thread.join()
        return tensors

    ran = ours(sd_pipe, "a castle AND_PERP monster :-1", callback_on_step_end=at_step)
    assert diff(seen["latents"], alone) == 0.0
    assert diff(ran, ours(sd_pipe, "a castle AND_PERP monster :-1")) == 0.0


def test_two_runs_on_one_pipe_take_turns(sd_pipe):
    prompts = ["a castle AND_PERP monster :-1", "a dog AND_TOPK glasses"]
    alone = [ours(sd_pipe, p) for p in prompts]
    results, errors = {}, []
    second = {}

    def at_step(pipe, step, timestep, tensors):
        if step == 0 and "thread" not in second:
            # start a second run while this one holds the UNet; it must wait, not interleave
            second["thread"] = threading.Thread(target=work, args=(1,))
            second["thread"].start()
            second["thread"].join(timeout=0.5)
            second["waited"] = second["thread"].is_alive()
        return tensors

    def work(i):
        try:
            extra = {"callback_on_step_end": at_step} if i == 0 else {}
            results[i] = ours(sd_pipe, prompts[i], **extra)
        except Exception as caught:  # surfaced below
            errors.append(caught)

    work(0)
    second["thread"].join()
    assert errors == []
    assert second["waited"]
    assert diff(results[0], alone[0]) == 0.0 and diff(results[1], alone[1]) == 0.0


def test_a_run_inside_a_run_on_the_same_thread_fails_fast(sd_pipe):
    def nested(pipe, step, timestep, tensors):
        ours(sd_pipe, "a dog")
        return tensors

    with pytest.raises(DenoiserBusyError, match="already drives"):
        ours(sd_pipe, "a castle", callback_on_step_end=nested)
    assert hooks_on(sd_pipe.unet) == 0
