"""Fast paths: BatchNorm folding, channels_last runner, the automatic choice."""

from __future__ import annotations

import json

import pytest
import torch

from rvmatte.errors import RvmatteError
from rvmatte.runtime import choose, make_runner, torch_runners
from rvmatte.export.check import max_abs_diff
from rvmatte.runtime.cache import cache_dir

from .conftest import TOL, random_model


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_fuse_batchnorm_parity(variant):
    m = random_model("deep_guided_filter", variant=variant)
    n_bn = torch_runners.count_batchnorm(m)
    fused = torch_runners.fuse_batchnorm(m)
    assert torch_runners.count_batchnorm(fused) == 0 and torch_runners.count_batchnorm(m) == n_bn > 0
    size = (45, 70) if variant == "resnet50" else (77, 130)
    diffs = max_abs_diff(m, fused, size=size, ratios=(1.0, 0.5), frames=2)
    assert max(diffs.values()) <= TOL, diffs


def test_torch_fast_runner_parity():
    m = random_model("fast_guided_filter")
    runner = make_runner("torch-fast", m)
    assert runner.channels_last
    diffs = max_abs_diff(m, runner, ratios=(1.0, 0.4), frames=3, batch=2)
    assert max(diffs.values()) <= TOL, diffs


def test_bf16_runner_runs():
    m = random_model("fast_guided_filter")
    out = make_runner("torch-fast", m, dtype="bfloat16")(torch.rand(1, 3, 64, 64), None, 0.5)
    assert out.fgr.dtype == torch.bfloat16 and out.fgr.shape == (1, 3, 64, 64)


def test_unknown_backend():
    with pytest.raises(RvmatteError, match="unknown backend"):
        make_runner("tensorrt", random_model("fast_guided_filter"))


def test_choose_backend_measures_once_and_caches():
    m = random_model("fast_guided_filter")
    timings = {}
    best = choose.choose_backend(m, 48, 64, 0.5, frames=1, timings=timings)
    assert best in choose.DEFAULT_CANDIDATES["cpu"]
    assert set(choose.DEFAULT_CANDIDATES["cpu"]) <= set(timings)
    assert timings[best] == min(v for k, v in timings.items() if not k.endswith(".error"))
    saved = json.loads((cache_dir() / choose.CHOICE_FILE).read_text())
    assert best in saved.values()
    # the cached answer is returned without measuring again
    again = choose.choose_backend(m, 48, 64, 0.5, timings=(t := {}))
    assert again == best and t == {}


def test_gpu_paths_fall_back_on_cpu():
    """'compile' on CUDA only by default; with no GPU the chooser never offers it."""
    m = random_model("fast_guided_filter")
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert not choose._available("compile", torch.device("cpu")) or \
        __import__("os").environ.get("RVMATTE_TRY_COMPILE") == "1"
    assert choose.choose_backend(m, 32, 32, 1.0, candidates=["torch"], use_cache=False) == "torch"
