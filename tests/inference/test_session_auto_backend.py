"""``Matter(backend="auto")``: the measured rule picks a fast path that matches eager torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvmatte.inference.session import Matter
from rvmatte.runtime import auto_backend


def test_rule():
    assert auto_backend("cpu", "float32", 0.25) == "fused"  # numba and onnxruntime installed
    assert auto_backend("cpu", "float32", 1.0) == "onnxruntime"  # no refiner at ratio 1
    assert auto_backend("cpu", "bfloat16", 0.25) == "torch"
    assert auto_backend("mps", "float32", 0.25) == "torch"
    assert auto_backend("cuda", "float16", 0.25) == "cudagraph"


@pytest.mark.parametrize("ratio,expected,missing", [
    (1.0, "onnxruntime", None), (0.5, "fused", None),
    (0.5, "onnxruntime", "numba"),      # what auto picks without numba
    (1.0, "torch-fast", "onnxruntime"),  # ... and without onnxruntime
])
def test_auto_matches_eager(ratio, expected, missing, monkeypatch):
    pytest.importorskip("onnxruntime")
    if missing is not None:
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == missing else real(name, *a))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 72, 120, 3), dtype=np.uint8)
    eager = Matter(device="cpu", downsample_ratio=ratio, backend="torch")
    auto = Matter(model=eager.model, downsample_ratio=ratio, backend="auto")
    assert auto.backend_for(ratio) == expected
    fgr_e, pha_e, _ = eager.process(frames)
    fgr_a, pha_a, _ = auto.process(frames)
    assert expected in auto._runners
    assert np.abs(pha_a - pha_e).max() < 1e-4
    assert np.abs(fgr_a - fgr_e).max() < 1e-4
    # the recurrent state carries on through the fast path as well
    pha_e2 = eager.process(frames[::-1]).pha
    pha_a2 = auto.process(frames[::-1]).pha
    assert np.abs(pha_a2 - pha_e2).max() < 1e-4


def test_unknown_backend():
    from rvmatte.errors import RvmatteError

    with pytest.raises(RvmatteError, match="unknown backend"):
        Matter(weights=None, device="cpu", backend="tensorrt")
