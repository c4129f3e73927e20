"""Everything that executes the network, behind one protocol.

A runner is called like the model and returns what it returns::

    runner(src, state, downsample_ratio) -> MattingOutput(fgr, pha, state)

``src`` (B,3,H,W) or (B,T,3,H,W) float in [0, 1]; ``state`` ``None`` on a clip's first frames,
else the previous call's (four arrays or tensors: each runner takes either). The backends
(:data:`rvmatte.spec.BACKENDS`), each built by :func:`make_runner`, the one factory:

``torch``             the model as is (eager) under ``inference_mode``
``torch-fast``        BatchNorm folded into the convolutions, channels-last weights
``compile``           ``torch-fast`` under ``torch.compile``
``cudagraph``         ``torch-fast`` captured once per shape as a CUDA graph and replayed
                      (``torch-fast`` off CUDA)
``onnxruntime[:N]``   the exported graph in ONNX Runtime (CPU or CUDA provider; N threads)
``onnxruntime-pipe``  ONNX Runtime split at the refiner, the two halves overlapped for clips
``fused``             the network in ONNX Runtime and the full-resolution step in rvmatte's
                      compiled kernel; also takes uint8 frames and returns uint8 outputs
                      (:meth:`~rvmatte.runtime.fused.FusedRunner.matte_uint8`)
``int8``              ``fused`` over the network statically quantised to 8 bits
                      (:mod:`rvmatte.runtime.int8`; made once per model and cached)

``auto`` is decided in one place, :func:`auto_backend`. :class:`rvmatte.inference.session.Matter`
is the only caller of runners. This package imports torch only in the modules that need it
(``torch_runners``, ``choose``): the CPU's ``fused`` and ``onnxruntime`` runners of the bundled
weights run without it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ..errors import RvmatteError
from ..spec import BACKENDS, ModelSpec

if TYPE_CHECKING:
    from ..models import MattingNetwork, MattingOutput

__all__ = ["BACKENDS", "ONNX_BACKENDS", "UINT8_BACKENDS", "Runner", "auto_backend",
           "make_runner", "needs_torch"]

# The backends that run an ONNX export (no PyTorch model needed for the bundled weights once
# it is cached), and those of them that also take uint8 frames to uint8 outputs (matte_uint8).
ONNX_BACKENDS = ("onnxruntime", "onnxruntime-pipe", "fused", "int8")
UINT8_BACKENDS = ("fused", "int8")


class Runner(Protocol):
    """What every backend is: called like :class:`~rvmatte.models.MattingNetwork`."""

    def __call__(self, src: Any, state: Any = None,
                 downsample_ratio: float = 1.0) -> "MattingOutput": ...


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def auto_backend(device_type: str, dtype: str, ratio: float) -> str:
    """The backend ``backend="auto"`` picks, by a rule measured on CPUs (docs/SPEED.md).

    ``device_type`` ``"cpu"``/``"cuda"``/``"mps"``, ``dtype`` a dtype name. On the CPU in
    float32 below ratio 1: ``fused`` (needs onnxruntime and numba). At ratio 1, or without
    numba: ONNX Runtime (quiet 2-core x86_64: 2.1x plain eager at 512x288 / 1, 2.3x at
    1080p / 0.25); without onnxruntime, ``torch-fast`` (1.85x at 512x288). On CUDA GPUs:
    ``cudagraph``. Elsewhere and for other dtypes: eager ``torch``.
    """
    if device_type == "cuda":
        return "cudagraph"
    if device_type != "cpu" or dtype != "float32":
        return "torch"
    if _installed("onnxruntime"):
        from . import kernels

        return "fused" if ratio < 1 and kernels.available() else "onnxruntime"
    return "torch-fast"


def needs_torch(spec: ModelSpec) -> bool:
    """Whether running ``spec`` needs PyTorch: not for the bundled weights on the CPU in
    float32 with the ``auto``, ``fused``, ``int8`` or ``onnxruntime`` backends and onnxruntime
    installed (their cached ONNX export runs as is -- the first export needs torch; the kernel
    needs numba, checked when ``fused`` is built)."""
    return not (_installed("onnxruntime") and spec.bundled() and spec.on_cpu()
                and spec.dtype_name() == "float32"
                and spec.backend in ("auto", "fused", "int8", "onnxruntime"))


def _onnx_source(spec: ModelSpec, model: Optional["MattingNetwork"]) -> dict:
    """What an ONNX Runtime runner exports (or opens): a built model, a user's ``.onnx``
    file, or the bundled weights' cached export (no torch)."""
    if model is not None:
        return {"model": model}
    w = spec.weights
    if isinstance(w, (str, os.PathLike)) and str(w).lower().endswith(".onnx"):
        return {"onnx_path": w}
    return {"variant": spec.variant, "weights": w, "refiner": spec.refiner}


