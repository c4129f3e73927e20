"""Temporal stabilisation of the alpha (and foreground): streaming, no look-ahead.

Per pixel, the new output is the network's value pulled towards the previous *output*::

    D  = box_(2r+1)( mean_c |I_t - I_t-1| )          image change, robust to sensor noise
    dA = a_t - s_t-1                                  how far the network moved the matte
    q  = (D / tau_i)^2 + (dA / tau_a)^2
    w  = w_max (1 - q)^2 for q < 1, else 0
    s_t = a_t + w (s_t-1 - a_t)                       (the foreground with the same w)

so a still pixel whose matte shimmers by a few levels is held, while a pixel whose image
changed by tau_i or more, or whose matte moved by tau_a or more, takes the network's value
exactly, at once:
the step response to real motion is within the frame it happens in. A frame whose mean image
change exceeds ``cut`` (a scene cut) resets the memory. The state is the previous frame and
the previous outputs; :meth:`Stabilizer.state_arrays` / :meth:`Stabilizer.load_state` carry it
through a checkpoint exactly.

Two implementations of the one formula: numba over uint8 frames and float32 numpy mattes
(the CPU paths), torch over tensors on any device (the GPU path).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..hardware import BandPool


@dataclass(frozen=True)
class StabilizeParams:
    """The formula's constants (image values in [0, 1])."""

    radius: int = 1          # box of the image difference: (2r+1)^2 pixels
    tau_image: float = 0.05  # image change (box mean) from which the network's value is kept
    tau_alpha: float = 0.25  # alpha change from which the network's value is kept
    w_max: float = 0.85      # the strongest pull towards the previous output
    cut: float = 0.12        # mean image change of a scene cut (memory reset)


@functools.lru_cache(maxsize=None)
def _k():
    from ..hardware import import_kernels

    return import_kernels(f"{__package__}._kernels")


