"""The identity law as a test matrix, on tiny offline SD and SDXL pipelines.

For each case: a one-part program equals the plain pipeline (max abs difference <= 1e-5 on float32
latents, ``output_type="latent"``) unhooked, through the hooks, and through ``program.guide``, and a multi-part program makes exactly one batched UNet call
per step holding every conditioning it needs (the uncond and each part's text, as the encoder
makes them under the case's clip skip and LoRA scale; the ControlNet called once per step too; the
IP-Adapter image embeddings for every row).

The full product (2 families x 3 tasks x 5 add-ons x 3 negatives x 3 scales x 2 batch sizes x clip
skip) would be ~1000 runs; the cases below are a covering subset: every family has every task,
every add-on, every negative, every guidance scale (0, 1, 7.5), both batch sizes and clip skip at
least once, and each add-on meets more than one task and scale. SD's ``clip_skip`` is not in the
matrix: diffusers 0.42's own SD ``encode_prompt(clip_skip=...)`` fails on transformers 5 (see
``test_clip_skip_is_diffusers_clip_skip`` in ``tests/test_diffusers.py`` for its formula).
"""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import tiny  # noqa: E402
from neutral_lang.backends.diffusers.text_encoding import PromptEncoder  # noqa: E402
from neutral_lang.backends.torch.executor import Trace  # noqa: E402
from diffusers_helpers import UNetCalls, seed  # noqa: E402

STEPS = 2
SIZE = tiny.IMAGE_SIZE
MULTI = "a castle AND_PERP a monster :-1 AND glasses :0.5"
MULTI_TEXTS = ("a castle", "a monster", "glasses")

CLASSES = {
    ("sd", "txt2img", False): "StableDiffusionPipeline",
    ("sd", "img2img", False): "StableDiffusionImg2ImgPipeline",
    ("sd", "inpaint", False): "StableDiffusionInpaintPipeline",
    ("sd", "txt2img", True): "StableDiffusionControlNetPipeline",
    ("sd", "img2img", True): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd", "inpaint", True): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "txt2img", False): "StableDiffusionXLPipeline",
    ("sdxl", "img2img", False): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint", False): "StableDiffusionXLInpaintPipeline",
    ("sdxl", "txt2img", True): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img", True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint", True): "StableDiffusionXLControlNetInpaintPipeline",
}

# (family, task, add-on, settings): settings are negative, guidance_scale, images per prompt,
# clip_skip, LoRA scale.
CASES = [
    ("sd", "txt2img", "none", dict(negative=None, scale=7.5)),
    ("sd", "txt2img", "lora", dict(negative="a dog", scale=7.5, lora=0.5)),
    ("sd", "txt2img", "ti", dict(negative="", scale=1.0, n=2)),
    ("sd", "img2img", "controlnet", dict(negative="a dog", scale=7.5, n=2)),
    ("sd", "img2img", "ip", dict(negative=None, scale=0.0)),
    ("sd", "inpaint", "controlnet", dict(negative=None, scale=0.0)),
    ("sd", "inpaint", "ip", dict(negative="a dog", scale=7.5)),
    ("sd", "inpaint", "lora", dict(negative="", scale=1.0, lora=0.0)),
    ("sdxl", "txt2img", "controlnet", dict(negative=None, scale=7.5)),
    ("sdxl", "txt2img", "ip", dict(negative="", scale=7.5, n=2)),
    ("sdxl", "txt2img", "ti", dict(negative="a dog", scale=0.0, clip_skip=1)),
    ("sdxl", "img2img", "none", dict(negative="", scale=1.0, clip_skip=1)),
    ("sdxl", "img2img", "lora", dict(negative=None, scale=7.5, lora=0.5, n=2)),
    ("sdxl", "inpaint", "controlnet", dict(negative="a dog", scale=1.0)),
    ("sdxl", "inpaint", "ip", dict(negative=None, scale=0.0, clip_skip=1)),
]


def lora(components: dict) -> None:
    peft = pytest.importorskip("peft")
    config = dict(r=4, lora_alpha=4, init_lora_weights=False)
    components["unet"].add_adapter(peft.LoraConfig(target_modules=["to_q", "to_k", "to_v", "to_out.0"], **config))
    for name in ("text_encoder", "text_encoder_2"):
        if components.get(name) is not None:
            target = ["q_proj", "k_proj", "v_proj", "out_proj"]
            peft.inject_adapter_in_model(peft.LoraConfig(target_modules=target, **config), components[name])


def textual_inversion(components: dict) -> None:
    """A three-vector embedding ``<toy>`` in every tokenizer/encoder pair, loaded by diffusers."""
    loader = diffusers.StableDiffusionPipeline(**tiny.sd_components())  # only its loader is used
    pairs = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
    for n, (tok, enc) in enumerate(pairs):
        if components.get(enc) is not None:
            vectors = torch.randn(3, tiny.TEXT_HIDDEN, generator=seed(10 + n))
            loader.load_textual_inversion(vectors, token="<toy>", tokenizer=components[tok], text_encoder=components[enc])


