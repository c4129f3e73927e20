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

``auto`` is decided in one place, :func:`auto_backend`, and built by :func:`make_auto_runner`
(which falls back from ``int8`` to ``fused`` where the int8 network cannot be made).
:class:`rvmatte.inference.session.Matter` is the only caller of runners. This package imports
torch only in the modules that need it (``torch_runners``, ``choose``): the CPU's ``fused``,
``int8`` and ``onnxruntime`` runners of the bundled weights run without it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any, Collection, Optional, Protocol

from ..errors import RvmatteError, one_line
from ..spec import BACKENDS, ModelSpec

if TYPE_CHECKING:
    from ..models import MattingNetwork, MattingOutput

__all__ = ["BACKENDS", "ONNX_BACKENDS", "UINT8_BACKENDS", "Runner", "auto_backend",
           "cpu_flags", "int8_wins", "make_auto_runner", "make_runner", "needs_torch"]

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


# The x86-64 instructions that make 8-bit dot products fast (ONNX Runtime's u8s8 kernels):
# where /proc/cpuinfo names one, the int8 network beats the float one (docs/SPEED.md, "INT8").
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
# Why ``int8`` could not be made for ``auto`` in this process (then ``auto`` picks ``fused``).
_int8_failed: list[str] = []


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags from ``cpuinfo`` (Linux; read once); empty where there is no
    such file."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_wins(flags: Optional[Collection[str]] = None) -> bool:
    """Whether ``auto`` runs the bundled weights in int8 here: a CPU with VNNI (``flags``, by
    default :func:`cpu_flags`; on others int8 may be slower than float, not measured) and
    ``onnx`` installed for the quantiser, and no failure to make it earlier in this process."""
    flags = cpu_flags() if flags is None else flags
    return (any(f in flags for f in VNNI_FLAGS) and _installed("onnx")
            and not _int8_failed)


def auto_backend(device_type: str, dtype: str, ratio: float, *, bundled: bool = False,
                 flags: Optional[Collection[str]] = None) -> str:
    """The backend ``backend="auto"`` picks, by a rule measured on CPUs (docs/SPEED.md).

    ``device_type`` ``"cpu"``/``"cuda"``/``"mps"``, ``dtype`` a dtype name. On the CPU in
    float32 below ratio 1 (needs onnxruntime and numba): ``int8`` for the ``bundled`` weights
    where :func:`int8_wins` (``flags``: the CPU's, for tests; 1.3-1.5x ``fused`` on the 2-core
    EPYC, quality within 1.2 % of float on the benchmark), else ``fused``. At ratio 1, or
    without numba: ONNX Runtime (quiet 2-core x86_64: 2.1x plain eager at 512x288 / 1, 2.3x
    at 1080p / 0.25); without onnxruntime, ``torch-fast`` (1.85x at 512x288). On CUDA GPUs:
    ``cudagraph``. Elsewhere and for other dtypes: eager ``torch``.
    """
    if device_type == "cuda":
        return "cudagraph"
    if device_type != "cpu" or dtype != "float32":
        return "torch"
    if _installed("onnxruntime"):
        from . import kernels

        if ratio < 1 and kernels.available():
            return "int8" if bundled and int8_wins(flags) else "fused"
        return "onnxruntime"
    return "torch-fast"


def make_auto_runner(backend: str, model: Optional["MattingNetwork"] = None, *,
                     spec: Optional[ModelSpec] = None) -> Runner:
    """:func:`make_runner` for the ``backend`` :func:`auto_backend` picked. ``int8`` is made
    only in the user cache (not again in every process where it cannot be written); where it
    cannot be made (no ``onnx``, a read-only cache, the quantiser failing), ``fused`` with one
    warning line on stderr, and ``auto`` picks ``fused`` for the rest of the process."""
    if backend != "int8":
        return make_runner(backend, model, spec=spec)
    try:
        return make_runner("int8", model, spec=spec, cache_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of the optional path: the float one
        _int8_failed.append(one_line(e))
        print(f"rvmatte: warning: the int8 network cannot be prepared here ({one_line(e)}); "
              "using backend fused", file=sys.stderr, flush=True)
    return make_runner("fused", model, spec=spec)


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
                threads: Optional[int] = None, cache_only: bool = False) -> Runner:
    """Build the runner called ``backend`` (a concrete name, not ``auto``).

    ``model``: the loaded PyTorch network (needed by the torch backends); without it the ONNX
    Runtime backends open ``spec``'s export. ``dtype`` defaults to the model's (or ``spec``'s);
    ``threads`` to ``spec.threads``, else :func:`rvmatte.hardware.default_threads`.
    ``cache_only``: ``int8`` only, see :class:`rvmatte.runtime.int8.Int8Quantiser`.
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
        return _make_onnx_runner(backend, model, spec, dtype, threads, cache_only)
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


def _make_onnx_runner(backend: str, model, spec: ModelSpec, dtype: Any, threads,
                      cache_only: bool = False) -> Runner:
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

        return Int8Runner(device=device, dtype=dtype, threads=threads, cache_only=cache_only,
                          **source)
    try:
        from .ort import OnnxRuntimeRunner
    except ImportError as e:  # numpy-only installs: say what to install
        raise RvmatteError(f"backend {backend!r} is not available in this installation ({e}); "
                           "install it with: pip install 'rvmatte[onnx]', or use --backend "
                           "torch") from None
    return OnnxRuntimeRunner(device=device, dtype=dtype, threads=threads,
                             pipeline=backend == "onnxruntime-pipe", **source)
