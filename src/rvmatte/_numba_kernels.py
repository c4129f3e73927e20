"""numba kernels behind :mod:`rvmatte.kernels` (imported only when one is needed).

Module-level functions, so that numba's on-disk cache can find them again (a kernel defined
in a closure is recompiled in every process).
"""

from __future__ import annotations

import numpy as np
from numba import njit

jit = njit(nogil=True, cache=True, fastmath=False, boundscheck=False)


@jit
def downsample(src, out, yi0, yi1, yl, xi0, xi1, xl):
    # src (H,W,3) uint8 -> out (3,h,w) float32 in [0, 1]
    h, w = out.shape[1], out.shape[2]
    one = np.float32(1.0)
    inv = np.float32(1.0 / 255.0)
    for y in range(h):
        ly = yl[y]
        j0, j1 = yi0[y], yi1[y]
        for x in range(w):
            lx = xl[x]
            k0, k1 = xi0[x], xi1[x]
            for c in range(3):
                top = src[j0, k0, c] * (one - lx) + src[j0, k1, c] * lx
                bot = src[j1, k0, c] * (one - lx) + src[j1, k1, c] * lx
                out[c, y, x] = (top * (one - ly) + bot * ly) * inv


@jit
def coef_row(a, b, va, ua, j0, j1, ly, xi0, xi1, xl):
    # ua[0:4] = a, ua[4:8] = b, bilinearly upsampled, for one output row
    one = np.float32(1.0)
    w, W = a.shape[2], ua.shape[1]
    for c in range(4):  # vertical
        for x in range(w):
            va[c, x] = a[c, j0, x] * (one - ly) + a[c, j1, x] * ly
            va[4 + c, x] = b[c, j0, x] * (one - ly) + b[c, j1, x] * ly
    for c in range(8):  # horizontal
        for x in range(W):
            lx = xl[x]
            ua[c, x] = va[c, xi0[x]] * (one - lx) + va[c, xi1[x]] * lx


@jit
def refine_rows(src, a, b, bg, comp, rgba, fgr, alpha, xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # src (H,W,3) uint8; a, b (4,h,w) float32; bg (3,) float32 in [0, 1].
    # Writes rows r0..r1 of whichever outputs are non-empty: comp (H,W,3) composite over
    # bg, rgba (H,W,4) foreground + alpha, fgr (H,W,3) foreground, alpha (H,W).
    W = src.shape[1]
    va = np.empty((8, a.shape[2]), np.float32)
    ua = np.empty((8, W), np.float32)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    s255 = np.float32(255.0)
    inv = np.float32(1.0 / 255.0)
    three = np.float32(3.0)
    want_comp, want_rgba = comp.shape[0] > 0, rgba.shape[0] > 0
    want_fgr, want_alpha = fgr.shape[0] > 0, alpha.shape[0] > 0
    for y in range(r0, r1):
        coef_row(a, b, va, ua, yi0[y], yi1[y], yl[y], xi0, xi1, xl)
        for x in range(W):
            r = src[y, x, 0] * inv
            g = src[y, x, 1] * inv
            bl = src[y, x, 2] * inv
            p = min(max(ua[3, x] * ((r + g + bl) / three) + ua[7, x], zero), one)
            fr = min(max(ua[0, x] * r + ua[4, x] + r, zero), one)
            fg = min(max(ua[1, x] * g + ua[5, x] + g, zero), one)
            fb = min(max(ua[2, x] * bl + ua[6, x] + bl, zero), one)
            if want_comp:
                comp[y, x, 0] = np.uint8((bg[0] + p * (fr - bg[0])) * s255 + half)
                comp[y, x, 1] = np.uint8((bg[1] + p * (fg - bg[1])) * s255 + half)
                comp[y, x, 2] = np.uint8((bg[2] + p * (fb - bg[2])) * s255 + half)
            if want_rgba:
                rgba[y, x, 0] = np.uint8(fr * s255 + half)
                rgba[y, x, 1] = np.uint8(fg * s255 + half)
                rgba[y, x, 2] = np.uint8(fb * s255 + half)
                rgba[y, x, 3] = np.uint8(p * s255 + half)
            if want_fgr:
                fgr[y, x, 0] = np.uint8(fr * s255 + half)
                fgr[y, x, 1] = np.uint8(fg * s255 + half)
                fgr[y, x, 2] = np.uint8(fb * s255 + half)
            if want_alpha:
                alpha[y, x] = np.uint8(p * s255 + half)


@jit
def refine_float_rows(src, a, b, fgr, pha, xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # src (3,H,W) float32 in [0, 1] -> fgr (3,H,W), pha (H,W) float32, rows r0..r1
    W = src.shape[2]
    va = np.empty((8, a.shape[2]), np.float32)
    ua = np.empty((8, W), np.float32)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    three = np.float32(3.0)
    for y in range(r0, r1):
        coef_row(a, b, va, ua, yi0[y], yi1[y], yl[y], xi0, xi1, xl)
        for x in range(W):
            r, g, bl = src[0, y, x], src[1, y, x], src[2, y, x]
            pha[y, x] = min(max(ua[3, x] * ((r + g + bl) / three) + ua[7, x], zero), one)
            fgr[0, y, x] = min(max(ua[0, x] * r + ua[4, x] + r, zero), one)
            fgr[1, y, x] = min(max(ua[1, x] * g + ua[5, x] + g, zero), one)
            fgr[2, y, x] = min(max(ua[2, x] * bl + ua[6, x] + bl, zero), one)
