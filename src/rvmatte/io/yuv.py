"""YUV 4:2:0 <-> RGB colour conversion as torch operations, run where the model runs.

On a GPU the conversion libswscale does on the CPU for every frame (decoded YUV -> RGB, and
RGB -> YUV for each encoded output) costs more CPU time than decoding; doing it on the
device instead, next to the model, moves only the 8-bit planes over the bus (1.5 bytes per
pixel instead of 3) and leaves the CPU cores to the decoder and the encoders.

The conventions are libswscale's defaults, so that this path and the CPU path write the same
colours: chroma upsampled by repetition, untagged video read as BT.601, limited range unless
the stream says full ("jpeg") range, and outputs written as BT.601 limited range (what
``VideoFrame.from_ndarray(rgb24).reformat("yuv420p")`` gives). The planes layout is PyAV's
``to_ndarray()``/``from_ndarray(format="yuv420p")`` one: a ``(H * 3 / 2, W)`` uint8 array, the
Y plane followed by the U and V planes (each ``H/2 x W/2``, stored row-major in ``H/4`` rows of
``W``). Sizes must be even.

:func:`image_to_yuv420` makes the same planes on the CPU from a uint8 image (numba, integer
arithmetic: the same planes on every machine), for the video writer: its RGB pictures then
get the fused path's colours (libswscale's chroma is sited differently: up to 14 levels apart
at a sharp colour edge), for less CPU than libswscale's conversion (benchmarks/encode_speed.py
--conversion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from .readers import enum_int

if TYPE_CHECKING:
    import torch

# (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb.
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}
# libavutil AVColorSpace values -> matrix. 1 = BT.709, 9/10 = BT.2020; everything else
# (2 unspecified, 5 BT.470BG, 6 SMPTE 170M, ...) is read as BT.601, as libswscale does.
_AV_COLORSPACE = {1: "bt709", 9: "bt2020", 10: "bt2020"}


def matrix_for(colorspace) -> str:
    """The matrix name for a PyAV frame's ``colorspace`` (an int or an enum)."""
    return _AV_COLORSPACE.get(enum_int(colorspace, 2), "bt601")


def is_full_range(color_range) -> bool:
    """``True`` for AVCOL_RANGE_JPEG (2)."""
    return enum_int(color_range, 0) == 2


