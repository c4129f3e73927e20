"""Compiled CPU kernels (numba) for the full-resolution work around the network.

At 1080p / 0.25 the network runs on a 480x270 image, yet most of a CPU conversion's time went
to full-resolution passes: uint8 -> float, the refiner's bilinear upsampling of its eight
coefficient planes, ``a * x + b``, the clamps, the composite and float -> uint8 -- each a
separate sweep over 8-32 MB. :class:`Refiner` does all of that in one pass per row, reading the
decoded uint8 frame and writing the uint8 outputs (about 18 ms per 1080p frame on one core of
the reference CPU, against 76 ms for the same steps in ONNX Runtime and PyTorch); see
docs/SPEED.md. :func:`downsample` makes the network's input straight from the uint8 frame.

The arithmetic is that of :func:`rvmatte.models.guided_filter.apply_coefficients`,
``MattingNetwork.forward``'s clamps, :func:`rvmatte.io.compose.composite` and
:func:`~rvmatte.io.compose.to_uint8` (bilinear, ``align_corners=False``, PyTorch's source-index
rule), in float32; the uint8 results agree with that path to within one level (tests).

numba is imported on first use; :func:`available` says whether it can be. Compiled code is
cached on disk (numba's cache, next to this file or in the user cache), so only the first run
on a machine pays the compilation (about 2 s).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Optional

import numpy as np

from ..downsample import working_size
from ..hardware import BandPool, import_kernels

_EMPTY3 = np.zeros((0, 0, 3), np.uint8)
_EMPTY4 = np.zeros((0, 0, 4), np.uint8)
_EMPTY2 = np.zeros((0, 0), np.uint8)
_EMPTY1 = np.zeros(0, np.uint8)


def available() -> bool:
    """numba is installed (the kernels can be compiled)."""
    return importlib.util.find_spec("numba") is not None


@functools.lru_cache(maxsize=None)
def _compiled():
    """The numba kernels (:mod:`rvmatte._numba_kernels`), imported on first use (compiled in
    each process, about 2 s, where numba cannot cache them:
    :func:`~rvmatte.hardware.import_kernels`)."""
    return import_kernels(f"{__package__}._numba_kernels")


@functools.lru_cache(maxsize=16)
def _maps(n_out: int, n_in: int, scale: float):
    """Bilinear taps along one axis, PyTorch's rule (``align_corners=False``): source
    ``(o + 0.5) * scale - 0.5`` clamped below at 0; the right neighbour clamps at the edge.
    Returns ``(i0, i1, weight of i1)``."""
    f = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(scale)
                   - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(f.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (f - i0.astype(np.float32)).astype(np.float32)


def _coefficient_maps(H: int, W: int, a: np.ndarray) -> tuple:
    """The bilinear taps from the ``(4, h, w)`` coefficients ``a`` to an ``H`` x ``W`` frame:
    ``(xi0, xi1, xl, yi0, yi1, yl)``, the kernels' argument order."""
    h, w = a.shape[1:]
    return (*_maps(W, w, w / W), *_maps(H, h, h / H))


def warm_up() -> None:
    """Load (or compile) the kernels that file conversion uses, on tiny inputs, so that a
    thread can do it while the caller opens its model. Quiet: a failure shows again, with
    its message, at the first real call."""
    try:
        frame = np.zeros((2, 2, 3), np.uint8)
        downsample(frame, 0.5)
        coef = np.zeros((4, 1, 1), np.float32)
        Refiner(1)(frame, coef, coef, alpha=np.empty((2, 2), np.uint8))
    except Exception:  # noqa: BLE001 - reported by the real call
        pass


