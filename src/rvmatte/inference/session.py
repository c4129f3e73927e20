"""``Matter``: a streaming matting session, the only caller of the runners in rvmatte.

Everything that mattes frames (file conversion, evaluation, the web server, live sources)
goes through a ``Matter``: :meth:`Matter.step` (device tensors), :meth:`Matter.process`
(numpy frames, state kept inside) or, on the CPU's ``fused`` and ``int8`` backends,
:meth:`Matter.matte_uint8` (uint8 frames in, uint8 outputs out). It is built from a
:class:`~rvmatte.spec.ModelSpec`; the runner for each downsample ratio comes from
:func:`rvmatte.runtime.make_runner` (``auto`` resolved by :func:`rvmatte.runtime.auto_backend`,
built by :func:`rvmatte.runtime.make_auto_runner`).

This module imports PyTorch only when something needs it: a session of the bundled weights on
the CPU (``auto``/``fused``/``int8``/``onnxruntime``) runs without it
(:func:`rvmatte.runtime.needs_torch`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ..downsample import resolve_downsample_ratio
from ..hardware import apply_threads, dtype_name, set_threads
from ..models.outputs import MattingOutput
from ..runtime import (ONNX_BACKENDS, UINT8_BACKENDS, auto_backend, make_auto_runner, make_runner,
                       needs_torch)
from ..spec import ModelSpec, torch_device

if TYPE_CHECKING:
    import torch

_ONNX_FAMILY = ONNX_BACKENDS


def _onnx_file(spec: ModelSpec) -> bool:
    w = spec.weights
    return isinstance(w, (str, os.PathLike)) and str(w).lower().endswith(".onnx")


class Matter:
    """A stateful matting session over a stream of frames.

    ``Matter(spec=None, *, model=None, **fields)``: ``spec`` a :class:`~rvmatte.spec.ModelSpec`
    (default: the bundled MobileNetV3, ``backend="auto"``), ``fields`` replace some of its
    fields (``Matter(device="cpu", downsample=0.25)``; ``downsample_ratio`` is the older name);
    ``model`` an already loaded network to run instead of the spec's weights (the legacy form
    ``Matter(model)`` is accepted).

    - ``step(src, state, ratio)``: ``src`` (T,3,H,W) float in [0, 1]; returns
      ``MattingOutput(fgr (T,3,H,W), pha (T,1,H,W), state)`` on :attr:`device`. The caller
      carries ``state`` (``None`` for the first frames of a clip).
    - ``process(frames)``: ``frames`` uint8 RGB (H,W,3) or (T,H,W,3); returns
      ``MattingOutput(fgr (T,H,W,3), pha (T,H,W), state)`` as float32 numpy arrays, keeping the
      state inside. ``reset()`` forgets it (a new clip; a change of frame size resets it too).
    - ``matte_uint8(frames, state, ratio, outputs=...)``: where :meth:`uint8_path` is true.

    ``dtype=None`` means float16 on CUDA devices (the refiner's statistics stay in float32;
    max |Δalpha| vs float32 about 0.015) and float32 elsewhere.
    """

    #: The post stage's state (``{processor name: arrays}``, as checkpoints keep it) that a
    #: conversion through this session starts from when it resumes no checkpoint; None: each
    #: processor starts fresh. Set by sessions that chain conversions (a split part after its
    #: warm-up, :class:`rvmatte.cluster.work.WarmSession`).
    post_seed: Optional[dict] = None

    def __init__(self, spec: Optional[ModelSpec] = None, *, model: Any = None,
                 **fields: Any) -> None:
        if spec is not None and not isinstance(spec, ModelSpec):
            model, spec = spec, None  # the legacy positional model
        self.spec = ModelSpec.of(spec, **fields)
        if self.spec.threads is not None:
            set_threads(self.spec.threads)
        self.ratio = self.spec.downsample  # None: auto per frame size
        self.backend = self.spec.backend
        self._bundled = model is None and self.spec.bundled()  # auto's int8 rule
        if model is not None:
            p = next(model.parameters())
            self.device_type, self._dtype_name = p.device.type, dtype_name(p.dtype)
            self._model = model.eval()
        else:
            self.device_type, self._dtype_name = self.spec.device_type(), self.spec.dtype_name()
            self._model = None
            if self._torch_model_needed():
                self._model = self.spec.replace(dtype=self._dtype_name).load_model()
        self._runners: dict[str, Any] = {}
        self.state = None
        self._size: Optional[tuple[int, int]] = None
        if self.backend in ("onnxruntime", "onnxruntime-pipe"):
            self._runner_for(1.0)  # errors (no onnxruntime, a bad file) at construction

    def _torch_model_needed(self) -> bool:
        """Whether the PyTorch network must be built now (not for the ONNX Runtime paths of
        the bundled weights on the CPU, nor for a user's ``.onnx`` file)."""
        if self.backend in ("onnxruntime", "onnxruntime-pipe") and _onnx_file(self.spec):
            return False
        return needs_torch(self.spec)

    def __repr__(self) -> str:
        return f"Matter({self.spec!r})"

    @property
    def model(self) -> "torch.nn.Module":
        """The PyTorch network (built on first access when the session started without it)."""
        if self._model is None:
            self._model = self.spec.replace(dtype=self._dtype_name).load_model()
        return self._model

    @property
    def device(self) -> "torch.device":
        if self._model is not None:
            return next(self._model.parameters()).device
        return torch_device(self.spec.device)

    @property
    def dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self._dtype_name)

    # -- runners ------------------------------------------------------------------------
    def ratio_for(self, h: int, w: int) -> float:
        """The downsample ratio used for an ``h`` x ``w`` frame."""
        return resolve_downsample_ratio(self.ratio, h, w)

    def backend_for(self, ratio: float) -> str:
        """The concrete backend used at ``ratio`` (resolves ``"auto"``)."""
        if self.backend == "auto":
            return auto_backend(self.device_type, self._dtype_name, ratio, bundled=self._bundled)
        return self.backend

    #: CPU threads of the runners built from now on, where not None, instead of the spec's
    #: (without setting them process-wide): a file conversion's own session on a 2-core CPU
    #: gives the network one (``convert_video``).
    runner_threads: Optional[int] = None

    def _runner_for(self, ratio: float):
        name = self.backend_for(ratio)
        if name == "fused" and ratio >= 1:
            name = "onnxruntime"  # nothing to fuse without the refiner: the same graph
        if name not in self._runners:
            if name == "torch":
                apply_threads()
                self._runners[name] = self.model
            else:
                torchless = name in _ONNX_FAMILY and not self._torch_model_needed()
                model = None if torchless and self._model is None else self.model
                if model is not None:
                    apply_threads()
                make = make_auto_runner if self.backend == "auto" else make_runner
                spec = self.spec if self.runner_threads is None \
                    else self.spec.replace(threads=self.runner_threads)
                runner = make(name, model, spec=spec)
                if self.backend == "auto":
                    name = self.backend_for(ratio)  # "fused" where auto's int8 fell back
                self._runners[name] = runner
        return self._runners[name]

    def uint8_path(self, ratio: float) -> bool:
        """Whether :meth:`matte_uint8` serves ``ratio``: the ``fused`` and ``int8`` backends
        below ratio 1 (uint8 frames in, uint8 outputs out; no torch)."""
        return ratio < 1 and self.backend_for(ratio) in UINT8_BACKENDS

    def matte_uint8(self, frames: np.ndarray, state, ratio: float, *, outputs: Sequence[str],
                    background: Sequence[float] = (0.0, 0.0, 0.0), post=None):
        """uint8 (T,H,W,3) RGB -> ``({name: uint8 array}, state)`` for each name in
        ``outputs`` (see :meth:`rvmatte.runtime.fused.FusedRunner.finish`); where
        :meth:`uint8_path` is true. ``post``: a callable run on each frame's float outputs
        before the uint8 ones are made (the post stage, :mod:`rvmatte.post`)."""
        coefs, state = self.network_uint8(frames, state, ratio)
        return self.finish_uint8(frames, coefs, ratio, outputs=outputs, background=background,
                                 post=post), state

    def network_uint8(self, frames: np.ndarray, state, ratio: float):
        """The recurrent half of :meth:`matte_uint8`: ``(coefficients per frame, state)``
        (:meth:`rvmatte.runtime.fused.FusedRunner.network`); :meth:`finish_uint8` makes the
        outputs from them, and may run in another thread."""
        if not self.uint8_path(ratio):
            raise ValueError(f"no uint8 path for backend {self.backend_for(ratio)!r} at "
                             f"ratio {ratio}")
        return self._runner_for(ratio).network(frames, state, ratio)

    def finish_uint8(self, frames: np.ndarray, coefs, ratio: float, *, outputs: Sequence[str],
                     background: Sequence[float] = (0.0, 0.0, 0.0), post=None) -> dict:
        """The full-resolution half of :meth:`matte_uint8` (refine, ``post``, the outputs)
        from :meth:`network_uint8`'s coefficients: ``{name: uint8 array}``."""
        return self._runner_for(ratio).finish(frames, coefs, outputs=outputs,
                                              background=background, post=post)

    def keep_post(self, states: dict) -> None:
        """Called when a conversion through this session ends with its post stage's last
        state (``{processor name: arrays}``); kept by sessions that chain conversions."""

    def close(self) -> None:
        """Stop the runners' worker threads (the session can still be used; they restart)."""
        for name, runner in list(self._runners.items()):
            if hasattr(runner, "close"):
                runner.close()
                self._runners.pop(name)

    # -- device tensors ---------------------------------------------------------------
    def step(self, src: "torch.Tensor", state=None,
             downsample_ratio: Optional[float] = None) -> MattingOutput:
        """Matte ``src``: (T,3,H,W) float in [0, 1] (any float dtype, any device).

        Returns ``MattingOutput(fgr (T,3,H,W), pha (T,1,H,W), state)`` on :attr:`device`, in
        the model's dtype. ``downsample_ratio`` overrides the session's ratio for this call
        (the session itself is not changed, so one session can serve several conversions).
        """
        import torch

        if src.ndim == 3:
            src = src.unsqueeze(0)
        if src.ndim != 4 or src.shape[1] != 3:
            raise ValueError(f"src must be (T,3,H,W), got {tuple(src.shape)}")
        h, w = src.shape[-2:]
        ratio = self.ratio_for(h, w) if downsample_ratio is None else float(downsample_ratio)
        with torch.inference_mode():
            x = src.to(self.device, self.dtype, non_blocking=True).unsqueeze(0)
            fgr, pha, state = self._runner_for(ratio)(x, state, ratio)
        return MattingOutput(fgr[0], pha[0], tuple(state))

    @staticmethod
    def state_arrays(state) -> list:
        """The recurrent state (tensors on any device and dtype, or arrays; ``None``: none)
        as float32 numpy copies, for a checkpoint (float32 holds float16 and bfloat16 values
        exactly)."""
        out = []
        for s in state or ():
            if hasattr(s, "detach"):
                import torch

                s = s.detach().to("cpu", torch.float32).numpy()
            out.append(np.array(s, dtype=np.float32, copy=True))
        return out

    # -- numpy frames -----------------------------------------------------------------
    def reset(self) -> None:
        """Forget the recurrent state (start of a new clip)."""
        self.state = None
        self._size = None

    def set_downsample_ratio(self, downsample_ratio: Any) -> None:
        """Change the session's ratio (``"auto"`` or a float in (0, 1]). The state's size
        follows the working resolution, so it starts afresh; the runners built so far are
        kept (a CUDA-graph or ONNX Runtime session serves every ratio)."""
        self.spec = self.spec.replace(downsample=downsample_ratio)
        self.ratio = self.spec.downsample
        self.reset()

    def upload(self, arr: np.ndarray) -> "torch.Tensor":
        """A numpy array -> the same tensor on :attr:`device` (dtype kept). On CUDA through
        page-locked staging, so the copy runs asynchronously."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device_type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def yuv_to_tensor(self, planes: np.ndarray, height: int, width: int, *,
                      matrix: str = "bt601", full_range: bool = False) -> "torch.Tensor":
        """uint8 YUV 4:2:0 planes (T, H*3/2, W) -> (T,3,H,W) RGB in [0, 1] on the device,
        converted there (:mod:`rvmatte.io.yuv`)."""
        from ..io.yuv import yuv420_to_rgb

        return yuv420_to_rgb(self.upload(planes), height, width, matrix=matrix,
                             full_range=full_range, dtype=self.dtype)

    def to_tensor(self, frames: np.ndarray) -> "torch.Tensor":
        """uint8 (T,H,W,3) or (H,W,3) -> (T,3,H,W) float in [0, 1] on the device."""
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"frames must be (H,W,3) or (T,H,W,3) RGB, got {arr.shape}")
        t = self.upload(arr)
        scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
        return t.permute(0, 3, 1, 2).to(self.dtype).div_(scale)

    def process(self, frames: np.ndarray) -> MattingOutput:
        """Matte the next frame(s) of the stream, keeping the state.

        ``frames``: RGB uint8 (H,W,3) or (T,H,W,3) (float arrays in [0, 1] also accepted).
        Returns ``MattingOutput(fgr (T,H,W,3), pha (T,H,W), state)``: float32 numpy arrays in
        [0, 1] and the state carried to the next call.
        """
        src = self.to_tensor(frames)
        size = tuple(src.shape[-2:])
        if size != self._size:
            self.state = None
            self._size = size
        fgr, pha, self.state = self.step(src, self.state)
        return MattingOutput(fgr.permute(0, 2, 3, 1).float().cpu().numpy(),
                             pha[:, 0].float().cpu().numpy(), self.state)
