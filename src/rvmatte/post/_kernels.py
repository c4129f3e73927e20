"""numba kernels behind :mod:`rvmatte.post` (imported only when one is needed).

Module-level functions so that numba's on-disk cache finds them again. Everything is float32,
deterministic and single-threaded per call (Gauss-Seidel sweeps in a fixed order), so that a
resumed conversion writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

_CACHE = os.environ.get("RVMATTE_NUMBA_CACHE", "1") != "0"
jit = njit(nogil=True, cache=_CACHE, fastmath=False, boundscheck=False, error_model="numpy")


# ---- temporal stabilisation ------------------------------------------------------------------

@jit
def frame_difference(img, prev, hsum, rowsums, r, r0, r1):
    """Rows r0..r1: per pixel ``mean_c |img - prev| / 255`` summed over a (2r+1)-wide row
    window into ``hsum`` (H,W) float32, each row's plain sum into ``rowsums`` (for the cut
    test, summed in row order by the caller). img, prev uint8 (H,W,3)."""
    W = img.shape[1]
    d = np.empty(W, np.float32)
    scale = np.float32(1.0 / (3.0 * 255.0))
    for y in range(r0, r1):
        rowsum = 0.0
        for x in range(W):
            v = (abs(np.int32(img[y, x, 0]) - np.int32(prev[y, x, 0]))
                 + abs(np.int32(img[y, x, 1]) - np.int32(prev[y, x, 1]))
                 + abs(np.int32(img[y, x, 2]) - np.int32(prev[y, x, 2])))
            d[x] = np.float32(v) * scale
            rowsum += d[x]
        rowsums[y] = rowsum
        acc = np.float32(0.0)
        for x in range(min(r, W)):
            acc += d[x]
        for x in range(W):
            if x + r < W:
                acc += d[x + r]
            if x - r - 1 >= 0:
                acc -= d[x - r - 1]
            hsum[y, x] = acc


@jit
def stabilize_rows(hsum, r, pha, prev_pha, fgr, prev_fgr, w_max, inv_tau_i, inv_tau_a,
                   r0, r1):
    """Rows r0..r1: blend ``pha`` (H,W) and ``fgr`` (H,W,3) (in place; ``fgr`` may be empty)
    with the previous outputs by the confidence ``w = w_max (1 - q)^2`` for ``q < 1`` (else
    0), ``q = (D/tau_i)^2 + (dA/tau_a)^2``, D the (2r+1)^2 box mean of the image difference
    (``hsum`` from :func:`frame_difference`); the results become the previous outputs."""
    H, W = pha.shape[0], pha.shape[1]
    col = np.empty(W, np.float32)
    want_f = fgr.shape[0] > 0
    one = np.float32(1.0)
    for y in range(r0, r1):
        # the vertical sum row by row (not running), so any split into bands gives the
        # same bits
        y0, y1 = max(y - r, 0), min(y + r, H - 1)
        for x in range(W):
            col[x] = hsum[y0, x]
        for yy in range(y0 + 1, y1 + 1):
            for x in range(W):
                col[x] += hsum[yy, x]
        ny = y1 - y0 + 1
        for x in range(W):
            nx = min(x + r, W - 1) - max(x - r, 0) + 1
            d = col[x] / np.float32(ny * nx) * inv_tau_i
            a = pha[y, x]
            p = prev_pha[y, x]
            da = (a - p) * inv_tau_a
            q = d * d + da * da
            if q < one:
                w = w_max * (one - q) * (one - q)
                s = a + w * (p - a)
                pha[y, x] = s
                if want_f:
                    for c in range(3):
                        f = fgr[y, x, c]
                        fgr[y, x, c] = f + w * (prev_fgr[y, x, c] - f)
            prev_pha[y, x] = pha[y, x]
            if want_f:
                for c in range(3):
                    prev_fgr[y, x, c] = fgr[y, x, c]


# ---- foreground estimation (multi-level, Germer et al. 2020) ---------------------------------

@jit
def _nearest(src, dst, ymap, xmap):
    """Nearest-neighbour resize of (h,w,c) ``src`` into (H,W,c) ``dst`` (source row/column of
    each output row/column in ``ymap``/``xmap``)."""
    H, W = dst.shape[0], dst.shape[1]
    for y in range(H):
        sy = ymap[y]
        for x in range(W):
            sx = xmap[x]
            for c in range(dst.shape[2]):
                dst[y, x, c] = src[sy, sx, c]


@jit
def _nearest_2d(src, dst, ymap, xmap):
    H, W = dst.shape[0], dst.shape[1]
    for y in range(H):
        sy = ymap[y]
        for x in range(W):
            dst[y, x] = src[sy, xmap[x]]


@jit
def _band(alpha, skip_flat):
    """Raster-order indices of the pixels to solve: with ``skip_flat`` those whose alpha or
    one of the 4 neighbours' is not the same 0 or 1; else all."""
    H, W = alpha.shape[0], alpha.shape[1]
    idx = np.empty(H * W, np.int64)
    n = 0
    for y in range(H):
        for x in range(W):
            a0 = alpha[y, x]
            solve = True
            if skip_flat and (a0 == 0.0 or a0 == 1.0):
                solve = ((x > 0 and alpha[y, x - 1] != a0) or (x < W - 1 and alpha[y, x + 1] != a0)
                         or (y > 0 and alpha[y - 1, x] != a0)
                         or (y < H - 1 and alpha[y + 1, x] != a0))
            if solve:
                idx[n] = y * W + x
                n += 1
    return idx[:n]


