import builtins

import numpy as np
import pytest
import torch

from rvm_clips import frame_image, tiny_model
from rvmatte.errors import RvmatteError
from rvmatte.inference.session import Matter


def _frames(n=4, w=40, h=30):
    return np.stack([frame_image(i, w, h) for i in range(n)])


def test_step_equals_model_and_carries_state():
    model = tiny_model()
    m = Matter(model, downsample_ratio=0.5, backend="torch")
    frames = _frames()
    src = m.to_tensor(frames)
    out = m.step(src, None)
    assert out.fgr.shape == (4, 3, 30, 40) and out.pha.shape == (4, 1, 30, 40)
    with torch.inference_mode():
        ref = model(src[None], None, 0.5)
    assert torch.equal(out.pha, ref.pha[0])
    # chunked with the state carried == whole
    a = m.step(src[:2], None)
    b = m.step(src[2:], a.state)
    assert torch.allclose(torch.cat([a.pha, b.pha]), out.pha, atol=1e-5)


def test_process_keeps_state_and_resets_on_new_size():
    m = Matter(tiny_model())
    frames = _frames()
    pha, fgr = (out := m.process(frames)).pha, out.fgr
    assert out.state is m.state
    assert pha.shape == (4, 30, 40) and pha.dtype == np.float32
    assert fgr.shape == (4, 30, 40, 3) and fgr.dtype == np.float32
    assert 0 <= pha.min() and pha.max() <= 1
    m.reset()
    p1 = m.process(frames[:2]).pha
    p2 = m.process(frames[2]).pha          # a single (H,W,3) frame
    p3 = m.process(frames[3:]).pha
    assert m.state is not None
    np.testing.assert_allclose(np.concatenate([p1, p2, p3]), pha, atol=1e-5)
    m.process(_frames(1, 20, 16))          # a new size: state starts over, no error
    assert m.state[0].shape[-1] != p1.shape[-1]


def test_auto_ratio_per_frame_size():
    m = Matter(tiny_model())
    assert m.ratio_for(1080, 1920) == pytest.approx(512 / 1920)
    assert Matter(tiny_model(), downsample_ratio=0.25).ratio_for(1080, 1920) == 0.25


def test_invalid_backend_and_ratio():
    with pytest.raises(RvmatteError, match="unknown backend"):
        Matter(tiny_model(), backend="tensorrt")
    with pytest.raises(RvmatteError, match="downsample ratio"):
        Matter(tiny_model(), downsample_ratio=3)


def test_onnxruntime_backend_missing_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("rvmatte.runtime.ort") or name == "onnxruntime":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    import importlib
    real_im = importlib.import_module

    def fake_im(name, *a, **k):
        if name.startswith("rvmatte.runtime.ort"):
            raise ImportError(f"No module named {name!r}")
        return real_im(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module", fake_im)
    with pytest.raises(RvmatteError, match="onnxruntime"):
        Matter(tiny_model(), backend="onnxruntime")


def test_onnxruntime_backend_uses_runner(monkeypatch):
    import sys
    import types

    calls = []

    class FakeRunner:
        def __init__(self, **kw):
            self.model = kw.get("model")

        def __call__(self, src, state, ratio):
            calls.append((tuple(src.shape), ratio))
            return self.model(src, state, ratio)

    mod = types.ModuleType("rvmatte.runtime.ort")
    mod.OnnxRuntimeRunner = FakeRunner
    monkeypatch.setitem(sys.modules, "rvmatte.runtime.ort", mod)
    m = Matter(tiny_model(), backend="onnxruntime")
    pha = m.process(_frames(2)).pha
    assert calls and calls[0] == ((1, 2, 3, 30, 40), 1.0) and pha.shape == (2, 30, 40)


def test_one_default_backend_for_the_session_and_the_conversion():
    """Matter() and convert_video share one default: the model spec's (``auto``)."""
    import inspect

    from rvmatte.inference.convert import convert_video
    from rvmatte.spec import ModelSpec

    assert Matter(tiny_model()).backend == ModelSpec().backend == "auto"
    params = inspect.signature(convert_video).parameters
    assert "spec" in params


def test_spec_and_fields():
    from rvmatte.spec import ModelSpec

    spec = ModelSpec(device="cpu", downsample=0.5, backend="torch")
    m = Matter(spec, model=tiny_model())
    assert m.spec == spec and m.ratio == 0.5 and m.backend_for(0.5) == "torch"
    m2 = Matter(spec, model=tiny_model(), downsample_ratio=0.25)
    assert m2.ratio == 0.25 and m2.spec.backend == "torch"
    assert Matter(tiny_model(), backend="auto").backend_for(0.5) in ("fused", "onnxruntime",
                                                                   "torch-fast")
