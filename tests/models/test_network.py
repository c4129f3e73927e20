"""Shapes, ranks, ratios and the recurrent invariant (chunked == whole) of the network."""

from __future__ import annotations

import pytest
import torch

from rvmatte.models import build_model


@pytest.fixture(scope="module")
def mnv3():
    torch.manual_seed(0)
    return build_model(variant="mobilenetv3", refiner="deep_guided_filter").eval()


@pytest.mark.parametrize("h,w", [(64, 64), (101, 77), (37, 150)])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.3])
def test_shapes_5d_odd_sizes(mnv3, h, w, ratio):
    src = torch.rand(2, 3, 3, h, w)
    with torch.inference_mode():
        out = mnv3(src, downsample_ratio=ratio)
    assert out.fgr.shape == (2, 3, 3, h, w)
    assert out.pha.shape == (2, 3, 1, h, w)
    assert len(out.state) == 4
    assert all(s.shape[0] == 2 for s in out.state)
    assert [s.shape[1] for s in out.state] == [16, 20, 40, 64]
    for t in (out.fgr, out.pha):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_shapes_4d(mnv3):
    src = torch.rand(1, 3, 55, 91)
    with torch.inference_mode():
        out = mnv3(src, downsample_ratio=0.7)
        seg = mnv3.segment(src)
    assert out.pha.shape == (1, 1, 55, 91) and out.fgr.shape == (1, 3, 55, 91)
    assert seg.seg.shape == (1, 1, 55, 91)
    # a 4-D call's state feeds the next 4-D call
    with torch.inference_mode():
        out2 = mnv3(src, out.state, downsample_ratio=0.7)
    assert out2.pha.shape == out.pha.shape


@pytest.mark.parametrize("refiner", ["fast_guided_filter", "deep_guided_filter"])
@pytest.mark.parametrize("ratio", [1.0, 0.45])
def test_chunked_equals_whole(refiner, ratio):
    torch.manual_seed(1)
    model = build_model(variant="mobilenetv3", refiner=refiner).eval()
    src = torch.rand(1, 7, 3, 72, 96)
    with torch.inference_mode():
        whole = model(src, downsample_ratio=ratio)
        state, phas, fgrs = None, [], []
        for chunk in (src[:, :3], src[:, 3:4], src[:, 4:]):
            out = model(chunk, state, downsample_ratio=ratio)
            state = out.state
            phas.append(out.pha)
            fgrs.append(out.fgr)
        # frame by frame with 4-D input, too
        state4, phas4 = None, []
        for t in range(src.shape[1]):
            o = model(src[:, t], state4, downsample_ratio=ratio)
            state4 = o.state
            phas4.append(o.pha)
    torch.testing.assert_close(torch.cat(phas, 1), whole.pha, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(fgrs, 1), whole.fgr, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(phas4, 1), whole.pha, atol=1e-5, rtol=0)
    for a, b in zip(state, whole.state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_state_changes_output(mnv3):
    """The recurrent state is really used: the same frame gives a different matte with history."""
    src = torch.rand(1, 4, 3, 64, 64)
    with torch.inference_mode():
        seq = mnv3(src)
        alone = mnv3(src[:, -1:])
    assert (seq.pha[:, -1:] - alone.pha).abs().max() > 1e-6


def test_resnet50_shapes():
    torch.manual_seed(0)
    model = build_model(variant="resnet50", refiner="fast_guided_filter").eval()
    src = torch.rand(1, 2, 3, 50, 66)
    with torch.inference_mode():
        out = model(src, downsample_ratio=0.8)
    assert out.pha.shape == (1, 2, 1, 50, 66)
    assert [s.shape[1] for s in out.state] == [16, 32, 64, 128]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_invalid_ratio(mnv3, bad):
    with pytest.raises(ValueError, match="downsample_ratio"):
        mnv3(torch.rand(1, 3, 32, 32), downsample_ratio=bad)


def test_invalid_shape(mnv3):
    with pytest.raises(ValueError, match="src must be"):
        mnv3(torch.rand(1, 4, 32, 32))


def test_deep_guided_filter_has_808_parameters():
    model = build_model(variant="mobilenetv3", refiner="deep_guided_filter")
    assert sum(p.numel() for p in model.refiner.parameters()) == 808
