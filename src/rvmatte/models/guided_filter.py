"""Refiners that upsample the low-resolution prediction to full resolution.

``FastGuidedFilterRefiner`` (He & Sun 2015; r=1, eps=1e-5, zero-padded box filter) has no
parameters and is what the official TF.js weights use. ``DeepGuidedFilterRefiner`` (Wu et al.
2018) learns the linear coefficients from local statistics and the decoder's hidden features.
Both take ``fine_src (N,3,H,W)``, ``base_src (N,3,h,w)``, ``base_fgr (N,3,h,w)`` (residual),
``base_pha (N,1,h,w)``, ``base_hid (N,16,h,w)`` (or the same with a ``(B,T)`` lead) and return
``(fgr_residual, pha)`` at ``H x W``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .time import per_frame


def box_filter(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window with zero padding (the official PyTorch semantics)."""
    k = 2 * r + 1
    c = x.shape[1]
    kx = torch.full((c, 1, 1, k), 1 / k, device=x.device, dtype=x.dtype)
    ky = torch.full((c, 1, k, 1), 1 / k, device=x.device, dtype=x.dtype)
    x = F.conv2d(x, kx, padding=(0, r), groups=c)
    return F.conv2d(x, ky, padding=(r, 0), groups=c)


def _with_gray(x: Tensor) -> Tensor:
    return torch.cat([x, x.mean(1, keepdim=True)], dim=1)


def _resize(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


def apply_coefficients(fine_src: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Both refiners' full-resolution step: ``upsample(a) * [src, gray] + upsample(b)`` ->
    ``(fgr_residual (N,3,H,W), pha (N,1,H,W))``.

    Written per output, so that no 4-channel full-resolution tensor is concatenated and split
    again: the same arithmetic (bit-identical), two fewer passes over the frame (ONNX Runtime,
    1080p / 0.25: 4 % less CPU time per frame). rvmatte's CPU kernel
    (:mod:`rvmatte.runtime.kernels`) does this step fused with the composite and the 8-bit output.
    """
    size = fine_src.shape[2:]
    fgr = _resize(a[:, :3], size) * fine_src + _resize(b[:, :3], size)
    pha = _resize(a[:, 3:], size) * fine_src.mean(1, keepdim=True) + _resize(b[:, 3:], size)
    return fgr, pha


class FastGuidedFilterRefiner(nn.Module):
    def __init__(self, r: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.r = r
        self.eps = eps

    def coefficients(self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                     base_hid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The low-resolution linear coefficients ``(a, b)``, (N,4,h,w) each, in the input's
        dtype: the full-resolution result is ``upsample(a) * [src, gray] + upsample(b)``."""
        # The local statistics are computed in float32 whatever the model's dtype: in half
        # precision ``cov / (var + 1e-5)`` cancels catastrophically (fp16 alpha errors up to 1.0
        # at ratio 0.5, docs/SPEED.md). They are low-resolution, so this costs little; the
        # full-resolution ``a * x + b`` stays in the model's dtype.
        dtype = base_src.dtype
        lr_x = _with_gray(base_src.float())
        lr_y = torch.cat([base_fgr, base_pha], dim=1).float()
        mean_x = box_filter(lr_x, self.r)
        mean_y = box_filter(lr_y, self.r)
        cov_xy = box_filter(lr_x * lr_y, self.r) - mean_x * mean_y
        var_x = box_filter(lr_x * lr_x, self.r) - mean_x * mean_x
        a = cov_xy / (var_x + self.eps)
        b = mean_y - a * mean_x
        return a.to(dtype), b.to(dtype)

    def _single(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.coefficients(base_src, base_fgr, base_pha)
        return apply_coefficients(fine_src, a, b)

    def forward(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return per_frame(self._single, fine_src, base_src, base_fgr, base_pha)


class DeepGuidedFilterRefiner(nn.Module):
    def __init__(self, hid_channels: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False, groups=4)
        self.box_filter.weight.data[...] = 1 / 9
        self.conv = nn.Sequential(
            nn.Conv2d(4 * 2 + hid_channels, hid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(hid_channels),
            nn.ReLU(True),
            nn.Conv2d(hid_channels, hid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(hid_channels),
            nn.ReLU(True),
            nn.Conv2d(hid_channels, 4, kernel_size=1, bias=True),
        )

    def coefficients(self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                     base_hid: Tensor) -> tuple[Tensor, Tensor]:
        """The low-resolution linear coefficients ``(a, b)``, (N,4,h,w) each (see
        :meth:`FastGuidedFilterRefiner.coefficients`)."""
        base_x = _with_gray(base_src)
        base_y = torch.cat([base_fgr, base_pha], dim=1)
        mean_x = self.box_filter(base_x)
        mean_y = self.box_filter(base_y)
        cov_xy = self.box_filter(base_x * base_y) - mean_x * mean_y
        var_x = self.box_filter(base_x * base_x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))
        b = mean_y - a * mean_x
        return a, b

    def _single(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.coefficients(base_src, base_fgr, base_pha, base_hid)
        return apply_coefficients(fine_src, a, b)

    def forward(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor) -> tuple[Tensor, Tensor]:
        return per_frame(self._single, fine_src, base_src, base_fgr, base_pha, base_hid)


REFINERS: dict[str, type[nn.Module]] = {
    "deep_guided_filter": DeepGuidedFilterRefiner,
    "fast_guided_filter": FastGuidedFilterRefiner,
}
