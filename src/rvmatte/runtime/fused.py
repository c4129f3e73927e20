"""Backend ``"fused"``: ONNX Runtime for the network, rvmatte's compiled kernel for the rest.

At a downsample ratio below 1 the network itself only sees the small image; ONNX Runtime runs
that half (:func:`~rvmatte.export.onnx.export_coefficients_onnx`, ending with the refiner's
linear coefficients ``a``, ``b`` at the working resolution) and :mod:`rvmatte.runtime.kernels` does
the full-resolution half in one pass: upsampling of the coefficients, ``a * x + b``, the
clamps and, for file conversion, the composite and the 8-bit outputs
(:meth:`FusedRunner.matte_uint8`, which file conversion uses through :class:`~rvmatte.inference.session.Matter`).
Called like the model (:meth:`FusedRunner.__call__`) it returns float tensors as the other
backends do. At ratio 1 there is no refiner and it runs the whole exported graph.

``backend="auto"`` picks it on CPUs in float32 when onnxruntime and numba are installed and
the ratio is below 1, except for the bundled weights on CPUs with VNNI, where it picks
``int8`` (this runner over the quantised network, :mod:`rvmatte.runtime.int8`); docs/SPEED.md
has the measurements. File conversion on the CPU
builds it without importing PyTorch (:func:`rvmatte.runtime.needs_torch`): the uint8 methods
take and return numpy arrays only.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from . import kernels
from ..errors import RvmatteError
from ..hardware import cpu_requested, default_threads, dtype_name

if TYPE_CHECKING:
    import torch

    from ..models import MattingOutput


def _on_cpu(device: Any) -> bool:
    """``device`` is the CPU (a default one only where :func:`~rvmatte.hardware.cpu_requested`
    can tell without torch, else torch decides, as for the other backends)."""
    if cpu_requested(device):
        return True
    from ..spec import resolve_device

    return resolve_device(device) == "cpu"


class FusedRunner:
    """``FusedRunner(**source, threads=None)``: ``source`` as for
    :class:`~rvmatte.runtime.ort.OnnxRuntimeRunner` (``variant``/``weights``/``refiner``,
    or ``model=``); CPU, float32. ``threads``: ONNX Runtime's intra-op threads and the kernel's
    bands of rows (default :func:`rvmatte.hardware.default_threads`, torch's count)."""

    backend = "fused"  # the backend's name, for messages (rvmatte.runtime.int8 subclasses)

    def __init__(self, *, threads: Optional[int] = None, device: Any = "cpu", dtype: Any = None,
                 **source: Any) -> None:
        if not kernels.available():
            raise RvmatteError(f"backend {self.backend!r} needs numba (pip install numba); "
                               "or use --backend onnxruntime")
        if not _on_cpu(device) or dtype_name(dtype) != "float32":
            raise RvmatteError(f"backend {self.backend!r} runs on the CPU in float32")
        # Load the compiled kernels (numba's disk cache) while ONNX Runtime opens the graph.
        threading.Thread(target=kernels.warm_up, name="rvmatte-kernel-load", daemon=True).start()
        self._source = dict(source, threads=threads)
        self.threads = int(threads or default_threads())
        self.coef = self._open("coefficients")
        self.refine = kernels.Refiner(self.threads)
        self._full = None  # the whole graph, for ratio 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.coef.onnx_path.name}, threads={self.threads})"

    def _open(self, graph: str):
        """The ONNX Runtime runner of ``graph`` (``"coefficients"`` or ``"full"``)."""
        from .ort import OnnxRuntimeRunner

        return OnnxRuntimeRunner(device="cpu", graph=graph, **self._source)

    def _whole(self):
        if self._full is None:
            self._full = self._open("full")
        return self._full

    @staticmethod
    def _check_ratio(ratio: float) -> float:
        r = float(ratio)
        if not 0 < r <= 1:
            raise ValueError(f"downsample_ratio must be in (0, 1], got {ratio}")
        return r

    # -- like the model: float tensors in and out ----------------------------------------------
    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        """``src`` (B,3,H,W) or (B,T,3,H,W) float in [0, 1] on the CPU -> ``MattingOutput``
        (float32 tensors), as :class:`~rvmatte.models.MattingNetwork`."""
        import torch
        from torch.nn import functional as F

        from ..models.outputs import MattingOutput

        r = self._check_ratio(downsample_ratio)
        if r == 1:
            return self._whole()(src, state, r)
        if src.ndim not in (4, 5) or src.shape[-3] != 3:
            raise ValueError(f"src must be (B,3,H,W) or (B,T,3,H,W), got {tuple(src.shape)}")
        clip = src.ndim == 5
        x = src.detach().to("cpu", torch.float32)
        x = x if clip else x.unsqueeze(1)
        B, T, _, H, W = x.shape
        fgr = torch.empty(B, T, 3, H, W)
        pha = torch.empty(B, T, 1, H, W)
        rec = self.coef.state_arrays(state)
        for t in range(T):
            frame = x[:, t].contiguous()
            sm = F.interpolate(frame, scale_factor=r, mode="bilinear", align_corners=False,
                               recompute_scale_factor=False)
            a, b, *rec = self.coef.coefficients(sm.numpy(), rec)
            for i in range(B):
                self.refine.floats(frame[i].numpy(), a[i], b[i], fgr[i, t].numpy(), pha[i, t, 0].numpy())
        if not clip:
            fgr, pha = fgr[:, 0], pha[:, 0]
        return MattingOutput(fgr, pha, tuple(torch.from_numpy(s) for s in rec))

    # -- file conversion: uint8 frames in, uint8 outputs out -----------------------------------
    _OUTPUTS = ("composite", "rgba", "foreground", "alpha", "composite_yuv", "alpha_yuv")

    @staticmethod
    def _shape(name: str, T: int, H: int, W: int) -> tuple:
        if name.endswith("_yuv"):
            return (T, H * 3 // 2, W)
        return {"composite": (T, H, W, 3), "rgba": (T, H, W, 4), "foreground": (T, H, W, 3),
                "alpha": (T, H, W)}[name]

    def network(self, frames: np.ndarray, state, downsample_ratio: float):
        """The recurrent half: uint8 (T,H,W,3) RGB frames -> (the refiner's coefficients per
        frame, the new state as four numpy arrays; ``state`` may be arrays or tensors). The
        other half, :meth:`finish`, does not depend on the state and can run in another thread. (Overlapping the two in file conversion measured the same
        as running them in turn on 2 cores: 23.7-24.6 s against 23.7-24.2 s for 300 frames.)"""
        r = self._check_ratio(downsample_ratio)
        if r == 1:
            raise ValueError("the fused path needs a downsample ratio below 1")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
        rec = self.coef.state_arrays(state)
        coefs = []
        for t in range(frames.shape[0]):
            a, b, *rec = self.coef.coefficients(kernels.downsample(frames[t], r)[None], rec)
            coefs.append((a[0], b[0]))
        return coefs, tuple(rec)

    def finish(self, frames: np.ndarray, coefs, *, outputs: Sequence[str],
               background: Sequence[float] = (0.0, 0.0, 0.0), post=None) -> dict:
        """The full-resolution half: ``{name: uint8 array}`` for each name in ``outputs``:
        ``"composite"`` (T,H,W,3) over ``background`` (RGB in [0, 1]), ``"rgba"`` (T,H,W,4)
        foreground and alpha, ``"foreground"`` (T,H,W,3), ``"alpha"`` (T,H,W);
        ``"composite_yuv"`` / ``"alpha_yuv"``: (T,H*3/2,W) 4:2:0 planes for the encoder (even
        sizes; see :class:`rvmatte.runtime.kernels.Refiner`). ``post``: None, or a callable
        ``post(frames (1,H,W,3) uint8, pha (1,H,W), fgr (1,H,W,3))`` changing the network's
        float32 outputs in place before the uint8 outputs are made (:mod:`rvmatte.post`);
        where ``post.replaces_foreground`` is true (it writes all of ``fgr`` before reading
        any), the network's foreground is not made for it; where ``post.foreground_on_demand``
        is, it is made only where the post stage asks for it: the call gets
        ``network_foreground(t, band, out)`` (:meth:`Refiner.foreground_at` of frame ``t``)."""
        unknown = set(outputs) - set(self._OUTPUTS)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}")
        T, H, W = frames.shape[:3]
        out = {k: np.empty(self._shape(k, T, H, W), np.uint8) for k in outputs}
        if post is not None:
            pha, fgr = np.empty((1, H, W), np.float32), np.empty((1, H, W, 3), np.float32)
            on_demand = bool(getattr(post, "foreground_on_demand", False))
            alpha_only = on_demand or bool(getattr(post, "replaces_foreground", False))
        for t, (a, b) in enumerate(coefs):
            frame = np.ascontiguousarray(frames[t])
            if post is None:
                self.refine(frame, a, b, background=background,
                            **{k: v[t] for k, v in out.items()})
                continue
            if alpha_only:
                self.refine.alpha_u8(frame, a, b, pha[0])
            else:
                self.refine.floats_u8(frame, a, b, fgr[0], pha[0])
            if on_demand:
                post(frame[None], pha, fgr, network_foreground=functools.partial(
                    self._foreground_at, frame, a, b))
            else:
                post(frame[None], pha, fgr)
            self.refine.compose(pha[0], fgr[0], background=background,
                                **{k: v[t] for k, v in out.items()})
        return out

    def _foreground_at(self, frame: np.ndarray, a, b, t: int, band: np.ndarray,
                       out: np.ndarray) -> None:
        """A post stage's ``network_foreground(t, band, out)`` for one frame (``t`` is 0)."""
        self.refine.foreground_at(frame, a, b, band, out)

    def matte_uint8(self, frames: np.ndarray, state, downsample_ratio: float, *,
                    outputs: Sequence[str], background: Sequence[float] = (0.0, 0.0, 0.0),
                    post=None):
        """``frames`` uint8 (T,H,W,3) RGB -> ``({name: uint8 array}, state)``: :meth:`network`
        then :meth:`finish`. ``state``: ``None`` or the previous call's."""
        coefs, state = self.network(frames, state, downsample_ratio)
        return self.finish(frames, coefs, outputs=outputs, background=background,
                           post=post), state

    def close(self) -> None:
        self.refine.close()