def make_runner(backend: str, model: Optional["MattingNetwork"] = None, *,
                spec: Optional[ModelSpec] = None, dtype: Any = None,
                threads: Optional[int] = None) -> Runner:
    """Build the runner called ``backend`` (a concrete name, not ``auto``).

    ``model``: the loaded PyTorch network (needed by the torch backends); without it the ONNX
    Runtime backends open ``spec``'s export. ``dtype`` defaults to the model's (or ``spec``'s);
    ``threads`` to ``spec.threads``, else :func:`rvmatte.hardware.default_threads`.
    """
    spec = spec if spec is not None else ModelSpec()
    threads = threads if threads is not None else spec.threads
    if backend.startswith("onnxruntime:"):
        try:
            threads = int(backend.split(":", 1)[1])
        except ValueError:
            raise RvmatteError(f"bad backend {backend!r}: use onnxruntime:THREADS") from None
        backend = "onnxruntime"
    if backend not in BACKENDS or backend == "auto":
        raise RvmatteError(f"unknown backend {backend!r}; choose from "
                           f"{', '.join(b for b in BACKENDS if b != 'auto')}")
    if backend in ONNX_BACKENDS:
        return _make_onnx_runner(backend, model, spec, dtype, threads)
    if model is None:
        raise RvmatteError(f"backend {backend!r} needs the PyTorch model")
    from . import torch_runners as tr
    from ..weights import resolve_dtype

    dt = resolve_dtype(dtype) if dtype is not None else None
    if backend == "torch":
        return tr.TorchRunner(model, fuse_bn=False, channels_last=False, dtype=dt)
    if backend == "torch-fast":
        return tr.TorchRunner(model, dtype=dt)
    if backend == "compile":
        return tr.TorchRunner(model, compile=True, dtype=dt)
    return tr.CudaGraphRunner(model, dtype=dt)


def _make_onnx_runner(backend: str, model, spec: ModelSpec, dtype: Any, threads) -> Runner:
    source = _onnx_source(spec, model)
    if model is not None:
        device = str(next(model.parameters()).device)
        dtype = dtype if dtype is not None else next(model.parameters()).dtype
    else:
        device = spec.device or "cpu" if spec.on_cpu() else spec.device
        dtype = dtype if dtype is not None else spec.dtype_name()
    if backend == "fused":
        from .fused import FusedRunner

        return FusedRunner(device=device, dtype=dtype, threads=threads, **source)
    if backend == "int8":
        from .int8 import Int8Runner

        return Int8Runner(device=device, dtype=dtype, threads=threads, **source)
    try:
        from .ort import OnnxRuntimeRunner
    except ImportError as e:  # numpy-only installs: say what to install
        raise RvmatteError(f"backend {backend!r} is not available in this installation ({e}); "
                           "install it with: pip install 'rvmatte[onnx]', or use --backend "
                           "torch") from None
    return OnnxRuntimeRunner(device=device, dtype=dtype, threads=threads,
                             pipeline=backend == "onnxruntime-pipe", **source)
