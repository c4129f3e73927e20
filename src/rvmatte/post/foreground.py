"""Foreground colour estimation from the frame and the alpha (multi-level, Germer et al. 2020).

The network's foreground is a residual it learned on its training composites; at hair and
soft edges it keeps some of the old background's colour. This module solves, per frame, for
a foreground F and background B that reproduce the frame ``I = a F + (1 - a) B`` and are smooth
where the alpha is (the smoothness weight grows with the alpha's local change), coarse to
fine: the problem is solved on a 1x1 image, then the solution is upsampled (nearest) as the
start of a few Gauss-Seidel sweeps at a slightly larger size, up to the full frame.
(Germer, Uelwer, Conrad, Harmeling, "Fast Multi-Level Foreground Estimation", ICPR 2020;
pymatting's ``estimate_foreground_ml`` implements the same method; this is rvmatte's own numba
version, deterministic and single-threaded.)

Speed: at the full-size levels a pixel whose alpha and four neighbours are all exactly 0 or
all exactly 1 is set directly (F = I where a = 1; where a = 0 F keeps the coarser level's
value, which no composite uses), so only the soft band is solved.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ForegroundParams:
    regularization: float = 1e-5
    gradient_weight: float = 1.0
    small_iterations: int = 10   # sweeps at levels of at most small_size^2 pixels
    big_iterations: int = 2      # sweeps at the larger levels
    small_size: int = 32
    skip_flat: bool = True       # solve only the soft band at the large levels
    # The share of the network's own foreground kept in the result: F = (1 - s) estimate +
    # s network. Their errors differ (the estimate inherits the alpha's, the network's comes
    # from its training), so the mix beats either alone where the alpha is uncertain: on the
    # post benchmark foreground MSE -59 % at 512x288 and -44 % at 1080p / 0.25 against the
    # network (mixed in the soft band), where the estimate alone gave -63 % and -13 %
    # (docs/BENCHMARKS.md). 0: the estimate alone (the network's foreground is then not
    # needed).
    network_share: float = 0.35


@functools.lru_cache(maxsize=None)
def _k():
    from ..hardware import import_kernels

    return import_kernels(f"{__package__}._kernels")


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, out: np.ndarray | None = None,
                        params: ForegroundParams = ForegroundParams(),
                        buffers: Buffers | None = None, mix: bool = False,
                        network: Callable | None = None) -> np.ndarray:
    """``image`` uint8 (H,W,3) RGB, ``alpha`` float (H,W) in [0, 1] -> foreground float32
    (H,W,3) in [0, 1] (written into ``out`` if given). ``buffers``: working arrays kept
    from call to call (a stream of frames). ``mix``: the network's foreground is mixed into
    the estimate by ``params.network_share`` where the estimate is solved (the soft band;
    elsewhere the estimate is the frame where alpha is 1, and unused where it is 0): ``out``
    holds it, or, given ``network(band, values)``, that callable fills ``values`` float32
    (N,3) with it at the band's pixels ``band`` (int64 ``(y << 32) | x``) and ``out``'s
    contents are not read."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H,W,3), got {image.dtype} {image.shape}")
    alpha = np.ascontiguousarray(alpha, np.float32)
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match the image {image.shape[:2]}")
    if out is None:
        if mix and network is None:
            raise ValueError("mix needs the network's foreground in out")
        out = np.empty(image.shape, np.float32)
    _estimate_ml(image, alpha, out, params, buffers or Buffers(), mix, network)
    return out


class Buffers:
    """Working arrays by name, kept while their shape stays: a fresh multi-megabyte array
    per frame costs its page faults on every frame (about 2,500 per 1080p frame, 6-10 ms
    of system time, for the estimate's levels)."""

    def __init__(self) -> None:
        self._arrays: dict = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype)
        return a


