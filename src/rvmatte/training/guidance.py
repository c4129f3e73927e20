"""Guidance inputs for training a guided network (issue 19; :mod:`rvmatte.models.guidance`).

Each training clip is composited on a known background, and its alpha is the ground truth;
the inputs a guided network takes at run time are imitated from them:

* **plate** -- the background the clip is composited on, as a separately taken photo of the
  empty scene would be: one frame's background for the whole clip (or the moving background),
  slightly misaligned (a shift, rotation and scale of a few pixels, the same for the clip),
  with an exposure and white-balance change and sensor noise;
* **mask** -- the ground-truth alpha as a person segmenter or tracker would give it: binarised
  at a random threshold, eroded or dilated, blurred, and missing (all zeros) on some frames.

A clip is trained without any guidance with probability ``p_none``, and without each input
with probability ``p_missing``, so that the network keeps working without them (zeros are
"absent": the guidance convolution has no bias).

All randomness comes from the ``numpy.random.Generator`` passed in (the trainer seeds it by
``(seed, step, rank, pass)``, like its crops): the same generator state gives the same inputs.
Tensors: ``bgr (B,T,3,H,W)``, ``pha (B,T,1,H,W)`` float in [0, 1], on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .config import GuidanceSynthesis

Rng = np.random.Generator


def _noise_generator(rng: Rng, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(2 ** 62)))
    return g


def misalign(x: Tensor, dx: float, dy: float, degrees: float, scale: float) -> Tensor:
    """``x (N,C,H,W)`` moved by ``(dx, dy)`` pixels, rotated by ``degrees`` and scaled by
    ``scale`` about the image centre (bilinear, borders repeated)."""
    n, _, h, w = x.shape
    a = math.radians(degrees)
    # Output pixel p samples the input at c + A (p - c - d), A = R(-a) / scale; in the
    # normalised coordinates of affine_grid (align_corners=False): D A D^-1 and -D A d,
    # D = diag(2/W, 2/H).
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    theta = torch.tensor([[cos, sin * h / w, -(cos * dx + sin * dy) * 2 / w],
                          [-sin * w / h, cos, -(-sin * dx + cos * dy) * 2 / h]],
                         dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def synthesize_plate(rng: Rng, bgr: Tensor, cfg: GuidanceSynthesis) -> Tensor:
    """One clip's plate ``(T,3,H,W)`` from its background ``bgr (T,3,H,W)``."""
    T = bgr.shape[0]
    if rng.random() < cfg.p_static_plate:
        bgr = bgr[int(rng.integers(T))].expand_as(bgr)
    u = lambda m: float(rng.uniform(-m, m))  # noqa: E731
    plate = misalign(bgr.contiguous(), u(cfg.max_shift_px), u(cfg.max_shift_px),
                     u(cfg.max_rotation_deg), 1 + u(cfg.max_scale))
    gain = math.exp(u(math.log1p(cfg.exposure)))
    wb = [1 + u(cfg.white_balance) for _ in range(3)]
    plate = plate * torch.tensor(wb, dtype=plate.dtype, device=plate.device).view(1, 3, 1, 1) * gain
    std = float(rng.uniform(0, cfg.max_noise_std))
    noise = torch.randn(plate.shape, generator=_noise_generator(rng, plate.device),
                        device=plate.device, dtype=plate.dtype)
    return (plate + std * noise).clamp(0, 1)


def _dilate(x: Tensor, r: int) -> Tensor:
    return F.max_pool2d(x, 2 * r + 1, 1, r) if r > 0 else x


def _erode(x: Tensor, r: int) -> Tensor:
    return 1 - _dilate(1 - x, r) if r > 0 else x


def synthesize_mask(rng: Rng, pha: Tensor, cfg: GuidanceSynthesis) -> Tensor:
    """One clip's person mask ``(T,1,H,W)`` from its ground-truth alpha ``(T,1,H,W)``; each
    frame has its own threshold, erosion/dilation and blur, or is dropped (zeros)."""
    frames = []
    for t in range(pha.shape[0]):
        thr = float(rng.uniform(cfg.threshold_min, cfg.threshold_max))
        morph = int(rng.integers(-cfg.max_morph_px, cfg.max_morph_px + 1))
        blur = int(rng.integers(0, cfg.max_blur_px + 1))
        if rng.random() < cfg.p_drop_frame:
            frames.append(torch.zeros_like(pha[t]))
            continue
        m = (pha[t:t + 1] > thr).to(pha.dtype)
        m = _dilate(m, morph) if morph > 0 else _erode(m, -morph)
        if blur:
            m = F.avg_pool2d(m, 2 * blur + 1, 1, blur, count_include_pad=False)
        frames.append(m[0])
    return torch.stack(frames)


def synthesize(rng: Rng, bgr: Tensor, pha: Tensor, inputs: tuple[str, ...],
               cfg: GuidanceSynthesis) -> dict[str, Tensor]:
    """The guidance inputs named in ``inputs`` for a batch: ``{"plate": (B,T,3,H,W),
    "mask": (B,T,1,H,W)}``, each clip's made independently (absent ones as zeros)."""
    out: dict[str, list[Tensor]] = {name: [] for name in inputs}
    with torch.no_grad():
        for b in range(bgr.shape[0]):
            none = rng.random() < cfg.p_none
            for name in inputs:
                like = bgr[b] if name == "plate" else pha[b]
                if none or rng.random() < cfg.p_missing:
                    out[name].append(torch.zeros_like(like))
                elif name == "plate":
                    out[name].append(synthesize_plate(rng, like, cfg))
                else:
                    out[name].append(synthesize_mask(rng, like, cfg))
    return {name: torch.stack(xs) for name, xs in out.items()}
