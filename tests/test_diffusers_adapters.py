"""The family adapters: dispatch, refusal before any work, and the adapter interface's contract."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import SemanticStableDiffusionPipeline  # noqa: E402

import neutral_lang as nl  # noqa: E402
from neutral_lang.backends.diffusers import (  # noqa: E402
    UnsupportedFeatureError,
    UnsupportedPipelineError,
    adapter_for,
)
from neutral_lang.backends.diffusers.adapters import FamilyAdapter, adapters  # noqa: E402
from neutral_lang.backends.diffusers.stable_diffusion import (  # noqa: E402
    StableDiffusionAdapter,
    StableDiffusionXLAdapter,
)
from diffusers_helpers import Hooks  # noqa: E402


class EncoderCalls(Hooks):
    """Counts the calls of every text encoder of a pipeline."""

    def __init__(self, pipe):
        super().__init__()
        self.count = 0
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                self.add(getattr(pipe, name).register_forward_hook(self._hit))

    def _hit(self, *args):
        self.count += 1


def test_sd_and_sdxl_pipelines_get_their_adapters(sd_pipe, sdxl_pipe):
    assert isinstance(adapter_for(sd_pipe), StableDiffusionAdapter)
    assert isinstance(adapter_for(sdxl_pipe), StableDiffusionXLAdapter)
    assert all(isinstance(a, FamilyAdapter) and a.name and a.pipelines for a in adapters())


@pytest.mark.parametrize("value", [None, "a pipe", 3])
def test_run_without_a_pipeline_is_a_type_error_naming_the_type(value):
    with pytest.raises(TypeError, match=type(value).__name__) as caught:
        nl.compile("a castle").run(value)
    assert isinstance(caught.value, UnsupportedPipelineError)
    assert "StableDiffusionPipeline" in str(caught.value)


def test_an_unsupported_pipeline_is_refused_before_any_encoding(sd_pipe):
    components = {k: v for k, v in sd_pipe.components.items() if k != "image_encoder"}
    other = SemanticStableDiffusionPipeline(**components)
    with EncoderCalls(other) as calls, pytest.raises(UnsupportedPipelineError) as caught:
        nl.compile("a castle AND glasses").run(other, num_inference_steps=2)
    message = str(caught.value)
    assert "SemanticStableDiffusionPipeline" in message
    assert "StableDiffusionPipeline" in message and "StableDiffusionXLPipeline" in message
    assert calls.count == 0


def test_a_prompt_editing_callback_is_refused_before_any_encoding(sd_pipe):
    with EncoderCalls(sd_pipe) as calls, pytest.raises(UnsupportedFeatureError, match="prompt_embeds"):
        nl.compile("a castle").run(
            sd_pipe,
            num_inference_steps=2,
            callback_on_step_end=lambda pipe, i, t, tensors: tensors,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        )
    assert calls.count == 0


def test_load_pipeline_refuses_a_model_of_an_unsupported_family(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from neutral_lang.backends.diffusers import ModelLoadError, load_pipeline

    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=2,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="DDPMPipeline.*Supported pipelines.*StableDiffusionXLPipeline"):
        load_pipeline(str(tmp_path))
