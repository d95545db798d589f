"""Shared fixtures: tiny random-weight diffusers pipelines (``neutral_lang.backends.diffusers.tiny``), built offline."""

from __future__ import annotations

import os

import pytest

try:
    from hypothesis import settings
except ImportError:
    settings = None

if settings is not None:
    # `make test` (and CI) draw the same examples every run, so a green main stays green; the
    # "explore" profile draws fresh ones (docs/testing.md). A failure found while exploring
    # becomes an explicit example in a test.
    settings.register_profile("ci", derandomize=True, database=None)
    settings.register_profile("explore")
    settings.load_profile(os.environ.get("NEUTRAL_LANG_HYPOTHESIS", "ci"))

try:
    import torch
except ImportError:  # the torch-free core's tests still run
    torch = None

if torch is not None:
    # The tiny models' kernels are far smaller than the cost of waking OpenMP workers: on a
    # 2-core machine a 16x16 convolution takes ~3 ms with 2 threads and ~0.06 ms with 1.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sd_pipe():
    """A tiny StableDiffusionPipeline (DDIM). Shared: tests must leave it as they found it."""
    tiny_pipes = pytest.importorskip("neutral_lang.backends.diffusers.tiny", reason="needs torch and diffusers")
    return tiny_pipes.sd_pipeline()


@pytest.fixture(scope="session")
def sdxl_pipe():
    """A tiny StableDiffusionXLPipeline (Euler). Shared: tests must leave it as they found it."""
    tiny_pipes = pytest.importorskip("neutral_lang.backends.diffusers.tiny", reason="needs torch and diffusers")
    return tiny_pipes.sdxl_pipeline()


@pytest.fixture(params=["sd", "sdxl"])
def any_pipe(request):
    """Each of the tiny pipelines in turn."""
    return request.getfixturevalue(f"{request.param}_pipe")