def _index_map(n_out: int, n_in: int) -> np.ndarray:
    """Nearest-neighbour source index of each of ``n_out`` outputs over ``n_in`` inputs."""
    return np.minimum(np.arange(n_out, dtype=np.int64) * n_in // n_out, n_in - 1)


def _levels(H: int, W: int) -> list[tuple[int, int]]:
    """The level sizes, 1x1 growing geometrically to H x W (Germer et al.)."""
    n = int(np.ceil(np.log2(max(H, W, 2))))
    return [(max(int(round(H ** (i / n))), 1), max(int(round(W ** (i / n))), 1))
            for i in range(n)] + [(H, W)]


def _estimate_ml(image: np.ndarray, alpha: np.ndarray, out: np.ndarray,
                 p: ForegroundParams, buf: Buffers, mix: bool = False,
                 network: Callable | None = None) -> None:
    """The coarse-to-fine loop; each level's passes are numba kernels (:mod:`._kernels`).
    At the last level the frame, alpha and ``out`` are used in place (no copies) and B is
    made only where a solve can read it. The network's foreground for the mix is kept from
    ``out`` before the last level overwrites it, or asked of ``network`` for the band."""
    k = _k()
    H, W = alpha.shape
    mean = image[::8, ::8].reshape(-1, 3).mean(0, dtype=np.float64) / 255.0  # the 1x1 start
    F = mean.astype(np.float32).reshape(1, 1, 3)
    B = F.copy()
    reg, gw = np.float32(p.regularization), np.float32(p.gradient_weight)
    levels = _levels(H, W)
    idx = buf.get("band", (H * W,), np.int64)
    for i, (h, w) in enumerate(levels):
        last = i == len(levels) - 1
        ys, xs = _index_map(h, H), _index_map(w, W)
        if last:
            img, al, Fl = image, alpha, out
        else:
            img, al = buf.get(f"img{i}", (h, w, 3), np.uint8), buf.get(f"a{i}", (h, w), np.float32)
            k._nearest(image, img, ys, xs)
            k._nearest_2d(alpha, al, ys, xs)
            Fl = buf.get(f"F{i}", (h, w, 3), np.float32)
        Bl = buf.get(f"B{i}", (h, w, 3), np.float32)
        small = h * w <= p.small_size ** 2
        cy, cx = _index_map(h, F.shape[0]), _index_map(w, F.shape[1])
        if last:
            if mix and network is None:  # keep the network's foreground where it will solve
                band = k._band(al, p.skip_flat and not small, idx)
                keep = buf.get("keep", (H * W, 3), np.float32)[:len(band)]
                k.gather_band(Fl, band, keep)
            band = k._last_level_start(img, al, F, B, Fl, Bl, cy, cx,
                                       p.skip_flat and not small, idx)
            if mix and network is not None:
                keep = buf.get("keep", (H * W, 3), np.float32)[:len(band)]
                network(band, keep)
        else:
            band = k._band(al, p.skip_flat and not small, idx)
            k._level_start(img, al, F, B, Fl, Bl, cy, cx)
        k._sweeps(img, al, Fl, Bl, band, p.small_iterations if small else p.big_iterations,
                  reg, gw)
        if last and mix:
            k.mix_band(Fl, band, keep, np.float32(p.network_share))
        F, B = Fl, Bl


def estimate_foregrounds(frames: np.ndarray, pha: np.ndarray, fgr: np.ndarray,
                         params: ForegroundParams = ForegroundParams(),
                         buffers: Buffers | None = None,
                         network_foreground: Callable | None = None) -> None:
    """``frames`` uint8 (T,H,W,3), ``pha`` float32 (T,H,W): ``fgr`` float32 (T,H,W,3), the
    network's, replaced by the estimate mixed with it (``params.network_share``), in place.
    ``network_foreground(t, band, values)``: where given, the network's foreground of frame
    ``t`` at the band's pixels comes from it and ``fgr`` is only written (see
    :func:`estimate_foreground`'s ``network``)."""
    buffers = buffers or Buffers()
    mix = params.network_share > 0
    for t in range(frames.shape[0]):
        network = (functools.partial(network_foreground, t)
                   if mix and network_foreground is not None else None)
        estimate_foreground(frames[t], pha[t], out=fgr[t], params=params, buffers=buffers,
                            mix=mix, network=network)


# ---- the same method in PyTorch (GPU) ------------------------------------------------------------

def estimate_foreground_torch(src, pha, params: ForegroundParams = ForegroundParams(),
                              fgr=None):
    """The multi-level estimate on tensors, for a network that runs on a GPU (no copy to the
    host): ``src`` (T,3,H,W) float in [0, 1] (quantised to 8 bits first, as the frames the
    numba version gets), ``pha`` (T,1,H,W) -> foreground (T,3,H,W) float32 on their device.

    Each level's sweeps are red-black (checkerboard) Gauss-Seidel instead of the numba
    version's raster order: every pixel of one colour is updated at once from its four
    neighbours of the other. Same equations, levels, start and flat-pixel rule, so the
    result differs from :func:`estimate_foreground` only by the sweep order (within 0.01 on
    average in the soft band, ``tests/post/test_foreground.py``). ``fgr``: the network's
    foreground, mixed in by ``params.network_share`` where the last level solves, as
    :func:`estimate_foregrounds` does (None: the estimate alone)."""
    import torch

    img = src.detach().float().clamp(0, 1).mul(255).add_(0.5).floor_().div_(255)
    alpha = pha.detach().float()
    T, _, H, W = img.shape
    dev = img.device
    F = img[:, :, ::8, ::8].mean((2, 3), keepdim=True)  # the 1x1 start: the frame's mean
    B = F.clone()
    levels = _levels(H, W)
    for i, (h, w) in enumerate(levels):
        ys = torch.from_numpy(_index_map(h, H)).to(dev)
        xs = torch.from_numpy(_index_map(w, W)).to(dev)
        il = img.index_select(2, ys).index_select(3, xs)
        al = alpha.index_select(2, ys).index_select(3, xs)
        cy = torch.from_numpy(_index_map(h, F.shape[2])).to(dev)
        cx = torch.from_numpy(_index_map(w, F.shape[3])).to(dev)
        F = torch.where(al == 1, il, F.index_select(2, cy).index_select(3, cx))
        B = torch.where(al == 0, il, B.index_select(2, cy).index_select(3, cx))
        small = h * w <= params.small_size ** 2
        iters = params.small_iterations if small else params.big_iterations
        F, B, solved = _sweeps_torch(il, al, F, B, iters, params,
                                     band=params.skip_flat and not small)
    share = params.network_share
    if fgr is not None and share > 0:
        F = torch.where(solved, F * (1 - share) + fgr.float() * share, F)
    return F


def _shift(x, dy: int, dx: int):
    """``x`` (T,C,H,W) moved so that each pixel holds its neighbour at (+dy, +dx); zero
    outside the frame."""
    import torch.nn.functional as nnf

    H, W = x.shape[2], x.shape[3]
    p = nnf.pad(x, (1, 1, 1, 1))
    return p[:, :, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]


_NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0))


