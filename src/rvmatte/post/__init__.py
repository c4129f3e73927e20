"""The post stage: streaming processors between the network and the outputs.

Each processor works on one stream of frames, looks at no future frame and carries its own
state (saved in conversion checkpoints, so a resumed job writes the same bytes). The protocol:

- ``proc(frames, pha, fgr)``: numpy; ``frames`` uint8 (T,H,W,3) RGB, ``pha`` float32 (T,H,W)
  and ``fgr`` float32 (T,H,W,3) (or None) in [0, 1], changed in place (the CPU paths);
- ``proc.tensors(src, fgr, pha) -> (fgr, pha)``: tensors, ``src``/``fgr`` (T,3,H,W), ``pha``
  (T,1,H,W), on the model's device (the GPU path);
- ``proc.state_arrays()`` / ``proc.load_state(arrays, like=None)``; ``proc.reset()`` for a
  new clip;
- optional ``proc.replaces_foreground``: true when the numpy call writes all of ``fgr``
  before reading any (the fused CPU path then does not make the network's foreground);
- optional ``proc.foreground_on_demand``: true when the numpy call also takes
  ``network_foreground=f`` and then reads no value of ``fgr`` before writing it, asking
  ``f(t, band, values)`` for the network's foreground of frame ``t`` at the pixels ``band``
  (int64 ``(y << 32) | x``) into ``values`` (N,3) instead (the fused CPU path then makes it
  only there).

Processors: :class:`~rvmatte.post.stabilize.Stabilizer` (temporal stabilisation of alpha
and foreground), :class:`ForegroundEstimator` (foreground colours from frame and alpha,
:mod:`rvmatte.post.foreground`), :mod:`rvmatte.post.people` (person selection).
:class:`PostOptions` names the quality options of a conversion and :func:`quality_processors`
builds them in their order (foreground first, from the network's alpha; then the
stabiliser, which holds alpha and foreground with the same weights).

Live mode and other callers of :class:`~rvmatte.inference.session.Matter`::

    post = PostChain(quality_processors(PostOptions(stabilize=True, refine_foreground=True)))
    out = matter.process(frame)            # fgr (T,H,W,3), pha (T,H,W) float32
    post(frames_uint8, out.pha, out.fgr)   # in place
    post.reset()                           # on a new source / size
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .foreground import Buffers, ForegroundParams, estimate_foregrounds
from .stabilize import StabilizeParams, Stabilizer

__all__ = ["PostOptions", "PostChain", "ForegroundEstimator", "Stabilizer",
           "quality_processors"]


@dataclass(frozen=True)
class PostOptions:
    """The post stage's quality options: ``stabilize`` (temporal stabilisation of alpha and
    foreground), ``refine_foreground`` (the foreground estimated from frame and alpha instead
    of the network's). Both off by default (docs/BENCHMARKS.md has the measurements)."""

    stabilize: bool = False
    refine_foreground: bool = False

    @property
    def enabled(self) -> bool:
        return self.stabilize or self.refine_foreground

    def identity(self) -> dict:
        """For a checkpoint fingerprint (empty when off, so other jobs' stay unchanged)."""
        if not self.enabled:
            return {}
        return {"post": {"stabilize": self.stabilize and StabilizeParams().__dict__,
                         "refine_foreground": self.refine_foreground
                         and ForegroundParams().__dict__}}


class ForegroundEstimator:
    """The processor of :mod:`rvmatte.post.foreground` (stateless: per frame; it keeps its
    working arrays from frame to frame, so one stream, one thread at a time).

    ``impl``: how :meth:`tensors` solves: ``"auto"`` (PyTorch on the tensors' device when
    that is not the CPU, so a GPU conversion copies nothing to the host; the numba kernel on
    the CPU, where it is much faster), ``"torch"`` or ``"numba"``."""

    def __init__(self, params: ForegroundParams = ForegroundParams(), *,
                 impl: str = "auto") -> None:
        if impl not in ("auto", "torch", "numba"):
            raise ValueError(f"impl must be auto, torch or numba, not {impl!r}")
        self.p, self.impl = params, impl
        self._buffers = Buffers()

    @property
    def replaces_foreground(self) -> bool:
        """Whether the numpy call overwrites every foreground value without reading one (no
        share of the network's foreground kept: then the fused path skips making it)."""
        return self.p.network_share == 0

    @property
    def foreground_on_demand(self) -> bool:
        """Whether the numpy call can take the network's foreground at the soft band's pixels
        from a ``network_foreground`` callable (it mixes it in there only)."""
        return self.p.network_share > 0

    def uses_torch(self, device_type: str) -> bool:
        """Whether :meth:`tensors` solves in PyTorch for tensors on ``device_type``."""
        return self.impl == "torch" or (self.impl == "auto" and device_type != "cpu")

    def __call__(self, frames: np.ndarray, pha: np.ndarray,
                 fgr: Optional[np.ndarray] = None, *,
                 network_foreground: Optional[Callable] = None) -> None:
        if fgr is not None:
            estimate_foregrounds(frames, pha, fgr, self.p, self._buffers, network_foreground)

    def tensors(self, src: Any, fgr: Any, pha: Any) -> tuple:
        """In PyTorch on the tensors' device, or through the numba kernel on the CPU (a
        copy to and from the device), as :meth:`uses_torch` says."""
        import torch

        if self.uses_torch(src.device.type):
            from .foreground import estimate_foreground_torch

            return estimate_foreground_torch(src, pha, self.p, fgr).to(fgr.dtype), pha
        img = (src.detach().float().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8)
               .permute(0, 2, 3, 1).contiguous().cpu().numpy())
        a = pha[:, 0].detach().float().cpu().numpy()
        f = np.ascontiguousarray(fgr.detach().float().permute(0, 2, 3, 1).cpu().numpy())
        estimate_foregrounds(img, np.ascontiguousarray(a), f, self.p, self._buffers)
        return torch.from_numpy(f).permute(0, 3, 1, 2).to(fgr.device, fgr.dtype), pha

    def state_arrays(self) -> list:
        return []

    def load_state(self, arrays: list, like: Any = None) -> None:
        pass

    def reset(self) -> None:
        pass


