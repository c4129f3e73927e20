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
    test, summed in row order by the caller). img, prev uint8 (H,W,3).

    Both sums are running sums along the row (a chain of dependent additions); four rows
    are walked side by side so that the chains overlap (the same operations per row, the
    same bits as one row at a time)."""
    H, W = img.shape[0], img.shape[1]
    d = np.empty((4, W), np.float32)
    flat_img, flat_prev = img.reshape(H, 3 * W), prev.reshape(H, 3 * W)  # loops that vectorise
    for y in range(r0, r1, 4):
        n = min(4, r1 - y)
        _row_differences(flat_img, flat_prev, d, y, n)
        if n == 4:
            _row_sums4(d, hsum, rowsums, y, r)
        else:
            for i in range(n):
                _row_sums1(d[i], hsum[y + i], rowsums, y + i, r)


@jit
def _row_differences(img, prev, d, y, n):
    """d[i, x] = mean_c |img - prev| / 255 of row y + i, i < n; img, prev (H, W*3)."""
    W = d.shape[1]
    scale = np.float32(1.0 / (3.0 * 255.0))
    for i in range(n):
        a, b, di = img[y + i], prev[y + i], d[i]
        for x in range(W):
            j = 3 * x
            v = (abs(np.int32(a[j]) - np.int32(b[j])) + abs(np.int32(a[j + 1]) - np.int32(b[j + 1]))
                 + abs(np.int32(a[j + 2]) - np.int32(b[j + 2])))
            di[x] = np.float32(v) * scale


@jit
def _row_sums1(d, out, rowsums, y, r):
    """One row: the plain sum (float64, in order) and the (2r+1)-wide running sum."""
    W = d.shape[0]
    rowsum = 0.0
    for x in range(W):
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
        out[x] = acc


@jit
def _row_sums4(d, hsum, rowsums, y, r):
    """:func:`_row_sums1` of rows y..y+3 at once (four independent chains)."""
    W = d.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    for x in range(W):
        s0 += d[0, x]
        s1 += d[1, x]
        s2 += d[2, x]
        s3 += d[3, x]
    rowsums[y], rowsums[y + 1], rowsums[y + 2], rowsums[y + 3] = s0, s1, s2, s3
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for x in range(min(r, W)):
        a0 += d[0, x]
        a1 += d[1, x]
        a2 += d[2, x]
        a3 += d[3, x]
    h0, h1, h2, h3 = hsum[y], hsum[y + 1], hsum[y + 2], hsum[y + 3]
    for x in range(W):
        if x + r < W:
            j = x + r
            a0 += d[0, j]
            a1 += d[1, j]
            a2 += d[2, j]
            a3 += d[3, j]
        if x - r - 1 >= 0:
            j = x - r - 1
            a0 -= d[0, j]
            a1 -= d[1, j]
            a2 -= d[2, j]
            a3 -= d[3, j]
        h0[x], h1[x], h2[x], h3[x] = a0, a1, a2, a3


@jit
def stabilize_rows(hsum, r, pha, prev_pha, fgr, prev_fgr, w_max, inv_tau_i, inv_tau_a,
                   r0, r1):
    """Rows r0..r1: blend ``pha`` (H,W) and ``fgr`` (H,W,3) (in place; ``fgr`` may be empty)
    with the previous outputs by the confidence ``w = w_max (1 - q)^2`` for ``q < 1`` (else
    0), ``q = (D/tau_i)^2 + (dA/tau_a)^2``, D the (2r+1)^2 box mean of the image difference
    (``hsum`` from :func:`frame_difference`); the results become the previous outputs."""
    H, W = pha.shape[0], pha.shape[1]
    col = np.empty(W, np.float32)
    wrow = np.empty(W, np.float32)  # the row's weights, -1 where the network's value stays
    nx = np.empty(W, np.int64)
    for x in range(W):
        nx[x] = min(x + r, W - 1) - max(x - r, 0) + 1
    count = np.empty(W, np.float32)
    want_f = fgr.shape[0] > 0
    flat_f = fgr.reshape(fgr.shape[0], fgr.shape[1] * 3)
    flat_pf = prev_fgr.reshape(prev_fgr.shape[0], prev_fgr.shape[1] * 3)
    for y in range(r0, r1):
        # the vertical sum row by row (not running), so any split into bands gives the
        # same bits
        y0, y1 = max(y - r, 0), min(y + r, H - 1)
        col[:] = hsum[y0]
        for yy in range(y0 + 1, y1 + 1):
            h = hsum[yy]
            for x in range(W):
                col[x] += h[x]
        ny = y1 - y0 + 1
        for x in range(W):
            count[x] = np.float32(ny * nx[x])
        _blend_alpha(col, count, pha[y], prev_pha[y], wrow, w_max, inv_tau_i, inv_tau_a)
        if want_f:
            _blend_foreground(wrow, flat_f[y], flat_pf[y])


@jit
def _blend_alpha(col, count, a_row, p_row, wrow, w_max, inv_tau_i, inv_tau_a):
    """One row of alpha, branch-free (the same operations as the formula's ``if``)."""
    one = np.float32(1.0)
    for x in range(a_row.shape[0]):
        d = col[x] / count[x] * inv_tau_i
        a = a_row[x]
        p = p_row[x]
        da = (a - p) * inv_tau_a
        q = d * d + da * da
        w = w_max * (one - q) * (one - q)
        s = a + w * (p - a)
        held = q < one
        s = s if held else a
        wrow[x] = w if held else np.float32(-1.0)
        a_row[x] = s
        p_row[x] = s


@jit
def _blend_foreground(wrow, f_row, p_row):
    """One row of foreground (``f_row``, ``p_row``: (W*3,)) with the alpha's weights."""
    zero = np.float32(0.0)
    for x in range(wrow.shape[0]):
        w = wrow[x]
        keep = w >= zero
        j = 3 * x
        f0, f1, f2 = f_row[j], f_row[j + 1], f_row[j + 2]
        v0 = f0 + w * (p_row[j] - f0)
        v1 = f1 + w * (p_row[j + 1] - f1)
        v2 = f2 + w * (p_row[j + 2] - f2)
        v0, v1, v2 = (v0, v1, v2) if keep else (f0, f1, f2)
        f_row[j], f_row[j + 1], f_row[j + 2] = v0, v1, v2
        p_row[j], p_row[j + 1], p_row[j + 2] = v0, v1, v2


# ---- foreground estimation (multi-level, Germer et al. 2020) ---------------------------------

@jit
def gather_band(F, band, keep):
    """``keep[j] = F[y, x]`` for the band's pixels ``band[j] = (y << 32) | x``."""
    for j in range(band.shape[0]):
        y, x = band[j] >> 32, band[j] & 0xFFFFFFFF
        for c in range(3):
            keep[j, c] = F[y, x, c]


@jit
def mix_band(F, band, keep, share):
    """``F[y, x] = (1 - share) F[y, x] + share keep[j]`` over the band's pixels (the
    estimate and the network's foreground kept by :func:`gather_band`)."""
    own = np.float32(1.0) - share
    for j in range(band.shape[0]):
        y, x = band[j] >> 32, band[j] & 0xFFFFFFFF
        for c in range(3):
            F[y, x, c] = own * F[y, x, c] + share * keep[j, c]


@jit
def _nearest(src, dst, ymap, xmap):
    """Nearest-neighbour resize of (h,w,3) ``src`` into (H,W,3) ``dst`` (source row/column of
    each output row/column in ``ymap``/``xmap``)."""
    H, W = dst.shape[0], dst.shape[1]
    for y in range(H):
        s, d = src[ymap[y]], dst[y]
        for x in range(W):
            sx = xmap[x]
            d[x, 0] = s[sx, 0]
            d[x, 1] = s[sx, 1]
            d[x, 2] = s[sx, 2]


@jit
def _nearest_2d(src, dst, ymap, xmap):
    H, W = dst.shape[0], dst.shape[1]
    for y in range(H):
        s, d = src[ymap[y]], dst[y]
        for x in range(W):
            d[x] = s[xmap[x]]


@jit
def _band(alpha, skip_flat, idx):
    """Raster-order indices of the pixels to solve: with ``skip_flat`` those whose alpha or
    one of the 4 neighbours' is not the same 0 or 1; else all. ``idx``: (H*W,) int64 to
    fill, ``(y << 32) | x`` per pixel (no division to find the pixel again); returns its
    used part."""
    H, W = alpha.shape[0], alpha.shape[1]
    if not skip_flat:
        for y in range(H):
            for x in range(W):
                idx[y * W + x] = (y << 32) | x
        return idx[:H * W]
    mask = np.empty(W, np.uint8)
    n = 0
    for y in range(H):
        n = _band_row(alpha, y, idx, n, mask)
    return idx[:n]


@njit(nogil=True, cache=_CACHE, error_model="numpy", inline="always")
def _band_row(alpha, y, idx, n, mask):
    """Appends row y's pixels to solve (see :func:`_band`) to ``idx[n:]``; returns the new n.
    A pixel is flat when its alpha is 0 or 1 and equals its 4 neighbours' (those inside).
    ``mask``: (W,) uint8 scratch (the row's test first, in a loop that vectorises; most
    rows have nothing to append)."""
    H, W = alpha.shape[0], alpha.shape[1]
    row = alpha[y]
    up = alpha[y - 1] if y > 0 else row
    down = alpha[y + 1] if y < H - 1 else row
    total = 0
    for x in range(W):
        a0 = row[x]
        left = row[x - 1] if x > 0 else a0
        right = row[x + 1] if x < W - 1 else a0
        flat = ((a0 == 0.0) | (a0 == 1.0)) & (left == a0) & (right == a0) & (up[x] == a0) \
            & (down[x] == a0)
        v = np.uint8(0) if flat else np.uint8(1)
        mask[x] = v
        total += v
    if total:
        base = y << 32
        for x in range(W):
            if mask[x]:
                idx[n] = base | x
                n += 1
    return n


@jit
def _level_start(img, alpha, Fc, Bc, F, B, ymap, xmap):
    """The start of a level from the coarser one (nearest), with flat pixels final: F = I
    where a = 1, B = I where a = 0."""
    H, W = alpha.shape[0], alpha.shape[1]
    inv255 = np.float32(1.0 / 255.0)
    for y in range(H):
        sy = ymap[y]
        im, al, f, b, fc, bc = img[y], alpha[y], F[y], B[y], Fc[sy], Bc[sy]
        for x in range(W):
            sx = xmap[x]
            a0 = al[x]
            one, zero = a0 == 1.0, a0 == 0.0
            for c in range(3):
                v = im[x, c] * inv255
                f[x, c] = v if one else fc[sx, c]
                b[x, c] = v if zero else bc[sx, c]


@jit
def _last_level_start(img, alpha, Fc, Bc, F, B, ymap, xmap, skip_flat, idx):
    """The last (full-size) level: F of every pixel as :func:`_level_start` sets it, the
    pixels to solve (:func:`_band` into ``idx``, returned), and B only where a solve reads
    it (the band and its 4 neighbours), in one pass over the rows."""
    H, W = alpha.shape[0], alpha.shape[1]
    inv255 = np.float32(1.0 / 255.0)
    mask = np.empty(W, np.uint8)
    n = 0
    for y in range(H):
        sy = ymap[y]
        im, al, f, fc = img[y], alpha[y], F[y], Fc[sy]
        for x in range(W):
            sx = xmap[x]
            one = al[x] == 1.0
            for c in range(3):
                f[x, c] = im[x, c] * inv255 if one else fc[sx, c]
        if skip_flat:
            n = _band_row(alpha, y, idx, n, mask)
        else:
            for x in range(W):
                idx[n] = (y << 32) | x
                n += 1
    band = idx[:n]
    for i in band:
        y, x = i >> 32, i & 0xFFFFFFFF
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
            if ny < 0 or ny >= H or nx < 0 or nx >= W:
                continue
            zero = alpha[ny, nx] == 0.0
            sy, sx = ymap[ny], xmap[nx]
            for c in range(3):
                B[ny, nx, c] = img[ny, nx, c] * inv255 if zero else Bc[sy, sx, c]
    return band


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
def _sweeps(img, alpha, F, B, band, iters, reg, grad_w):
    """``iters`` Gauss-Seidel sweeps over the ``band`` pixels in order (see :func:`_band`)."""
    for _ in range(iters):
        for i in band:
            _solve(img, alpha, F, B, i >> 32, i & 0xFFFFFFFF, reg, grad_w)
