"""The fast inference paths and an automatic choice between them.

Runners all have the model's call signature ``runner(src, state, downsample_ratio) ->
MattingOutput`` (torch tensors in and out, ``state=None`` on a clip's first frames):

``torch``        the model as is (eager, fp32 unless told otherwise) under ``inference_mode``
``torch-fast``   a copy with BatchNorm folded into the convolutions (:func:`fuse_batchnorm`),
                 channels_last weights and inputs, ``inference_mode``
``compile``      ``torch-fast`` under ``torch.compile`` (inductor; on CUDA with CUDA graphs,
                 ``mode="reduce-overhead"``). Compiles on the first call of each frame size
``cudagraph``    ``torch-fast`` captured once per input shape and ratio as a CUDA graph and
                 replayed (no compiler; a capture takes well under a second). On a CPU it is
                 ``torch-fast``
``onnxruntime``  :class:`rvmatte.export.runtime.OnnxRuntimeRunner` (CPU / CUDA provider)
``onnxruntime:N``  the same with N intra-op threads (``onnxruntime:1`` wins on a busy machine)
``onnxruntime-pipe``  ORT split at the refiner: for clips at ratio < 1, frame t's full-size
                 refinement runs in a second thread while frame t+1's network runs

:func:`choose_backend` times the candidates briefly on the actual device, size and ratio and
remembers the winner in ``<cache>/speed_choice.json`` (see :func:`rvmatte.export.runtime.cache_dir`);
:func:`make_runner` builds one by name. Every CUDA-only path is guarded by
``torch.cuda.is_available()`` and falls back to the CPU path.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import RvmatteError, one_line
from ..models import MattingNetwork, MattingOutput

BACKENDS = ("torch", "torch-fast", "compile", "cudagraph", "onnxruntime", "onnxruntime-pipe",
            "fused")
# What choose_backend tries by default. torch.compile is left out on CPU: on the 2-core
# machine of docs/SPEED.md it compiles for minutes per frame size and did not beat ORT.
DEFAULT_CANDIDATES = {"cpu": ("torch", "torch-fast", "onnxruntime", "onnxruntime:1", "onnxruntime-pipe",
                             "fused"),
                      "cuda": ("torch", "torch-fast", "cudagraph")}
CHOICE_FILE = "speed_choice.json"


# --------------------------------------------------------------------------- BatchNorm folding
def _fuse_pairs(parent: nn.Module, pairs: Sequence[tuple[str, str]]) -> int:
    n = 0
    for conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
            n += 1
    return n


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with each BatchNorm2d folded into the Conv2d before it.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``:
    exact in real arithmetic, ~1e-6 in fp32. Inference only (the copy has no BatchNorm to
    train, and its state dict no longer has the official keys). Handles ``Conv, BN`` in any
    ``nn.Sequential`` (MobileNetV3, LR-ASPP, decoder, Deep Guided Filter) and ResNet's
    ``convK``/``bnK`` attribute pairs and ``downsample`` blocks.
    """
    m = copy.deepcopy(model).eval()
    for module in list(m.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                if isinstance(children[i], nn.Conv2d) and isinstance(children[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(children[i], children[i + 1])
                    module[i + 1] = nn.Identity()
        _fuse_pairs(module, [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
    return m


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in model.modules())


# --------------------------------------------------------------------------------- runners
class TorchRunner:
    """The PyTorch model under ``inference_mode``, optionally with the inference-only transforms.

    fuse_bn: run a BatchNorm-folded copy. channels_last: NHWC weights (faster convolutions
    with oneDNN / cuDNN), and NHWC inputs at ratio 1. compile: ``torch.compile`` the model (``"reduce-overhead"``
    = CUDA graphs on a GPU). dtype: cast the copy and the inputs (``bfloat16`` on CPUs with
    AVX-512 BF16/AMX, ``float16`` on GPUs); outputs come back in that dtype.
    """

    def __init__(self, model: MattingNetwork, *, fuse_bn: bool = True, channels_last: bool = True,
                 compile: bool = False, dtype: Optional[torch.dtype] = None) -> None:
        m = fuse_batchnorm(model) if fuse_bn else model.eval()
        if dtype is not None:
            m = (m if fuse_bn else copy.deepcopy(m)).to(dtype=dtype)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        p = next(m.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.channels_last = channels_last
        self.model = m
        self._call: Callable = m
        self._cudagraphs = compile and self.device.type == "cuda" and torch.cuda.is_available()
        if compile:
            mode = "reduce-overhead" if self._cudagraphs else None
            self._call = torch.compile(m, mode=mode, dynamic=False)

    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        with torch.inference_mode():
            x = src.to(self.device, self.dtype)
            if self.channels_last and x.ndim == 4 and downsample_ratio == 1:
                # NHWC input only when the network runs at full size: with r < 1 the full-size
                # part is the refiner's elementwise work, which was slower in NHWC (docs/SPEED.md).
                x = x.contiguous(memory_format=torch.channels_last)
            if state is not None:
                state = tuple(s.to(self.device, self.dtype) for s in state)
            if self._cudagraphs:
                # CUDA graphs reuse their output buffers on the next replay: copy them out.
                torch.compiler.cudagraph_mark_step_begin()
                out = self._call(x, state, downsample_ratio)
                return MattingOutput(out[0].clone(), out[1].clone(), tuple(s.clone() for s in out[2]))
            out = self._call(x, state, downsample_ratio)
            return MattingOutput(out[0], out[1], tuple(out[2]))


class _Graph:
    """One captured CUDA graph with its static input, state and output tensors."""

    def __init__(self, graph, src, state_in, out) -> None:
        self.graph = graph
        self.src, self.state_in = src, state_in
        self.fgr, self.pha, self.state_out = out[0], out[1], tuple(out[2])


class CudaGraphRunner:
    """``torch-fast`` replayed from CUDA graphs: the launch overhead of the ~300 small kernels
    per frame (MobileNetV3, four ConvGRUs stepping through time, the refiner) disappears, which
    is what limits a small network on a large GPU.

    One graph is captured per (input shape, ratio) on first use, after two warm-up calls (where
    cuDNN picks its algorithms, autotuned if ``autotune``); at most ``max_graphs`` are kept (least recently used dropped).
    The graph always takes a recurrent state: ``state=None`` is fed as zeros, which is exactly
    what the network does with ``None``. Outputs are copied out of the graph's buffers, so
    they stay valid after the next call. On a CPU, or if capturing fails, it runs
    ``torch-fast`` eagerly (``self.fallback_reason`` says why).
    """

    def __init__(self, model: MattingNetwork, *, dtype: Optional[torch.dtype] = None,
                 fuse_bn: bool = True, channels_last: bool = True, max_graphs: int = 4,
                 autotune: Optional[bool] = None) -> None:
        self.inner = TorchRunner(model, fuse_bn=fuse_bn, channels_last=channels_last, dtype=dtype)
        # cuDNN autotuning (``cudnn.benchmark``) during the warm-up before a capture; None keeps
        # the process-wide setting (or $RVMATTE_CUDNN_BENCHMARK=0/1).
        env = os.environ.get("RVMATTE_CUDNN_BENCHMARK")
        self.autotune = autotune if autotune is not None else (
            env == "1" if env in ("0", "1") else torch.backends.cudnn.benchmark)
        self.device, self.dtype = self.inner.device, self.inner.dtype
        self.max_graphs = max(1, int(max_graphs))
        self._graphs: dict = {}
        self.fallback_reason: Optional[str] = None
        if self.device.type != "cuda" or not torch.cuda.is_available():
            self.fallback_reason = "not a CUDA device"

    def _capture(self, x: torch.Tensor, ratio: float) -> _Graph:
        model = self.inner.model
        bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bool(self.autotune)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            static_src = x.clone()
            with torch.cuda.stream(side), torch.inference_mode():
                out = model(static_src, None, ratio)
                state_in = tuple(torch.zeros_like(t) for t in out[2])
                out = model(static_src, state_in, ratio)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                out = model(static_src, state_in, ratio)
            return _Graph(graph, static_src, state_in, out)
        finally:
            torch.backends.cudnn.benchmark = bench

    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        if self.fallback_reason is not None:
            return self.inner(src, state, downsample_ratio)
        with torch.inference_mode():
            x = src.to(self.device, self.dtype)
            key = (tuple(x.shape), float(downsample_ratio))
            g = self._graphs.pop(key, None)
            if g is None:
                try:
                    g = self._capture(x, float(downsample_ratio))
                except RuntimeError as e:  # capture unsupported here: run eagerly from now on
                    self.fallback_reason = f"CUDA graph capture failed: {one_line(e)}"
                    self._graphs.clear()
                    return self.inner(src, state, downsample_ratio)
                while len(self._graphs) >= self.max_graphs:
                    self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = g  # most recently used last
            g.src.copy_(x)
            if state is None:
                for t in g.state_in:
                    t.zero_()
            else:
                for t, s in zip(g.state_in, state):
                    t.copy_(s)
            g.graph.replay()
            return MattingOutput(g.fgr.clone(), g.pha.clone(), tuple(t.clone() for t in g.state_out))


def make_runner(backend: str, model: MattingNetwork, *, dtype: Any = None,
                threads: Optional[int] = None) -> Callable[..., MattingOutput]:
    """Build the runner called ``backend`` (one of :data:`BACKENDS`) around ``model``."""
    from ..weights import resolve_dtype

    dt = resolve_dtype(dtype) if dtype is not None else None
    if backend == "torch":
        return TorchRunner(model, fuse_bn=False, channels_last=False, dtype=dt)
    if backend == "torch-fast":
        return TorchRunner(model, dtype=dt)
    if backend == "compile":
        return TorchRunner(model, compile=True, dtype=dt)
    if backend == "cudagraph":
        return CudaGraphRunner(model, dtype=dt)
    if backend == "onnxruntime-pipe":
        from .runtime import OnnxRuntimeRunner

        device = next(model.parameters()).device
        return OnnxRuntimeRunner(model=model, device=str(device), dtype=dt, threads=threads,
                                 pipeline=True)
    if backend == "fused":
        from ..inference.fused import FusedRunner

        return FusedRunner(model=model, device=str(next(model.parameters()).device), dtype=dt,
                           threads=threads)
    if backend.startswith("onnxruntime:"):
        try:
            threads = int(backend.split(":", 1)[1])
        except ValueError:
            raise RvmatteError(f"bad backend {backend!r}: use onnxruntime:THREADS") from None
        backend = "onnxruntime"
    if backend == "onnxruntime":
        from .runtime import OnnxRuntimeRunner

        device = next(model.parameters()).device  # the export itself copies the model to the CPU
        return OnnxRuntimeRunner(model=model, device=str(device), dtype=dt, threads=threads)
    raise RvmatteError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


# ----------------------------------------------------------------------------- measuring
def time_runner(runner: Callable[..., MattingOutput], src: torch.Tensor, ratio: float, *,
                frames: int = 5, warmup: int = 1, chunk: int = 1) -> float:
    """Seconds per frame of ``runner`` over ``frames`` calls of ``chunk`` frames each
    (``src`` (B,3,H,W) repeated along T when ``chunk > 1``, like Matter's chunks), after
    ``warmup`` calls."""
    x = src.unsqueeze(1).expand(-1, chunk, -1, -1, -1).contiguous() if chunk > 1 else src
    state = None
    for _ in range(warmup):
        state = runner(x, state, ratio).state
    sync = torch.cuda.synchronize if src.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(frames):
        state = runner(x, state, ratio).state
    sync()
    return (time.perf_counter() - t0) / (frames * chunk)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def _machine_key() -> str:
    return f"{cpu_name()}|{os.cpu_count()}cpu|{torch.get_num_threads()}thr|torch{torch.__version__}"


def _choice_path():
    from .runtime import cache_dir

    return cache_dir() / CHOICE_FILE


def _read_choices() -> dict:
    try:
        with open(_choice_path()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_choices(data: dict) -> None:
    path = _choice_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time


def _available(backend: str, device: torch.device) -> bool:
    if backend.startswith("onnxruntime"):
        if backend != "onnxruntime" and device.type != "cpu":
            return False  # the thread-count and pipelined variants are CPU tuning
        try:
            import onnxruntime as ort
        except ImportError:
            return False
        return device.type == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers()
    if backend == "compile":
        return device.type == "cuda" or os.environ.get("RVMATTE_TRY_COMPILE") == "1"
    return True


def choose_backend(model: MattingNetwork, height: int, width: int, downsample_ratio: float, *,
                   candidates: Optional[Sequence[str]] = None, frames: int = 1, chunk: int = 4,
                   use_cache: bool = True, timings: Optional[dict] = None) -> str:
    """The fastest backend for ``model`` on its device at ``height x width`` / ``ratio``.

    Times each candidate on ``frames`` calls of ``chunk`` frames (Matter's CPU chunk is 4)
    after one warm-up call -- a few seconds in all on a 2-core CPU at 1080p -- and caches the answer per machine, model, size and ratio in ``speed_choice.json``. Candidates
    default to :data:`DEFAULT_CANDIDATES` for the device type. ``timings``, when given, receives
    ``{backend: seconds per frame}``.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cands = [c for c in (candidates or DEFAULT_CANDIDATES.get(device.type, ("torch",)))
             if _available(c, device)]
    key = (f"{_machine_key()}|{device}|{dtype}|{model.variant}/{model.refiner_name}|"
           f"{height}x{width}@{downsample_ratio:g}x{chunk}|{','.join(cands)}")
    choices = _read_choices() if use_cache else {}
    if key in choices and choices[key] in cands:
        return choices[key]
    src = torch.rand(1, 3, height, width, device=device, dtype=dtype)
    best, best_t = "torch", float("inf")
    for name in cands:
        try:
            runner = make_runner(name, model, dtype=dtype if dtype != torch.float32 else None)
            t = time_runner(runner, src, downsample_ratio, frames=frames, warmup=1, chunk=chunk)
        except (RvmatteError, RuntimeError) as e:  # a path that cannot run here is skipped
            t = float("inf")
            if timings is not None:
                timings[name + ".error"] = one_line(e)
        if timings is not None:
            timings[name] = t
        if t < best_t:
            best, best_t = name, t
    if use_cache:
        choices = _read_choices()
        choices[key] = best
        _write_choices(choices)
    return best