@pytest.fixture(scope="module")
def pipes():
    """Pipelines by (family, task, add-on), built on first use; each add-on has its own components."""
    built: dict = {}
    components: dict = {}

    def get(family, task, addon):
        key = (family, task, addon)
        if key in built:
            return built[key]
        base_key = (family, addon if addon in ("ip", "lora", "ti") else "none")
        if base_key not in components:
            comps = (tiny.sd_components if family == "sd" else tiny.sdxl_components)()
            if addon == "ip":
                tiny.load_ip_adapter(comps["unet"])
            if addon == "lora":
                lora(comps)
            components[base_key] = comps
            if addon == "ti":  # into the tokenizers and encoders every pipe of these components shares
                textual_inversion(comps)
        comps = dict(components[base_key])
        if addon == "controlnet":
            comps["controlnet"] = tiny.controlnet(comps["unet"])
        cls = getattr(diffusers, CLASSES[family, task, addon == "controlnet"])
        accepted = inspect.signature(cls.__init__).parameters
        pipe = tiny.quiet(cls(**{k: v for k, v in comps.items() if k in accepted}))
        built[key] = pipe
        return pipe

    return get


def call_kwargs(task: str, addon: str, settings: dict) -> dict:
    scale = settings["scale"]
    kwargs = {
        "num_inference_steps": STEPS,
        "guidance_scale": scale,
        "output_type": "latent",
        "num_images_per_prompt": settings.get("n", 1),
    }
    picture = torch.rand(1, 3, SIZE, SIZE, generator=seed(1))
    control = torch.rand(1, 3, SIZE, SIZE, generator=seed(2))
    if task in ("img2img", "inpaint"):
        kwargs.update(image=picture, strength=0.99 if task == "inpaint" else 0.75)
    if task == "inpaint":
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., SIZE // 4 :, :] = 1.0
        kwargs["mask_image"] = mask
    if addon == "controlnet":
        kwargs["image" if task == "txt2img" else "control_image"] = control
    if addon == "ip":
        embeds = torch.randn(2, 1, tiny.TEXT_HIDDEN, generator=seed(3))
        kwargs["ip_adapter_image_embeds"] = [embeds if scale > 1 else embeds[1:]]
    if settings.get("clip_skip") is not None:
        kwargs["clip_skip"] = settings["clip_skip"]
    if settings.get("lora") is not None:
        kwargs["cross_attention_kwargs"] = {"scale": settings["lora"]}
    if settings.get("negative") is not None:
        kwargs["negative_prompt"] = settings["negative"]
    return kwargs


class Inside(UNetCalls):
    """What the UNet (and a ControlNet, and the IP-Adapter projection) execute, seen from inside."""

    def __init__(self, pipe):
        super().__init__(pipe.unet)
        self.control: list[int] = []
        self.image_rows: list[int] = []
        if getattr(pipe, "controlnet", None) is not None:
            self.add(pipe.controlnet.conv_in.register_forward_hook(lambda m, a, out: self.control.append(out.shape[0])))
        if pipe.unet.encoder_hid_proj is not None:
            self.add(pipe.unet.encoder_hid_proj.register_forward_hook(self._image))

    def _image(self, module, args, out):
        self.image_rows.append(out[0].shape[0])


def case_id(case) -> str:
    family, task, addon, settings = case
    return "-".join([family, task, addon, *(f"{k}={v!r}" for k, v in settings.items())])


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_identity_law_and_one_batched_call(pipes, case):
    family, task, addon, settings = case
    pipe = pipes(family, task, addon)
    kwargs = call_kwargs(task, addon, settings)
    prompt = "a <toy> castle" if addon == "ti" else "a castle"
    expected = pipe(prompt, generator=seed(), **kwargs).images
    negative = kwargs.pop("negative_prompt", None)
    clip_skip = kwargs.pop("clip_skip", None)
    ours = dict(kwargs, negative_prompt=negative, clip_skip=clip_skip)
    got = nl.compile(prompt).run(pipe, generator=seed(), **ours).images
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-5
    # The same through the hooks: max_batch needs them (without it the pipeline runs unhooked on
    # the program's embeddings, see docs/diffusers.md), and a trace needs program.guide as well.
    hooked = nl.compile(prompt).run(pipe, generator=seed(), max_batch=64, **ours).images
    assert float((hooked - expected).abs().max()) <= 1e-5
    traced = nl.compile(prompt).run(pipe, generator=seed(), trace=Trace(), **ours).images
    assert float((traced - expected).abs().max()) <= 1e-5

    with Inside(pipe) as inside:
        nl.compile(MULTI).run(pipe, generator=seed(), **ours)
    n = settings.get("n", 1)
    steps = len(inside.batches)
    assert steps >= 1 and inside.batches == [n * (1 + len(MULTI_TEXTS))] * steps
    if addon == "controlnet":
        assert len(inside.control) == steps
    if addon == "ip":
        assert inside.image_rows == inside.batches
    encoder = PromptEncoder(pipe, clip_skip=clip_skip, lora_scale=settings.get("lora"))
    uncond = encoder.zeros() if negative is None and family == "sdxl" else encoder.encode_negative(negative or "")
    wanted = [uncond.hidden] * n + [encoder.encode(t).hidden for t in MULTI_TEXTS for _ in range(n)]
    for hidden in inside.hidden:
        assert len(hidden) == len(wanted)
        for row, want in zip(hidden, wanted):
            assert torch.allclose(row, want, atol=1e-6)