def quality_processors(options: PostOptions, *, threads: int = 1) -> dict:
    """``{name: processor}`` for ``options``, in the order they run."""
    procs: dict = {}
    if options.refine_foreground:
        procs["foreground"] = ForegroundEstimator()
    if options.stabilize:
        procs["stabilize"] = Stabilizer(threads=threads)
    return procs


class PostChain:
    """Processors run in order, as one processor (the numpy call is what the fused CPU path
    takes as its ``post`` callable)."""

    def __init__(self, processors: dict) -> None:
        self.processors = dict(processors)

    @property
    def replaces_foreground(self) -> bool:
        """The first processor replaces the foreground (so the chain never reads the one it
        is given)."""
        return bool(getattr(self._first, "replaces_foreground", False))

    @property
    def foreground_on_demand(self) -> bool:
        """The first processor takes the network's foreground on demand (the protocol's
        ``foreground_on_demand``); the call hands ``network_foreground`` to it alone."""
        return bool(getattr(self._first, "foreground_on_demand", False))

    @property
    def _first(self) -> Any:
        return next(iter(self.processors.values()), None)

    def __call__(self, frames: np.ndarray, pha: np.ndarray,
                 fgr: Optional[np.ndarray] = None, *,
                 network_foreground: Optional[Callable] = None) -> None:
        for i, p in enumerate(self.processors.values()):
            if i == 0 and network_foreground is not None:
                p(frames, pha, fgr, network_foreground=network_foreground)
            else:
                p(frames, pha, fgr)

    def tensors(self, src: Any, fgr: Any, pha: Any) -> tuple:
        for p in self.processors.values():
            fgr, pha = p.tensors(src, fgr, pha)
        return fgr, pha

    def reset(self) -> None:
        for p in self.processors.values():
            p.reset()
