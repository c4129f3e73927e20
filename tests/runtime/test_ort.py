"""OnnxRuntimeRunner: the model's call signature, caching, errors."""

from __future__ import annotations

import pytest
import torch

from rvmatte.errors import RvmatteError, WeightsError
from rvmatte.export.check import max_abs_diff
from rvmatte.runtime.cache import cache_dir
from rvmatte.runtime.ort import OnnxRuntimeRunner

from .conftest import TOL, random_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fgf():
    return random_model("fast_guided_filter", seed=1)


@pytest.fixture(scope="module")
def runner(fgf):
    return OnnxRuntimeRunner(model=fgf, device="cpu", threads=1)


def test_exports_into_cache_once(fgf, runner):
    assert runner.onnx_path.parent == cache_dir() / "onnx"
    mtime = runner.onnx_path.stat().st_mtime_ns
    again = OnnxRuntimeRunner(model=fgf, device="cpu")
    assert again.onnx_path == runner.onnx_path and again.onnx_path.stat().st_mtime_ns == mtime


def test_clip_input_and_state(fgf, runner):
    """(B,T,3,H,W) in one call equals frame by frame, equals PyTorch; state None first."""
    src = torch.rand(1, 4, 3, 70, 90)
    with torch.inference_mode():
        ref = fgf(src, None, 0.5)
    out = runner(src, None, 0.5)
    assert out.fgr.shape == src.shape and out.pha.shape == (1, 4, 1, 70, 90)
    assert float((out.fgr - ref.fgr).abs().max()) <= TOL
    assert float((out.pha - ref.pha).abs().max()) <= TOL
    first = runner(src[:, :2], None, 0.5)
    rest = runner(src[:, 2:], first.state, 0.5)
    assert float((rest.fgr - out.fgr[:, 2:]).abs().max()) <= TOL
    assert all(float((a - b).abs().max()) <= TOL for a, b in zip(rest.state, ref.state))


def test_parity_batch(fgf, runner):
    diffs = max_abs_diff(fgf, runner, size=(45, 81), ratios=(1.0, 0.6), frames=2, batch=3)
    assert max(diffs.values()) <= TOL, diffs


def test_errors(fgf, runner, tmp_path):
    with pytest.raises(ValueError, match="downsample_ratio"):
        runner(torch.rand(1, 3, 32, 32), None, 0)
    with pytest.raises(ValueError, match="src"):
        runner(torch.rand(1, 4, 32, 32), None, 1)
    with pytest.raises(WeightsError, match="not found"):
        OnnxRuntimeRunner(onnx_path=tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot load"):
        OnnxRuntimeRunner(onnx_path=bad)
    with pytest.raises(RvmatteError, match="float32 and float16"):
        OnnxRuntimeRunner(model=fgf, device="cpu", dtype="bfloat16")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RvmatteError, match="CUDA"):
            OnnxRuntimeRunner(onnx_path=runner.onnx_path, device="cuda")


def test_keywords_match_load_model(fgf):
    """Matter(backend='onnxruntime') passes load_model's keywords."""
    import inspect

    import rvmatte

    params = inspect.signature(OnnxRuntimeRunner).parameters
    for name in inspect.signature(rvmatte.load_model).parameters:
        assert name in params


def test_default_constructor_bundled_weights():
    """``OnnxRuntimeRunner()`` as Matter(backend='onnxruntime') makes it: bundled weights."""
    import rvmatte
    from rvmatte.errors import WeightsError as _WE

    try:
        model = rvmatte.load_model(device="cpu")
    except _WE as e:  # bundled weights not installed in this checkout
        pytest.skip(str(e))
    runner = OnnxRuntimeRunner(device="cpu", dtype="float32", refiner=None, variant="mobilenetv3",
                               weights="default")
    diffs = max_abs_diff(model, runner, size=(90, 160), ratios=(1.0, 0.5), frames=2)
    assert max(diffs.values()) <= TOL, diffs


def test_matter_onnxruntime_backend_matches_torch(fgf):
    """The contract with the streaming session: Matter(backend='onnxruntime') uses this runner."""
    import numpy as np

    session = pytest.importorskip("rvmatte.inference.session")
    frames = (np.random.default_rng(0).random((3, 72, 128, 3)) * 255).astype(np.uint8)
    ref = session.Matter(fgf, downsample_ratio=0.5, device="cpu")
    got = session.Matter(fgf, downsample_ratio=0.5, device="cpu", backend="onnxruntime")
    for t in range(3):
        fgr_r, pha_r, _ = ref.process(frames[t])
        fgr_g, pha_g, _ = got.process(frames[t])
        assert np.abs(pha_r - pha_g).max() <= TOL and np.abs(fgr_r - fgr_g).max() <= TOL


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_pipelined_runner_matches(fgf, runner, ratio):
    """pipeline=True (network and refiner overlapped across frames) gives the same results."""
    pipe = OnnxRuntimeRunner(onnx_path=runner.onnx_path, device="cpu", pipeline=True)
    src = torch.rand(2, 4, 3, 61, 97)
    with torch.inference_mode():
        ref = fgf(src, None, ratio)
    first = pipe(src[:, :3], None, ratio)
    rest = pipe(src[:, 3], first.state, ratio)  # a single (B,3,H,W) frame goes through too
    assert float((first.fgr - ref.fgr[:, :3]).abs().max()) <= TOL
    assert float((first.pha - ref.pha[:, :3]).abs().max()) <= TOL
    assert float((rest.fgr - ref.fgr[:, 3]).abs().max()) <= TOL
    assert all(float((a - b).abs().max()) <= TOL for a, b in zip(rest.state, ref.state))
    pipe.close()
