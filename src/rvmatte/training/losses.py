"""Training losses (paper, Sec. 3.4 "Losses").

Matting, on clips ``(B,T,C,H,W)``::

    L_alpha = L1(a, a*) + Laplacian-pyramid L1 (5 levels, level s weighted 2^s / 5)
              + 5 * MSE(da/dt, da*/dt)                     (temporal coherence)
    L_fgr   = L1(F, F*) where a* > 0 + 5 * MSE(dF/dt, dF*/dt) where a* > 0
    L_M     = L_alpha + L_fgr

Segmentation: binary cross-entropy on logits. The weight 5 of the coherence terms is the
paper's (and the official code's). Losses are computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["matting_loss", "segmentation_loss", "laplacian_loss", "laplacian_pyramid",
           "coherence_loss"]

_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _gauss_kernel(device, dtype) -> Tensor:
    k = torch.outer(_GAUSS, _GAUSS) / 256
    return k.to(device=device, dtype=dtype)[None, None]


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    n, c, h, w = x.shape
    y = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(y, kernel).reshape(n, c, h, w)


def laplacian_pyramid(x: Tensor, levels: int = 5) -> list[Tensor]:
    """Band-pass levels of ``x (N,C,H,W)``: each level minus its blurred-down-up copy."""
    kernel = _gauss_kernel(x.device, x.dtype)
    out = []
    cur = x
    for _ in range(levels):
        cur = cur[..., : cur.shape[-2] // 2 * 2, : cur.shape[-1] // 2 * 2]
        down = _blur(cur, kernel)[..., ::2, ::2]
        up = torch.zeros_like(cur)
        up[..., ::2, ::2] = down * 4
        out.append(cur - _blur(up, kernel))
        cur = down
    return out


def laplacian_loss(pred: Tensor, true: Tensor, levels: int = 5) -> Tensor:
    """sum_s 2^s / levels * L1(pyr_s(pred), pyr_s(true)) for ``(N,C,H,W)`` inputs
    (needs H, W >= 2^levels)."""
    loss = pred.new_zeros(())
    for s, (p, t) in enumerate(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(true, levels))):
        loss = loss + (2 ** s) * F.l1_loss(p, t)
    return loss / levels


def coherence_loss(pred: Tensor, true: Tensor) -> Tensor:
    """MSE between frame-to-frame changes of ``pred`` and ``true`` (``(B,T,...)``, T >= 2)."""
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    return F.mse_loss(pred[:, 1:] - pred[:, :-1], true[:, 1:] - true[:, :-1])


def matting_loss(pred_fgr: Tensor, pred_pha: Tensor, true_fgr: Tensor, true_pha: Tensor,
                 coherence_weight: float = 5.0) -> dict[str, Tensor]:
    """All inputs ``(B,T,C,H,W)``; returns the terms and their sum under ``"total"``."""
    pred_fgr, pred_pha = pred_fgr.float(), pred_pha.float()
    true_fgr, true_pha = true_fgr.float(), true_pha.float()
    loss: dict[str, Tensor] = {}
    loss["pha_l1"] = F.l1_loss(pred_pha, true_pha)
    loss["pha_laplacian"] = laplacian_loss(pred_pha.flatten(0, 1), true_pha.flatten(0, 1))
    loss["pha_coherence"] = coherence_weight * coherence_loss(pred_pha, true_pha)
    mask = (true_pha > 0).to(pred_fgr.dtype)
    pf, tf = pred_fgr * mask, true_fgr * mask
    loss["fgr_l1"] = F.l1_loss(pf, tf)
    loss["fgr_coherence"] = coherence_weight * coherence_loss(pf, tf)
    loss["total"] = sum(loss.values())
    return loss


def segmentation_loss(pred_seg: Tensor, true_seg: Tensor) -> Tensor:
    """Binary cross-entropy with logits; any shapes that match."""
    return F.binary_cross_entropy_with_logits(pred_seg.float(), true_seg.float())
