"""Measuring the backends: :func:`choose_backend` times the candidates briefly on the actual
device, size and ratio and remembers the winner in ``<cache>/speed_choice.json``
(:func:`rvmatte.runtime.cache.cache_dir`). ``backend="auto"`` does not measure: it follows the
rule of :func:`rvmatte.runtime.auto_backend`, which these measurements justify (docs/SPEED.md).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable, Optional, Sequence

import torch

from ..errors import RvmatteError, one_line
from ..models import MattingNetwork, MattingOutput
from . import make_runner
from .cache import cache_dir

# What choose_backend tries by default. torch.compile is left out on CPU: on the 2-core
# machine of docs/SPEED.md it compiles for minutes per frame size and did not beat ORT.
DEFAULT_CANDIDATES = {"cpu": ("torch", "torch-fast", "onnxruntime", "onnxruntime:1",
                              "onnxruntime-pipe", "fused"),
                      "cuda": ("torch", "torch-fast", "cudagraph")}
CHOICE_FILE = "speed_choice.json"


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
