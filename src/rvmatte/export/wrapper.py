"""An export-friendly view of :class:`~rvmatte.models.MattingNetwork` (no copy of the network).

The network's ``forward`` takes ``state=None`` and a Python-float ``downsample_ratio`` and
branches on it in Python; graph exporters need tensors in and tensors out. The modules here
*wrap* the model's own sub-modules (``backbone``, ``aspp``, ``decoder``, ``project_mat``,
``refiner``, via ``MattingNetwork._decode``) and change only the plumbing:

* the recurrent state is always four tensors; any shape that broadcasts to the real state
  (e.g. zeros of shape ``(1, 1, 1, 1)``) is expanded, so the first frame of a clip is fed
  zeros without knowing the state's shape (the official ONNX convention);
* the resolution-dependent sizes are computed from the input, so one graph serves every
  ``H x W``.

State shapes for a working (downsampled) image of ``h x w``: ``r_k`` is
``(B, C_k, ceil(h / 2^k), ceil(w / 2^k))`` with ``C = (16, 20, 40, 64)`` for MobileNetV3 and
``(16, 32, 64, 128)`` for ResNet-50.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models import MattingNetwork


def state_channels(model: MattingNetwork) -> tuple[int, int, int, int]:
    """Channels of ``(r1, r2, r3, r4)`` for ``model``."""
    d = model.decoder
    return (d.decode1.out_channels // 2, d.decode2.out_channels // 2,
            d.decode3.out_channels // 2, d.decode4.channels // 2)


def state_shapes(model: MattingNetwork, batch: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Shapes of ``(r1, r2, r3, r4)`` for a working image of ``h x w`` (after downsampling)."""
    shapes = []
    for c in state_channels(model):
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((batch, c, h, w))
    return shapes


class LowRes(nn.Module):
    """``src_sm (B,3,h,w), r1..r4 -> fgr_residual, pha, hid, r1..r4`` at the working resolution.

    ``r_k`` may be anything that broadcasts to the state's shape (zeros ``(1,1,1,1)`` on the
    first frame). Works under ``torch.jit.trace`` for every ``h x w`` (sizes are traced).
    """

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.model = model
        self.channels = state_channels(model)

    def forward(self, src_sm: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor):
        b, h, w = src_sm.shape[0], src_sm.shape[2], src_sm.shape[3]
        rec = []
        for r, c in zip((r1, r2, r3, r4), self.channels):
            h, w = (h + 1) // 2, (w + 1) // 2  # every encoder stage rounds up (stride 2, pad k//2)
            rec.append(r.expand(b, c, h, w))
        hid, rec_out = self.model._decode(src_sm, tuple(rec))
        fgr_residual, pha = self.model.project_mat(hid).split([3, 1], dim=-3)
        return (fgr_residual, pha, hid, *rec_out)


class Coefficients(nn.Module):
    """``src_sm (B,3,h,w), r1..r4 -> a, b, r1..r4``: the network at the working resolution and
    the refiner's linear coefficients (``(B,4,h,w)`` each; the full-resolution result is
    ``upsample(a) * [src, gray] + upsample(b)``, see
    :func:`rvmatte.models.guided_filter.apply_coefficients`)."""

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.low = LowRes(model)
        self.refiner = model.refiner

    def forward(self, src_sm: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor):
        fgr_residual, pha, hid, *rec = self.low(src_sm, r1, r2, r3, r4)
        a, b = self.refiner.coefficients(src_sm, fgr_residual, pha, hid)
        return (a, b, *rec)


class Refine(nn.Module):
    """The model's refiner: low-resolution prediction -> full resolution."""

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.refiner = model.refiner

    def forward(self, src: Tensor, src_sm: Tensor, fgr_residual: Tensor, pha: Tensor, hid: Tensor):
        return self.refiner(src, src_sm, fgr_residual, pha, hid)


def finish(src: Tensor, fgr_residual: Tensor, pha: Tensor) -> tuple[Tensor, Tensor]:
    """``fgr = clamp(src + residual)``, ``pha = clamp(pha)``, as ``MattingNetwork.forward``."""
    return (fgr_residual + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0)


def zero_state(dtype: torch.dtype = torch.float32, device=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first-frame state for an exported model: four zeros of shape ``(1, 1, 1, 1)``."""
    z = torch.zeros(1, 1, 1, 1, dtype=dtype, device=device)
    return (z, z, z, z)
