"""``Matter``: a streaming matting session, the only place in rvmatte where the model runs.

Everything that mattes frames (file conversion, evaluation, the web server, live sources)
goes through :meth:`Matter.step` (device tensors) or :meth:`Matter.process` (numpy frames).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Optional

import numpy as np
import torch

from ..errors import RvmatteError
from ..models.matting import MattingOutput, State
from ..downsample import parse_downsample_ratio, resolve_downsample_ratio

BACKENDS = ("auto", "torch", "torch-fast", "compile", "cudagraph", "onnxruntime",
            "onnxruntime-pipe", "fused")
# Backends built around a loaded torch model by rvmatte.export.optimize.make_runner.
_WRAPPED = ("torch-fast", "compile", "cudagraph", "onnxruntime-pipe")


def auto_backend(device: torch.device, dtype: torch.dtype, ratio: float) -> str:
    """The backend ``backend="auto"`` picks, by a rule measured on CPUs (docs/SPEED.md).

    On the CPU in float32 below ratio 1: ``fused`` (the network in ONNX Runtime, the
    full-resolution step in rvmatte's compiled kernel; needs onnxruntime and numba). At ratio 1,
    or without numba: ONNX Runtime (quiet 2-core x86_64: 2.1x plain eager at 512x288 / 1, 2.3x
    at 1080p / 0.25, 2.8x at 4K / 0.125); without onnxruntime installed, the BatchNorm-folded
    channels-last torch path (1.85x at 512x288, about 1x when downsampled). On CUDA GPUs: that
    path replayed from CUDA graphs. Elsewhere and for other dtypes: eager torch.
    """
    if device.type == "cuda" and torch.cuda.is_available():
        return "cudagraph"
    if device.type != "cpu" or dtype != torch.float32:
        return "torch"
    if importlib.util.find_spec("onnxruntime") is not None:
        from .. import kernels

        return "fused" if ratio < 1 and kernels.available() else "onnxruntime"
    return "torch-fast"


def _lazy_model_ok(variant, weights, refiner, device, dtype) -> bool:
    """A session can start without its PyTorch model: bundled weights, CPU, float32, and
    ONNX Runtime installed (so ``auto`` will run the exported graph)."""
    from ..weights import _resolve_device, resolve_dtype

    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        from ..export.runtime import uses_bundled

        return (uses_bundled(variant, weights, refiner) and _resolve_device(device).type == "cpu"
                and resolve_dtype(dtype) == torch.float32)
    except Exception:  # noqa: BLE001 - any doubt: build the model as usual
        return False


def _load_onnx_runner(**kwargs: Any):
    try:
        mod = importlib.import_module("rvmatte.export.runtime")
        runner_cls = getattr(mod, "OnnxRuntimeRunner")
    except (ImportError, AttributeError) as e:
        raise RvmatteError(
            "backend 'onnxruntime' is not available in this installation "
            f"({e}); install it with: pip install 'rvmatte[onnx]', or use --backend torch"
        ) from None
    return runner_cls(**kwargs)


class Matter:
    """A stateful matting session over a stream of frames.

    ``Matter(model=None, *, variant="mobilenetv3", weights="default", refiner=None,
    device=None, dtype=None, downsample_ratio="auto", backend="torch")``

    - ``step(src, state)``: ``src`` (T,3,H,W) float in [0, 1] on :attr:`device`; returns
      ``MattingOutput(fgr (T,3,H,W), pha (T,1,H,W), state)``. Stateless: the caller carries
      ``state`` (``None`` for the first frames of a clip).
    - ``process(frames)``: ``frames`` uint8 RGB, (H,W,3) or (T,H,W,3); returns
      ``(pha (T,H,W) float32, fgr (T,H,W,3) float32)`` as numpy, keeping the state inside.
    - ``reset()``: forget the kept state (new clip). A change of frame size resets it too.

    ``dtype=None`` means float16 on CUDA devices (the refiner's statistics stay in float32;
    max |Δalpha| vs float32 about 0.015) and float32 elsewhere.
    """

    def __init__(self, model: Optional[torch.nn.Module] = None, *, variant: str = "mobilenetv3",
                 weights: Any = "default", refiner: Optional[str] = None, device: Any = None,
                 dtype: Any = None, downsample_ratio: Any = "auto", backend: str = "torch") -> None:
        from ..weights import _resolve_device, resolve_dtype

        if dtype is None and model is None and _resolve_device(device).type == "cuda":
            dtype = torch.float16  # GPUs: half precision (the refiner's statistics stay fp32)
        if backend not in BACKENDS:
            raise RvmatteError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.backend = backend
        self.ratio = parse_downsample_ratio(downsample_ratio)  # None = auto per frame size
        self._runner = None
        self._load_args: Optional[dict] = None  # set while the PyTorch model is not built yet
        if backend == "onnxruntime":
            self.device = _resolve_device(device) if model is None else next(model.parameters()).device
            self.dtype = resolve_dtype(dtype)
            kwargs = dict(variant=variant, weights=weights, refiner=refiner,
                          device=str(self.device), dtype=dtype)
            if isinstance(weights, (str, os.PathLike)) and str(weights).lower().endswith(".onnx"):
                kwargs = dict(onnx_path=weights, device=str(self.device), dtype=dtype)
            if model is not None:
                kwargs = dict(model=model, device=str(self.device), dtype=dtype)
            self._runner = _load_onnx_runner(**kwargs)
            self._model = model
        elif model is None and backend in ("auto", "fused") and _lazy_model_ok(
                variant, weights, refiner, device, dtype):
            # ONNX Runtime on this CPU (``auto`` picks it), from the bundled weights' cached
            # export: the PyTorch model is built only if something asks for it.
            self._model = None
            self._load_args = dict(variant=variant, refiner=refiner, weights=weights,
                                   device=device, dtype=dtype)
            self.device, self.dtype = _resolve_device(device), resolve_dtype(dtype)
        else:
            if model is None:
                from ..weights import load_model

                model = load_model(variant, refiner=refiner, weights=weights, device=device,
                                   dtype=dtype)
            self._model = model.eval()
            p = next(model.parameters())
            self.device, self.dtype = p.device, p.dtype
        self._runners: dict[str, Any] = {}  # wrapped/auto backends, built on first use
        self.state: Optional[State] = None
        self._size: Optional[tuple[int, int]] = None

    @property
    def model(self) -> Optional[torch.nn.Module]:
        """The PyTorch network (built on first access when the session started without it)."""
        if self._load_args is not None:
            from ..weights import load_model

            self._model = load_model(**self._load_args).eval()
            self._load_args = None
        return self._model

    # -- device tensors ---------------------------------------------------------------
    def ratio_for(self, h: int, w: int) -> float:
        """The downsample ratio used for an ``h`` x ``w`` frame."""
        return resolve_downsample_ratio(self.ratio, h, w)

    def step(self, src: torch.Tensor, state: Optional[State] = None,
             downsample_ratio: Optional[float] = None) -> MattingOutput:
        """Matte ``src``: (T,3,H,W) float in [0, 1] on :attr:`device` (any float dtype).

        Returns ``MattingOutput(fgr (T,3,H,W), pha (T,1,H,W), state)`` on the same device,
        in the model's dtype. ``downsample_ratio`` overrides the session's ratio for this
        call (a float; the session itself is not changed, so one session can serve several
        conversions).
        """
        if src.ndim == 3:
            src = src.unsqueeze(0)
        if src.ndim != 4 or src.shape[1] != 3:
            raise ValueError(f"src must be (T,3,H,W), got {tuple(src.shape)}")
        h, w = src.shape[-2:]
        ratio = self.ratio_for(h, w) if downsample_ratio is None else float(downsample_ratio)
        with torch.inference_mode():
            x = src.to(self.device, self.dtype, non_blocking=True).unsqueeze(0)
            runner = self._runner if self._runner is not None else self._runner_for(ratio)
            fgr, pha, state = runner(x, state, ratio)
        return MattingOutput(fgr[0], pha[0], tuple(state))

    def backend_for(self, ratio: float) -> str:
        """The concrete backend used at ``ratio`` (resolves ``"auto"``)."""
        if self.backend == "auto":
            return auto_backend(self.device, self.dtype, ratio)
        return self.backend

    def _runner_for(self, ratio: float):
        name = self.backend_for(ratio)
        if name == "torch":
            return self.model
        if name not in self._runners:
            if name in ("onnxruntime", "fused"):
                # the bundled weights' cached export while the PyTorch model is not built
                source = (self._load_args if self._load_args is not None
                          else {"model": self.model, "dtype": self.dtype})
                source = {**source, "device": str(self.device)}
                if name == "fused":
                    from .fused import FusedRunner

                    self._runners[name] = FusedRunner(**source)
                else:
                    self._runners[name] = _load_onnx_runner(**source)
            else:
                from ..export.optimize import make_runner

                self._runners[name] = make_runner(name, self.model)
        return self._runners[name]

    def fused_runner(self, ratio: float):
        """The :class:`~rvmatte.inference.fused.FusedRunner` when this session runs the
        ``fused`` backend at ``ratio`` (below 1), else ``None``: file conversion then feeds it
        uint8 frames and takes uint8 outputs."""
        if ratio >= 1 or self.backend_for(ratio) != "fused":
            return None
        return self._runner_for(ratio)

    # -- numpy frames -----------------------------------------------------------------
    def reset(self) -> None:
        """Forget the recurrent state (start of a new clip)."""
        self.state = None
        self._size = None

    def set_downsample_ratio(self, downsample_ratio: Any) -> None:
        """Change the session's ratio (``"auto"`` or a float in (0, 1]). The state's size
        follows the working resolution, so it starts afresh; the backends built so far are
        kept (a CUDA-graph or ONNX Runtime session serves every ratio)."""
        self.ratio = parse_downsample_ratio(downsample_ratio)
        self.reset()

    def upload(self, arr: np.ndarray) -> torch.Tensor:
        """A numpy array -> the same tensor on :attr:`device` (dtype kept). On CUDA through
        page-locked staging, so the copy runs asynchronously."""
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def yuv_to_tensor(self, planes: np.ndarray, height: int, width: int, *,
                      matrix: str = "bt601", full_range: bool = False) -> torch.Tensor:
        """uint8 YUV 4:2:0 planes (T, H*3/2, W) -> (T,3,H,W) RGB in [0, 1] on the device,
        converted there (:mod:`rvmatte.io.yuv`)."""
        from ..io.yuv import yuv420_to_rgb

        return yuv420_to_rgb(self.upload(planes), height, width, matrix=matrix,
                             full_range=full_range, dtype=self.dtype)

    def to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T,H,W,3) or (H,W,3) -> (T,3,H,W) float in [0, 1] on the device."""
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"frames must be (H,W,3) or (T,H,W,3) RGB, got {arr.shape}")
        t = self.upload(arr)
        scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
        return t.permute(0, 3, 1, 2).to(self.dtype).div_(scale)

    def process(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matte the next frame(s) of the stream, keeping the state.

        ``frames``: RGB uint8 (H,W,3) or (T,H,W,3) (float arrays in [0, 1] also accepted).
        Returns ``(pha (T,H,W) float32, fgr (T,H,W,3) float32)`` in [0, 1].
        """
        src = self.to_tensor(frames)
        size = tuple(src.shape[-2:])
        if size != self._size:
            self.state = None
            self._size = size
        fgr, pha, self.state = self.step(src, self.state)
        return (pha[:, 0].float().cpu().numpy(),
                fgr.permute(0, 2, 3, 1).float().cpu().numpy())