def _sweeps_torch(img, alpha, F, B, iters: int, p: ForegroundParams, *, band: bool):
    """``iters`` red-black sweeps of the 2x2 per-pixel systems (see ``_kernels._solve``);
    with ``band`` only the pixels that are not flat 0/1 along with their 4 neighbours."""
    import torch

    H, W = alpha.shape[2], alpha.shape[3]
    inside = torch.ones_like(alpha)
    weights = []  # per neighbour: reg + grad_w |a - a_n|, 0 past the frame's edge
    for dy, dx in _NEIGHBOURS:
        weights.append(_shift(inside, dy, dx) * (p.regularization + p.gradient_weight
                                                 * (alpha - _shift(alpha, dy, dx)).abs()))
    total = sum(weights)
    a0, a1 = alpha, 1 - alpha
    a00, a11, a01 = a0 * a0 + p.regularization + total, a1 * a1 + p.regularization + total, a0 * a1
    inv = 1 / (a00 * a11 - a01 * a01)
    b00, b01, b11 = inv * a11, -inv * a01, inv * a00
    c0, c1 = a0 * img, a1 * img
    yy = torch.arange(H, device=alpha.device).view(H, 1)
    xx = torch.arange(W, device=alpha.device).view(1, W)
    colour = ((yy + xx) % 2).view(1, 1, H, W)
    solve = torch.ones_like(alpha, dtype=torch.bool)
    if band:
        flat = (alpha == 0) | (alpha == 1)
        same = torch.stack([(_shift(alpha, dy, dx) == alpha) | (_shift(inside, dy, dx) == 0)
                            for dy, dx in _NEIGHBOURS]).all(0)
        solve = ~(flat & same)
    masks = [solve & (colour == c) for c in (0, 1)]
    for _ in range(iters):
        for m in masks:
            s0, s1 = c0.clone(), c1.clone()
            for (dy, dx), wgt in zip(_NEIGHBOURS, weights):
                s0 += wgt * _shift(F, dy, dx)
                s1 += wgt * _shift(B, dy, dx)
            F = torch.where(m, (b00 * s0 + b01 * s1).clamp_(0, 1), F)
            B = torch.where(m, (b01 * s0 + b11 * s1).clamp_(0, 1), B)
    return F, B, solve

