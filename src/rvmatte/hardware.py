"""What the machine offers, answered without importing PyTorch where that is possible.

``import torch`` costs 1.3-2.5 s on a 2-core machine, more than half of a short CPU job's
start-up. The CPU's fastest file-conversion path (ONNX Runtime + rvmatte's compiled kernel,
:mod:`rvmatte.inference.fused`) does not need it, so :func:`rvmatte.inference.convert.convert_video`
asks here first: which device a default session would pick, how many threads the model gets,
and which PyTorch build an ONNX export in the cache came from. Once torch is loaded the
answers come from torch itself.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from .errors import WeightsError

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16",
                "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def torch_loaded() -> bool:
    return "torch" in sys.modules


def gpu_possible() -> bool:
    """Whether a default device (``device=None``) could be a GPU. Asked of torch once it is
    loaded; before that, only on Linux machines without any GPU device node (NVIDIA
    ``/dev/nvidia*``, AMD ROCm ``/dev/kfd``, WSL ``/dev/dxg``) is the answer "no" for sure."""
    if torch_loaded():
        import torch

        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps is not None and mps.is_available())
    if not sys.platform.startswith("linux"):
        return True  # macOS has MPS; elsewhere, let torch say
    return bool(glob.glob("/dev/nvidia*") or os.path.exists("/dev/kfd")
                or os.path.exists("/dev/dxg"))


def cpu_requested(device: Any) -> bool:
    """``device`` names the CPU, or is the default on a machine that has no GPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return not gpu_possible()
    return str(device) == "cpu"


def dtype_name(dtype: Any) -> str:
    """``None`` (float32), a name (``"fp16"``, ...) or a ``torch.dtype`` -> ``"float32"``,
    ``"float16"`` or ``"bfloat16"``."""
    if dtype is None:
        return "float32"
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        name = str(dtype).replace("torch.", "")
        if name in _DTYPE_NAMES.values():
            return name
        raise WeightsError(f"unsupported dtype {dtype}; choose from float32, float16, bfloat16")
    try:
        return _DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        raise WeightsError(f"unknown dtype {dtype!r}; choose from float32, float16, "
                           "bfloat16") from None


def physical_cores() -> int:
    """Cores (not hardware threads) among the CPUs this process may run on: the count PyTorch
    gives its intra-op pool by default."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/core_cpus_list") as f:
                cores.add(f.read().strip())
        except OSError:
            try:
                with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                    cores.add(f.read().strip())
            except OSError:
                cores.add(str(c))
    return max(1, len(cores))


def default_threads() -> int:
    """The model's CPU threads: ``torch.get_num_threads()`` once torch is loaded; before,
    what it would say: ``OMP_NUM_THREADS`` (which :func:`set_threads` sets) or the number of
    physical cores."""
    if torch_loaded():
        import torch

        return torch.get_num_threads()
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
        if n >= 1:
            return n
    except ValueError:
        pass
    return physical_cores()


def set_threads(n: int) -> None:
    """The model's CPU threads, for torch (now, or when it loads) and the torch-free path."""
    os.environ["OMP_NUM_THREADS"] = str(int(n))
    if torch_loaded():
        import torch

        torch.set_num_threads(int(n))


def torch_version() -> str:
    """PyTorch's version without its local part (``2.14.1``), without importing it."""
    if torch_loaded():
        import torch

        return torch.__version__.split("+")[0]
    from importlib import metadata

    try:
        return metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        import torch

        return torch.__version__.split("+")[0]