def downsample(frame: np.ndarray, ratio: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 RGB ``(H,W,3)`` -> float32 ``(3,h,w)`` in [0, 1] at ``ratio``, as
    ``interpolate(x / 255, scale_factor=ratio, mode="bilinear", recompute_scale_factor=False)``
    (the network's own downsample)."""
    H, W = frame.shape[:2]
    h, w = working_size(H, W, ratio)
    if out is None:
        out = np.empty((3, h, w), np.float32)
    k = _compiled()
    k.downsample(frame, out, *_maps(h, H, 1.0 / ratio), *_maps(w, W, 1.0 / ratio))
    return out


class Refiner:
    """The fused full-resolution step, split into ``threads`` bands of rows run side by side
    (the kernels release the GIL)."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, int(threads))
        self._bands = BandPool(self.threads, "rvmatte-kernel")
        self._k = _compiled()

    def __call__(self, frame: np.ndarray, a: np.ndarray, b: np.ndarray, *,
                 background=None, composite: Optional[np.ndarray] = None,
                 rgba: Optional[np.ndarray] = None, foreground: Optional[np.ndarray] = None,
                 alpha: Optional[np.ndarray] = None, composite_yuv: Optional[np.ndarray] = None,
                 alpha_yuv: Optional[np.ndarray] = None) -> None:
        """``frame`` uint8 (H,W,3); ``a``, ``b`` float32 (4,h,w), the refiner's coefficients.
        Fills the given uint8 arrays: ``composite`` (H,W,3) over ``background`` (RGB floats
        in [0, 1]), ``rgba`` (H,W,4) foreground and alpha, ``foreground`` (H,W,3), ``alpha``
        (H,W); ``composite_yuv`` / ``alpha_yuv``: the composite / alpha as 4:2:0 planes
        (H*3/2, W) ready for the encoder (BT.601 limited range, :mod:`rvmatte.io.yuv`'s layout
        and conventions; even sizes only)."""
        H, W = frame.shape[:2]
        planes = [composite_yuv, alpha_yuv]
        for i, pl in enumerate(planes):
            if pl is None:
                planes[i] = _EMPTY1
                continue
            if H % 2 or W % 2 or pl.shape != (H * 3 // 2, W) or not pl.flags.c_contiguous:
                raise ValueError(f"4:2:0 planes need an even size and a contiguous "
                                 f"({H * 3 // 2}, {W}) array, got {pl.shape}")
            planes[i] = pl.reshape(-1)
        bg = np.asarray(background if background is not None else (0, 0, 0), np.float32)
        outs = (_EMPTY3 if composite is None else composite, _EMPTY4 if rgba is None else rgba,
                _EMPTY3 if foreground is None else foreground, _EMPTY2 if alpha is None else alpha,
                *planes)
        self._run(self._k.refine_rows, frame, H, W, a, b, (bg, *outs))

    def floats(self, src: np.ndarray, a: np.ndarray, b: np.ndarray, fgr: np.ndarray,
               pha: np.ndarray) -> None:
        """``src`` float32 (3,H,W) in [0, 1]; fills ``fgr`` (3,H,W) and ``pha`` (H,W) float32
        (the network's outputs, clamped)."""
        H, W = src.shape[1:]
        self._run(self._k.refine_float_rows, np.ascontiguousarray(src, np.float32), H, W, a, b,
                  (fgr, pha))

    def floats_u8(self, frame: np.ndarray, a: np.ndarray, b: np.ndarray, fgr: np.ndarray,
                  pha: np.ndarray) -> None:
        """``frame`` uint8 (H,W,3); fills ``fgr`` (H,W,3) and ``pha`` (H,W) float32 (the
        network's outputs, clamped): the float half of :meth:`__call__`, for a post stage
        (:mod:`rvmatte.post`) before :meth:`compose`."""
        H, W = frame.shape[:2]
        self._run(self._k.refine_float_u8_rows, frame, H, W, a, b, (fgr, pha))

    def alpha_u8(self, frame: np.ndarray, a: np.ndarray, b: np.ndarray, pha: np.ndarray) -> None:
        """The ``pha`` of :meth:`floats_u8` alone (the same values, about half the time), for
        a post stage that replaces the foreground."""
        H, W = frame.shape[:2]
        self._run(self._k.refine_alpha_u8_rows, frame, H, W, a, b, (pha,))

    def foreground_at(self, frame: np.ndarray, a: np.ndarray, b: np.ndarray,
                      band: np.ndarray, out: np.ndarray) -> None:
        """The ``fgr`` of :meth:`floats_u8` at some pixels only: ``band`` int64 (N,), one
        ``(y << 32) | x`` per pixel; fills ``out`` float32 (N,3) (the same values to within
        float rounding). For a post stage that needs the network's foreground in the alpha's
        soft band alone, next to :meth:`alpha_u8` (one thread: a few percent of a frame)."""
        self._k.foreground_at(frame, np.ascontiguousarray(a, np.float32),
                              np.ascontiguousarray(b, np.float32), band, out,
                              *_coefficient_maps(*frame.shape[:2], a))

    def compose(self, pha: np.ndarray, fgr: np.ndarray, *, background=None,
                **outputs: Optional[np.ndarray]) -> None:
        """The uint8 outputs of :meth:`__call__` (same names, same arithmetic) from float32
        ``pha`` (H,W) and ``fgr`` (H,W,3) in [0, 1]."""
        H, W = pha.shape
        empty = {"composite": _EMPTY3, "rgba": _EMPTY4, "foreground": _EMPTY3, "alpha": _EMPTY2}
        outs = []
        for name in ("composite", "rgba", "foreground", "alpha"):
            v = outputs.get(name)
            outs.append(empty[name] if v is None else v)
        for name in ("composite_yuv", "alpha_yuv"):
            pl = outputs.get(name)
            if pl is not None and (H % 2 or W % 2 or pl.shape != (H * 3 // 2, W)):
                raise ValueError(f"4:2:0 planes need an even size, got {pl.shape}")
            outs.append(_EMPTY1 if pl is None else pl.reshape(-1))
        bg = np.asarray(background if background is not None else (0, 0, 0), np.float32)
        bands = np.linspace(0, H, self.threads + 1).astype(int) // 2 * 2
        bands[-1] = H
        args = (np.ascontiguousarray(pha, np.float32), np.ascontiguousarray(fgr, np.float32),
                bg, *outs)
        self._bands.run(self._k.compose_rows, args, bands)

    def _run(self, kernel, src: np.ndarray, H: int, W: int, a: np.ndarray, b: np.ndarray,
             rest: tuple) -> None:
        """``kernel(src, a, b, *rest, *maps, r0, r1)`` over ``self.threads`` bands of rows of
        the ``H`` x ``W`` output (``a``, ``b``: the (4,h,w) coefficients)."""
        maps = _coefficient_maps(H, W, a)
        args = (src, np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32),
                *rest)
        bands = np.linspace(0, H, self.threads + 1).astype(int) // 2 * 2  # even: 4:2:0 rows
        bands[-1] = H
        self._bands.run(kernel, (*args, *maps), bands)

    def close(self) -> None:
        self._bands.close()
