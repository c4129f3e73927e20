"""numba kernels behind :mod:`rvmatte.runtime.kernels` (imported only when one is needed).

Module-level functions, so that numba's on-disk cache can find them again (a kernel defined
in a closure is recompiled in every process).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

# RVMATTE_NUMBA_CACHE=0: compile in every process instead of caching on disk (rvmatte.runtime.kernels
# sets it when numba finds no writable cache location). fastmath (reassociation, FMA; all values
# are finite): 21.6 -> 18.3 ms per 1080p frame, results within the same one-level tolerance.
_CACHE = os.environ.get("RVMATTE_NUMBA_CACHE", "1") != "0"
jit = njit(nogil=True, cache=_CACHE, fastmath=True, boundscheck=False)


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


@njit(nogil=True, cache=_CACHE, fastmath=True, inline="always")
def apply_pixel(ua, x, r, g, b):
    # The network's outputs at one pixel from the upsampled coefficients ua[0:4] (a), ua[4:8]
    # (b): alpha = clamp(a3 * gray + b3), foreground = clamp(a_c * x_c + b_c + x_c).
    zero, one, three = np.float32(0.0), np.float32(1.0), np.float32(3.0)
    p = min(max(ua[3, x] * ((r + g + b) / three) + ua[7, x], zero), one)
    fr = min(max(ua[0, x] * r + ua[4, x] + r, zero), one)
    fg = min(max(ua[1, x] * g + ua[5, x] + g, zero), one)
    fb = min(max(ua[2, x] * b + ua[6, x] + b, zero), one)
    return p, fr, fg, fb


# BT.601 (what rvmatte's YUV outputs are tagged as; rvmatte.io.yuv.rgb_to_yuv420)
KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB


@jit
def refine_rows(src, a, b, bg, comp, rgba, fgr, alpha, comp_yuv, alpha_yuv,
                xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # src (H,W,3) uint8; a, b (4,h,w) float32; bg (3,) float32 in [0, 1].
    # Writes rows r0..r1 of whichever outputs are non-empty: comp (H,W,3) composite over
    # bg, rgba (H,W,4) foreground + alpha, fgr (H,W,3) foreground, alpha (H,W); comp_yuv and
    # alpha_yuv: the composite / alpha as flat 4:2:0 planes (H*W luma, then H/2*W/2 U, then V;
    # limited range BT.601, chroma = the 2x2 block mean, as rvmatte.io.yuv). With planes, r0
    # must be even (chroma is written at each odd row from it and the row before).
    H, W = src.shape[0], src.shape[1]
    va = np.empty((8, a.shape[2]), np.float32)
    ua = np.empty((8, W), np.float32)
    even = np.empty((3, W), np.float32)  # the composite of the last even row (chroma)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    s255 = np.float32(255.0)
    inv = np.float32(1.0 / 255.0)
    kr, kg, kb = np.float32(KR), np.float32(KG), np.float32(KB)
    s219, o16 = np.float32(219.0), np.float32(16.5)
    cbs, crs = np.float32(224.0 / (2.0 * (1.0 - KB))), np.float32(224.0 / (2.0 * (1.0 - KR)))
    o128, quarter = np.float32(128.5), np.float32(0.25)
    uoff = H * W
    voff = uoff + (H // 2) * (W // 2)
    want_comp, want_rgba = comp.shape[0] > 0, rgba.shape[0] > 0
    want_fgr, want_alpha = fgr.shape[0] > 0, alpha.shape[0] > 0
    want_cy, want_ay = comp_yuv.shape[0] > 0, alpha_yuv.shape[0] > 0
    for y in range(r0, r1):
        coef_row(a, b, va, ua, yi0[y], yi1[y], yl[y], xi0, xi1, xl)
        odd = y % 2 == 1
        q0 = q1 = q2 = zero  # the previous pixel's composite
        for x in range(W):
            r = src[y, x, 0] * inv
            g = src[y, x, 1] * inv
            bl = src[y, x, 2] * inv
            p, fr, fg, fb = apply_pixel(ua, x, r, g, bl)
            c0 = bg[0] + p * (fr - bg[0])
            c1 = bg[1] + p * (fg - bg[1])
            c2 = bg[2] + p * (fb - bg[2])
            if want_comp:
                comp[y, x, 0] = np.uint8(c0 * s255 + half)
                comp[y, x, 1] = np.uint8(c1 * s255 + half)
                comp[y, x, 2] = np.uint8(c2 * s255 + half)
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
            if want_ay:
                alpha_yuv[y * W + x] = np.uint8(p * s219 + o16)
            if want_cy:
                comp_yuv[y * W + x] = np.uint8(min((kr * c0 + kg * c1 + kb * c2) * s219 + o16,
                                                   s255))
                if not odd:
                    even[0, x], even[1, x], even[2, x] = c0, c1, c2
                elif x % 2 == 1:
                    m0 = (even[0, x - 1] + even[0, x] + q0 + c0) * quarter
                    m1 = (even[1, x - 1] + even[1, x] + q1 + c1) * quarter
                    m2 = (even[2, x - 1] + even[2, x] + q2 + c2) * quarter
                    ml = kr * m0 + kg * m1 + kb * m2
                    ci = (y // 2) * (W // 2) + x // 2
                    comp_yuv[uoff + ci] = np.uint8(min(max((m2 - ml) * cbs + o128, zero), s255))
                    comp_yuv[voff + ci] = np.uint8(min(max((m0 - ml) * crs + o128, zero), s255))
                q0, q1, q2 = c0, c1, c2
        if want_ay and odd:  # neutral chroma
            ci = (y // 2) * (W // 2)
            for x in range(W // 2):
                alpha_yuv[uoff + ci + x] = 128
                alpha_yuv[voff + ci + x] = 128


@jit
def refine_float_rows(src, a, b, fgr, pha, xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # src (3,H,W) float32 in [0, 1] -> fgr (3,H,W), pha (H,W) float32, rows r0..r1
    W = src.shape[2]
    va = np.empty((8, a.shape[2]), np.float32)
    ua = np.empty((8, W), np.float32)
    for y in range(r0, r1):
        coef_row(a, b, va, ua, yi0[y], yi1[y], yl[y], xi0, xi1, xl)
        for x in range(W):
            r, g, bl = src[0, y, x], src[1, y, x], src[2, y, x]
            pha[y, x], fgr[0, y, x], fgr[1, y, x], fgr[2, y, x] = apply_pixel(ua, x, r, g, bl)


@jit
def refine_float_u8_rows(src, a, b, fgr, pha, xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # src (H,W,3) uint8 -> fgr (H,W,3), pha (H,W) float32 (the network's outputs, clamped),
    # rows r0..r1; for a post stage between the network and the uint8 outputs
    W = src.shape[1]
    va = np.empty((8, a.shape[2]), np.float32)
    ua = np.empty((8, W), np.float32)
    inv = np.float32(1.0 / 255.0)
    for y in range(r0, r1):
        coef_row(a, b, va, ua, yi0[y], yi1[y], yl[y], xi0, xi1, xl)
        for x in range(W):
            r, g, bl = src[y, x, 0] * inv, src[y, x, 1] * inv, src[y, x, 2] * inv
            pha[y, x], fgr[y, x, 0], fgr[y, x, 1], fgr[y, x, 2] = apply_pixel(ua, x, r, g, bl)


@jit
def refine_alpha_u8_rows(src, a, b, pha, xi0, xi1, xl, yi0, yi1, yl, r0, r1):
    # The pha of refine_float_u8_rows alone, the same bits, for a post stage that replaces
    # the foreground: only the alpha's two coefficient planes are upsampled (coef_row's
    # operations), the others stay 0. The pixel loop is refine_float_u8_rows' own, foreground
    # included (into one scratch row): without it, fastmath contracts the alpha's operations
    # differently (measured: other bits); tests/post/test_fused_post.py holds the two equal.
    W, w = src.shape[1], a.shape[2]
    va = np.empty((2, w), np.float32)
    ua = np.zeros((8, W), np.float32)
    fgr = np.empty((W, 3), np.float32)
    one = np.float32(1.0)
    inv = np.float32(1.0 / 255.0)
    for y in range(r0, r1):
        j0, j1, ly = yi0[y], yi1[y], yl[y]
        for x in range(w):
            va[0, x] = a[3, j0, x] * (one - ly) + a[3, j1, x] * ly
            va[1, x] = b[3, j0, x] * (one - ly) + b[3, j1, x] * ly
        for x in range(W):
            lx = xl[x]
            ua[3, x] = va[0, xi0[x]] * (one - lx) + va[0, xi1[x]] * lx
        for x in range(W):
            lx = xl[x]
            ua[7, x] = va[1, xi0[x]] * (one - lx) + va[1, xi1[x]] * lx
        for x in range(W):
            r, g, bl = src[y, x, 0] * inv, src[y, x, 1] * inv, src[y, x, 2] * inv
            pha[y, x], fgr[x, 0], fgr[x, 1], fgr[x, 2] = apply_pixel(ua, x, r, g, bl)


@jit
def foreground_at(src, a, b, band, out, xi0, xi1, xl, yi0, yi1, yl):
    # The network's foreground (refine_float_u8_rows' fgr) at the pixels band[j] =
    # (y << 32) | x only, into out (N,3): for a post stage that needs it in the soft band of
    # the alpha alone (a few percent of a frame). Per pixel the same interpolation as
    # coef_row (vertical, then horizontal) and apply_pixel's formula.
    one, zero = np.float32(1.0), np.float32(0.0)
    inv = np.float32(1.0 / 255.0)
    for j in range(band.shape[0]):
        y, x = band[j] >> 32, band[j] & 0xFFFFFFFF
        j0, j1, ly = yi0[y], yi1[y], yl[y]
        k0, k1, lx = xi0[x], xi1[x], xl[x]
        for c in range(3):
            v = src[y, x, c] * inv
            ua0 = (a[c, j0, k0] * (one - ly) + a[c, j1, k0] * ly) * (one - lx) \
                + (a[c, j0, k1] * (one - ly) + a[c, j1, k1] * ly) * lx
            ub0 = (b[c, j0, k0] * (one - ly) + b[c, j1, k0] * ly) * (one - lx) \
                + (b[c, j0, k1] * (one - ly) + b[c, j1, k1] * ly) * lx
            out[j, c] = min(max(ua0 * v + ub0 + v, zero), one)


@jit
def compose_rows(pha, fg, bg, comp, rgba, fgr, alpha, comp_yuv, alpha_yuv, r0, r1):
    # The outputs of refine_rows (same arithmetic) from float32 pha (H,W) and fg (H,W,3) in
    # [0, 1] (a post stage's results) instead of the coefficients.
    H, W = pha.shape[0], pha.shape[1]
    even = np.empty((3, W), np.float32)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    s255 = np.float32(255.0)
    kr, kg, kb = np.float32(KR), np.float32(KG), np.float32(KB)
    s219, o16 = np.float32(219.0), np.float32(16.5)
    cbs, crs = np.float32(224.0 / (2.0 * (1.0 - KB))), np.float32(224.0 / (2.0 * (1.0 - KR)))
    o128, quarter = np.float32(128.5), np.float32(0.25)
    uoff = H * W
    voff = uoff + (H // 2) * (W // 2)
    want_comp, want_rgba = comp.shape[0] > 0, rgba.shape[0] > 0
    want_fgr, want_alpha = fgr.shape[0] > 0, alpha.shape[0] > 0
    want_cy, want_ay = comp_yuv.shape[0] > 0, alpha_yuv.shape[0] > 0
    for y in range(r0, r1):
        odd = y % 2 == 1
        q0 = q1 = q2 = zero
        for x in range(W):
            p, fr, fg_, fb = pha[y, x], fg[y, x, 0], fg[y, x, 1], fg[y, x, 2]
            c0 = bg[0] + p * (fr - bg[0])
            c1 = bg[1] + p * (fg_ - bg[1])
            c2 = bg[2] + p * (fb - bg[2])
            if want_comp:
                comp[y, x, 0] = np.uint8(c0 * s255 + half)
                comp[y, x, 1] = np.uint8(c1 * s255 + half)
                comp[y, x, 2] = np.uint8(c2 * s255 + half)
            if want_rgba:
                rgba[y, x, 0] = np.uint8(fr * s255 + half)
                rgba[y, x, 1] = np.uint8(fg_ * s255 + half)
                rgba[y, x, 2] = np.uint8(fb * s255 + half)
                rgba[y, x, 3] = np.uint8(p * s255 + half)
            if want_fgr:
                fgr[y, x, 0] = np.uint8(fr * s255 + half)
                fgr[y, x, 1] = np.uint8(fg_ * s255 + half)
                fgr[y, x, 2] = np.uint8(fb * s255 + half)
            if want_alpha:
                alpha[y, x] = np.uint8(p * s255 + half)
            if want_ay:
                alpha_yuv[y * W + x] = np.uint8(p * s219 + o16)
            if want_cy:
                comp_yuv[y * W + x] = np.uint8(min((kr * c0 + kg * c1 + kb * c2) * s219 + o16,
                                                   s255))
                if not odd:
                    even[0, x], even[1, x], even[2, x] = c0, c1, c2
                elif x % 2 == 1:
                    m0 = (even[0, x - 1] + even[0, x] + q0 + c0) * quarter
                    m1 = (even[1, x - 1] + even[1, x] + q1 + c1) * quarter
                    m2 = (even[2, x - 1] + even[2, x] + q2 + c2) * quarter
                    ml = kr * m0 + kg * m1 + kb * m2
                    ci = (y // 2) * (W // 2) + x // 2
                    comp_yuv[uoff + ci] = np.uint8(min(max((m2 - ml) * cbs + o128, zero), s255))
                    comp_yuv[voff + ci] = np.uint8(min(max((m0 - ml) * crs + o128, zero), s255))
                q0, q1, q2 = c0, c1, c2
        if want_ay and odd:
            ci = (y // 2) * (W // 2)
            for x in range(W // 2):
                alpha_yuv[uoff + ci + x] = 128
                alpha_yuv[voff + ci + x] = 128