@njit(nogil=True, cache=_CACHE, error_model="numpy", inline="always")
def _solve(img, alpha, F, B, y, x, reg, grad_w):
    """One Gauss-Seidel update of pixel (y, x): the 2x2 system of the compositing equation
    ``a F + (1-a) B = I`` plus smoothness towards the 4 neighbours' F and B, weighted by
    ``reg + grad_w |a - a_n|``. ``img`` uint8."""
    H, W = alpha.shape[0], alpha.shape[1]
    inv255 = np.float32(1.0 / 255.0)
    a0 = alpha[y, x]
    a1 = np.float32(1.0) - a0
    a00 = a0 * a0 + reg
    a01 = a0 * a1
    a11 = a1 * a1 + reg
    ir, ig, ib = img[y, x, 0] * inv255, img[y, x, 1] * inv255, img[y, x, 2] * inv255
    b0r, b0g, b0b = a0 * ir, a0 * ig, a0 * ib
    b1r, b1g, b1b = a1 * ir, a1 * ig, a1 * ib
    for k in range(4):
        if k == 0:
            if x == 0:
                continue
            ny, nx = y, x - 1
        elif k == 1:
            if x == W - 1:
                continue
            ny, nx = y, x + 1
        elif k == 2:
            if y == 0:
                continue
            ny, nx = y - 1, x
        else:
            if y == H - 1:
                continue
            ny, nx = y + 1, x
        da = reg + grad_w * abs(a0 - alpha[ny, nx])
        a00 += da
        a11 += da
        b0r += da * F[ny, nx, 0]
        b0g += da * F[ny, nx, 1]
        b0b += da * F[ny, nx, 2]
        b1r += da * B[ny, nx, 0]
        b1g += da * B[ny, nx, 1]
        b1b += da * B[ny, nx, 2]
    inv = np.float32(1.0) / (a00 * a11 - a01 * a01)
    b00, b01, b11 = inv * a11, -inv * a01, inv * a00
    F[y, x, 0] = min(max(b00 * b0r + b01 * b1r, 0.0), 1.0)
    F[y, x, 1] = min(max(b00 * b0g + b01 * b1g, 0.0), 1.0)
    F[y, x, 2] = min(max(b00 * b0b + b01 * b1b, 0.0), 1.0)
    B[y, x, 0] = min(max(b01 * b0r + b11 * b1r, 0.0), 1.0)
    B[y, x, 1] = min(max(b01 * b0g + b11 * b1g, 0.0), 1.0)
    B[y, x, 2] = min(max(b01 * b0b + b11 * b1b, 0.0), 1.0)


@jit
def _level_start(img, alpha, Fc, Bc, F, B, full_b, ymap, xmap):
    """The start of a level from the coarser one (nearest), with flat pixels final: F = I
    where a = 1, B = I where a = 0. ``full_b`` false (the last level): B only where a < 1
    (B of a pixel whose alpha is 1 has no weight in any neighbour's system... except through
    smoothness, so it is set from the coarse level where needed by :func:`_fill_b`)."""
    H, W = alpha.shape[0], alpha.shape[1]
    inv255 = np.float32(1.0 / 255.0)
    for y in range(H):
        sy = ymap[y]
        for x in range(W):
            sx = xmap[x]
            a0 = alpha[y, x]
            for c in range(3):
                F[y, x, c] = img[y, x, c] * inv255 if a0 == 1.0 else Fc[sy, sx, c]
            if full_b or a0 < 1.0:
                for c in range(3):
                    B[y, x, c] = img[y, x, c] * inv255 if a0 == 0.0 else Bc[sy, sx, c]


@jit
def _fill_b(alpha, band, Bc, B, ymap, xmap):
    """B of the alpha-1 neighbours of the band pixels, from the coarse level (last level)."""
    H, W = alpha.shape[0], alpha.shape[1]
    for i in band:
        y, x = i // W, i % W
        for k in range(5):
            ny, nx = y, x
            if k == 1:
                nx = x - 1
            elif k == 2:
                nx = x + 1
            elif k == 3:
                ny = y - 1
            elif k == 4:
                ny = y + 1
            if ny < 0 or ny >= H or nx < 0 or nx >= W or alpha[ny, nx] != 1.0:
                continue
            sy, sx = ymap[ny], xmap[nx]
            for c in range(3):
                B[ny, nx, c] = Bc[sy, sx, c]


@jit
def _sweeps(img, alpha, F, B, band, iters, reg, grad_w):
    W = alpha.shape[1]
    for _ in range(iters):
        for i in band:
            _solve(img, alpha, F, B, i // W, i % W, reg, grad_w)
