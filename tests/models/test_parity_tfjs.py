"""Parity of our network + converted weights with the official TF.js graph.

The golden fixtures were made once with the official model running in TensorFlow.js
(``scripts/make_golden_fixtures.py``): 512x288 frames of a real clip, carried recurrently.
The graph differs from the official PyTorch semantics (which we follow) in two known ways:
its ImageNet constants were quantised by the converter, and at ratio < 1 its guided filter uses
a VALID box filter and TF-style resize sizes. Substituting exactly those two things must make
us agree with the graph to 1e-4; with what we ship the difference is small and measured here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import rvmatte


def _golden(fixtures_dir, name):
    data = dict(np.load(fixtures_dir / name))
    if "src" not in data:  # the ratio-0.5 run reuses the first frames of the ratio-1 input
        src = np.load(fixtures_dir / "golden_tfjs_r1.npz")["src"]
        data["src"] = src[: len(data["pha"])]
    return data


def _src(data):
    return torch.from_numpy(data["src"]).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def _graph_constants_model(fixtures_dir):
    consts = json.loads((fixtures_dir / "tfjs_constants.json").read_text())
    model = rvmatte.load_model(device="cpu")
    std = [1.0 / np.float32(v) for v in consts["inv_std"]]
    model.backbone.set_normalization(consts["mean"], std)
    return model


def _run(model, src, ratio, step=None):
    """Recurrent run frame by frame (as the graph was run); returns pha (T,H,W), fgr (T,H,W,3)."""
    state, phas, fgrs = None, [], []
    with torch.inference_mode():
        for t in range(src.shape[1]):
            fgr, pha, state = (step or model)(src[:, t], state, ratio)
            phas.append(pha[0, 0])
            fgrs.append(fgr[0].permute(1, 2, 0))
    return torch.stack(phas).numpy(), torch.stack(fgrs).numpy()


def _tfjs_port_step(model):
    """Our modules with the TF.js port's downsample sizes and VALID-box guided filter."""

    def step(src, state, ratio):
        H, W = src.shape[-2:]
        h, w = int(np.float32(H) * np.float32(ratio)), int(np.float32(W) * np.float32(ratio))
        src_sm = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)
        hid, rec = model._decode(src_sm, state)
        fgr_res, pha = model.project_mat(hid).split([3, 1], dim=1)
        lr_x = torch.cat([src_sm, src_sm.mean(1, keepdim=True)], 1)
        lr_y = torch.cat([fgr_res, pha], 1)
        hr_x = torch.cat([src, src.mean(1, keepdim=True)], 1)

        def box(x):
            c = x.shape[1]
            x = F.conv2d(x, torch.full((c, 1, 3, 1), np.float32(1 / 3)), groups=c)
            return F.conv2d(x, torch.full((c, 1, 1, 3), np.float32(1 / 3)), groups=c)

        mx, my = box(lr_x), box(lr_y)
        a = (box(lr_x * lr_y) - mx * my) / (box(lr_x * lr_x) - mx * mx + 1e-5)
        b = my - a * mx
        up = lambda t: F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
        fgr_res, pha = (up(a) * hr_x + up(b)).split([3, 1], dim=1)
        return (fgr_res + src).clamp(0, 1), pha.clamp(0, 1), rec

    return step


def test_exact_conversion_ratio1(fixtures_dir):
    """With the graph's quantised constants, the conversion is exact to 1e-4 over 20 frames."""
    data = _golden(fixtures_dir, "golden_tfjs_r1.npz")
    assert data["src"].shape == (20, 288, 512, 3)
    pha, fgr = _run(_graph_constants_model(fixtures_dir), _src(data), 1.0)
    d = np.abs(pha - data["pha"])
    print(f"graph constants, ratio 1: max {d.max():.3g} mean {d.mean():.3g}")
    assert d.max() <= 1e-4, f"max |dalpha| {d.max():.3g}"
    assert np.abs(fgr[-1] - data["fgr_last"]).max() <= 1e-4
    # the golden matte is a real one (a person, not all zeros)
    assert 0.1 < data["pha"].mean() < 0.9


def test_exact_conversion_ratio05_with_port_filter(fixtures_dir):
    """At ratio 0.5 the remaining difference is only the TF port's guided filter and sizes."""
    data = _golden(fixtures_dir, "golden_tfjs_r05.npz")
    model = _graph_constants_model(fixtures_dir)
    pha, _ = _run(model, _src(data), 0.5, step=_tfjs_port_step(model))
    d = np.abs(pha - data["pha"])
    print(f"port emulation, ratio 0.5: max {d.max():.3g} mean {d.mean():.3g}")
    # The guided filter divides by (var + 1e-5): float rounding in flat regions is amplified,
    # so the bound is looser than at ratio 1; the mean shows nothing else differs.
    assert d.max() <= 1e-3 and d.mean() <= 1e-6, f"max {d.max():.3g} mean {d.mean():.3g}"


@pytest.mark.parametrize("name,ratio,max_tol,mean_tol", [
    ("golden_tfjs_r1.npz", 1.0, 2e-2, 5e-5),
    # max is at the frame border, where the port's VALID box filter has no value at all
    ("golden_tfjs_r05.npz", 0.5, 0.5, 2e-3),
])
def test_shipped_model_close_to_graph(fixtures_dir, pretrained, name, ratio, max_tol, mean_tol):
    """What we ship (exact constants, official PyTorch guided filter) vs the graph."""
    data = _golden(fixtures_dir, name)
    pha, _ = _run(pretrained, _src(data), ratio)
    d = np.abs(pha - data["pha"])
    print(f"ratio {ratio}: max {d.max():.3g} mean {d.mean():.3g}")
    assert d.mean() <= mean_tol and d.max() <= max_tol