def _split(planes: torch.Tensor, height: int, width: int):
    t = planes.shape[0]
    y = planes[:, :height]
    flat = planes[:, height:].reshape(t, 2, (height // 2) * (width // 2))
    u = flat[:, 0].reshape(t, height // 2, width // 2)
    v = flat[:, 1].reshape(t, height // 2, width // 2)
    return y, u, v


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    t, h, w = x.shape
    return x[:, :, None, :, None].expand(t, h, 2, w, 2).reshape(t, 2 * h, 2 * w)


def yuv420_to_rgb(planes: torch.Tensor, height: int, width: int, *, matrix: str = "bt601",
                  full_range: bool = False, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``planes`` uint8 ``(T, H*3/2, W)`` -> RGB ``(T, 3, H, W)`` in [0, 1] of ``dtype``
    (default float32).

    The arithmetic is float32 whatever ``dtype`` (its result is then cast)."""
    import torch

    if planes.ndim == 2:
        planes = planes.unsqueeze(0)
    if height % 2 or width % 2 or planes.shape[-2:] != (height * 3 // 2, width):
        raise ValueError(f"expected (T, {height * 3 // 2}, {width}) 4:2:0 planes of an even "
                         f"size, got {tuple(planes.shape)}")
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    y, u, v = _split(planes, height, width)
    y = y.float()
    u = _upsample2(u).float()
    v = _upsample2(v).float()
    if full_range:
        y = y.mul_(1.0 / 255.0)
        cb = u.sub_(128.0).mul_(1.0 / 255.0)
        cr = v.sub_(128.0).mul_(1.0 / 255.0)
    else:
        y = y.sub_(16.0).mul_(1.0 / 219.0)
        cb = u.sub_(128.0).mul_(1.0 / 224.0)
        cr = v.sub_(128.0).mul_(1.0 / 224.0)
    r = y + (2.0 * (1.0 - kr)) * cr
    b = y + (2.0 * (1.0 - kb)) * cb
    g = (y - kr * r - kb * b).mul_(1.0 / kg)
    return torch.stack([r, g, b], 1).clamp_(0.0, 1.0).to(dtype or torch.float32)


def rgb_to_yuv420(rgb: torch.Tensor, *, matrix: str = "bt601") -> torch.Tensor:
    """RGB ``(T, 3, H, W)`` in [0, 1] (any float dtype) -> uint8 planes ``(T, H*3/2, W)``,
    limited range. Chroma is the mean of each 2x2 block."""
    import torch

    t, c, h, w = rgb.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"expected (T, 3, H, W) RGB of an even size, got {tuple(rgb.shape)}")
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    x = rgb.float()
    luma = kr * x[:, 0] + kg * x[:, 1] + kb * x[:, 2]
    y = luma.mul(219.0).add_(16.5)
    # chroma of the 2x2 means (the transform is linear, so this is the mean of the chroma)
    m = x.reshape(t, 3, h // 2, 2, w // 2, 2).mean((3, 5))
    ml = kr * m[:, 0] + kg * m[:, 1] + kb * m[:, 2]
    cb = (m[:, 2] - ml).mul_(224.0 / (2.0 * (1.0 - kb))).add_(128.5)
    cr = (m[:, 0] - ml).mul_(224.0 / (2.0 * (1.0 - kr))).add_(128.5)
    chroma = torch.stack([cb, cr], 1).reshape(t, h // 2, w)
    out = torch.cat([y, chroma], 1)
    return out.clamp_(0.0, 255.0).to(torch.uint8)


def gray_to_yuv420(gray: torch.Tensor) -> torch.Tensor:
    """A gray image ``(T, H, W)`` or ``(T, 1, H, W)`` in [0, 1] -> uint8 planes ``(T, H*3/2, W)``:
    Y = the value in limited range, neutral chroma (what libswscale makes of ``gray`` frames)."""
    import torch

    if gray.ndim == 4:
        gray = gray[:, 0]
    t, h, w = gray.shape
    if h % 2 or w % 2:
        raise ValueError(f"expected an even size, got {h}x{w}")
    y = gray.float().mul(219.0).add_(16.5).clamp_(0.0, 255.0).to(torch.uint8)
    chroma = torch.full((t, h // 2, w), 128, dtype=torch.uint8, device=gray.device)
    return torch.cat([y, chroma], 1)


def image_to_yuv420(image: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """A uint8 image, RGB ``(H, W, 3)`` or gray ``(H, W)`` (even sizes), -> uint8 planes
    ``(H*3/2, W)`` on the CPU, BT.601 limited range: what :func:`rgb_to_yuv420` /
    :func:`gray_to_yuv420` and the fused kernel's ``composite_yuv`` / ``alpha_yuv`` make of
    the same pixels (chroma: the 2x2 block mean; gray: neutral chroma). Fills ``out`` (a
    C-contiguous ``(H*3/2, W)`` uint8 array) when given."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H, W, 3) or (H, W) image, got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 planes need an even size, got {w}x{h}")
    if out is None:
        out = np.empty((h * 3 // 2, w), np.uint8)
    elif out.shape != (h * 3 // 2, w) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous uint8 ({h * 3 // 2}, {w}) array, got "
                         f"{out.dtype} {out.shape}")
    from ..hardware import import_kernels

    k = import_kernels(f"{__package__}._yuv_kernels")
    kernel = k.gray_to_yuv420 if image.ndim == 2 else k.rgb_to_yuv420
    kernel(image, out.reshape(-1))  # any strides (an RGBA image's RGB)
    return out
