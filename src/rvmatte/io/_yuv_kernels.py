"""numba kernel behind :func:`rvmatte.io.yuv.image_to_yuv420` (imported only when needed).

Integer arithmetic (16-bit fixed point): the same pixels give the same planes on every run
and every machine, whatever the compiler vectorises. Module-level functions, so that numba's
on-disk cache finds them again; imported through :func:`rvmatte.hardware.import_kernels`
(``RVMATTE_NUMBA_CACHE=0``: compiled in each process instead).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

# BT.601 limited range, rvmatte's output convention (rvmatte.io.yuv.MATRICES, the fused
# kernel's composite_yuv): Y = 16 + 219 * luma, Cb / Cr = 128 + 224 * (B|R - luma) /
# (2 (1 - Kb|Kr)); the coefficients x 2**16 and rounded, the chroma ones per unit of a 2x2
# block's sum (its mean / 4).
KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB
_ONE = 1 << 16
_LY = 219.0 / 255.0 * _ONE
_LB = 224.0 / 255.0 / (2.0 * (1.0 - KB)) * _ONE / 4
_LR = 224.0 / 255.0 / (2.0 * (1.0 - KR)) * _ONE / 4
Y_R, Y_G, Y_B, Y_0 = round(KR * _LY), round(KG * _LY), round(KB * _LY), round(16.5 * _ONE)
U_R, U_G, U_B = round(-KR * _LB), round(-KG * _LB), round((1.0 - KB) * _LB)
V_R, V_G, V_B = round((1.0 - KR) * _LR), round(-KG * _LR), round(-KB * _LR)
C_0 = round(128.5 * _ONE)
A_Y = round(_LY)  # a gray value's Y: (A_Y * v + Y_0) >> 16 == int(v / 255 * 219 + 16.5), all v


_CACHE = os.environ.get("RVMATTE_NUMBA_CACHE", "1") != "0"
_jit = njit(nogil=True, cache=_CACHE, boundscheck=False)


@_jit
def rgb_to_yuv420(src, out):
    # src (H,W,3) uint8 (any strides), H and W even -> out flat uint8 (H*W luma, then
    # H/2*W/2 U, then V)
    H, W = src.shape[0], src.shape[1]
    for y in range(H):
        for x in range(W):
            v = (Y_R * np.int32(src[y, x, 0]) + Y_G * np.int32(src[y, x, 1])
                 + Y_B * np.int32(src[y, x, 2]) + Y_0)
            out[y * W + x] = np.uint8(v >> 16)
    uoff = H * W
    voff = uoff + (H // 2) * (W // 2)
    for cy in range(H // 2):
        y = 2 * cy
        for cx in range(W // 2):
            x = 2 * cx
            r = (np.int32(src[y, x, 0]) + np.int32(src[y, x + 1, 0]) + np.int32(src[y + 1, x, 0])
                 + np.int32(src[y + 1, x + 1, 0]))
            g = (np.int32(src[y, x, 1]) + np.int32(src[y, x + 1, 1]) + np.int32(src[y + 1, x, 1])
                 + np.int32(src[y + 1, x + 1, 1]))
            b = (np.int32(src[y, x, 2]) + np.int32(src[y, x + 1, 2]) + np.int32(src[y + 1, x, 2])
                 + np.int32(src[y + 1, x + 1, 2]))
            ci = cy * (W // 2) + cx
            out[uoff + ci] = np.uint8(min(max((U_R * r + U_G * g + U_B * b + C_0) >> 16, 0), 255))
            out[voff + ci] = np.uint8(min(max((V_R * r + V_G * g + V_B * b + C_0) >> 16, 0), 255))


@_jit
def gray_to_yuv420(src, out):
    # src (H,W) uint8, H and W even -> out flat uint8: Y = the value in limited range, U = V = 128
    H, W = src.shape[0], src.shape[1]
    for y in range(H):
        for x in range(W):
            out[y * W + x] = np.uint8((A_Y * np.int32(src[y, x]) + Y_0) >> 16)
    for i in range(H * W, out.shape[0]):
        out[i] = 128