class Stabilizer:
    """Streaming stabiliser of one stream (one clip). :meth:`__call__` for numpy (uint8 frames,
    float32 mattes, changed in place), :meth:`tensors` for torch tensors; one kind per
    stream. :meth:`reset` forgets the past (a new clip)."""

    def __init__(self, params: StabilizeParams = StabilizeParams(), threads: int = 1) -> None:
        self.p = params
        self.threads = max(1, int(threads))
        self._pool = BandPool(self.threads, "rvmatte-post")
        self.reset()

    def _bands(self, kernel, H: int, *args) -> None:
        """``kernel(*args, r0, r1)`` over ``threads`` bands of rows side by side (every
        pixel's result is independent of the split)."""
        self._pool.run(kernel, args, np.linspace(0, H, self.threads + 1).astype(int))

    def reset(self) -> None:
        self.prev_img = self.prev_pha = self.prev_fgr = None
        self._hsum: Optional[np.ndarray] = None

    def close(self) -> None:
        self._pool.close()

    # -- numpy (numba) --------------------------------------------------------------------
    def __call__(self, frames: np.ndarray, pha: np.ndarray,
                 fgr: Optional[np.ndarray] = None) -> None:
        """``frames`` uint8 (T,H,W,3); ``pha`` float32 (T,H,W) and ``fgr`` float32 (T,H,W,3)
        or None, stabilised in place."""
        for t in range(frames.shape[0]):
            self._frame(np.ascontiguousarray(frames[t]), pha[t],
                        None if fgr is None else fgr[t])

    def _frame(self, img: np.ndarray, pha: np.ndarray, fgr: Optional[np.ndarray]) -> None:
        p, k = self.p, _k()
        fresh = (self.prev_img is None or self.prev_img.shape != img.shape
                 or (fgr is None) != (self.prev_fgr is None or self.prev_fgr.size == 0))
        H = img.shape[0]
        if not fresh:
            if self._hsum is None or self._hsum.shape != pha.shape:
                self._hsum = np.empty(pha.shape, np.float32)
                self._rows = np.empty(H, np.float64)
            self._bands(k.frame_difference, H, img, self.prev_img, self._hsum, self._rows,
                        p.radius)
            fresh = float(self._rows.sum()) / pha.size > p.cut  # row order: any split
        if fresh:  # first frame, new size or scene cut: the network's values as they are
            self.prev_pha = np.array(pha, np.float32, order="C")
            self.prev_fgr = (np.zeros((0, 0, 3), np.float32) if fgr is None
                             else np.array(fgr, np.float32, order="C"))
            self.prev_img = np.array(img, order="C")
            return
        # the kernel reads the foreground as flat rows: a strided one (a tensor's view, live)
        # goes through a contiguous copy
        f = np.zeros((0, 0, 3), np.float32) if fgr is None else np.ascontiguousarray(fgr)
        self._bands(k.stabilize_rows, H, self._hsum, p.radius, pha, self.prev_pha, f,
                    self.prev_fgr, np.float32(p.w_max), np.float32(1 / p.tau_image),
                    np.float32(1 / p.tau_alpha))
        if fgr is not None and f is not fgr:
            np.copyto(fgr, f)
        np.copyto(self.prev_img, img)

    # -- torch ------------------------------------------------------------------------------
    def tensors(self, src: Any, fgr: Any, pha: Any) -> tuple[Any, Any]:
        """``src``, ``fgr`` (T,3,H,W), ``pha`` (T,1,H,W) float tensors on any device ->
        stabilised ``(fgr, pha)`` (new tensors; the formula of :meth:`__call__`)."""
        import torch
        from torch.nn import functional as F

        p = self.p
        if self.prev_img is not None and not torch.is_tensor(self.prev_img):  # a checkpoint's
            self.prev_img, self.prev_pha, self.prev_fgr = (
                torch.from_numpy(np.array(a)).to(src.device)
                for a in (self.prev_img, self.prev_pha, self.prev_fgr))
        outs_f, outs_a = [], []
        for t in range(src.shape[0]):
            img, a, f = src[t:t + 1].float(), pha[t:t + 1].float(), fgr[t:t + 1].float()
            prev = self.prev_img
            fresh = prev is None or not torch.is_tensor(prev) or prev.shape != img.shape
            if not fresh:
                d = (img - prev).abs().mean(1, keepdim=True)
                fresh = float(d.mean()) > p.cut
            if not fresh:
                D = F.avg_pool2d(d, 2 * p.radius + 1, stride=1, padding=p.radius,
                                 count_include_pad=False)
                q = (D / p.tau_image) ** 2 + ((a - self.prev_pha) / p.tau_alpha) ** 2
                w = p.w_max * (1 - q).clamp_(min=0) ** 2
                a = torch.lerp(a, self.prev_pha, w)
                f = torch.lerp(f, self.prev_fgr, w)
            self.prev_img, self.prev_pha, self.prev_fgr = img, a, f
            outs_a.append(a)
            outs_f.append(f)
        return (torch.cat(outs_f).to(fgr.dtype), torch.cat(outs_a).to(pha.dtype))

    # -- checkpoint --------------------------------------------------------------------------
    def state_arrays(self) -> list:
        """``[previous frame, previous alpha, previous foreground]`` as numpy copies (empty
        before the first frame)."""
        if self.prev_img is None:
            return []
        out = []
        for s in (self.prev_img, self.prev_pha, self.prev_fgr):
            if hasattr(s, "detach"):
                s = s.detach().to("cpu").numpy()
            out.append(np.array(s, copy=True))
        return out

    def load_state(self, arrays: list, like: Any = None) -> None:
        """Restore :meth:`state_arrays`; ``like``: a tensor whose device the torch path uses
        (None: numpy)."""
        self.reset()
        if not arrays:
            return
        if like is not None:
            import torch

            arrays = [torch.from_numpy(np.array(a)).to(like.device) for a in arrays]
        else:
            arrays = [np.ascontiguousarray(a) for a in arrays]  # the kernels' layout
        self.prev_img, self.prev_pha, self.prev_fgr = arrays


def weight(d_image: float, d_alpha: float, params: StabilizeParams = StabilizeParams()) -> float:
    """The blend weight for a (box mean) image change ``d_image`` and alpha change
    ``d_alpha``: the formula of the kernels, for docs and tests."""
    p = params
    q = (d_image / p.tau_image) ** 2 + (d_alpha / p.tau_alpha) ** 2
    return p.w_max * (1 - q) ** 2 if q < 1 else 0.0
