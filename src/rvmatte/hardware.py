"""What the machine offers, answered without importing PyTorch where that is possible.

``import torch`` costs 1.3-2.5 s on a 2-core machine, more than half of a short CPU job's
start-up. The CPU's fastest file-conversion path (ONNX Runtime + rvmatte's compiled kernel,
:mod:`rvmatte.runtime.fused`) does not need it, so :class:`rvmatte.inference.session.Matter`
asks here first: which device a default session would pick, how many threads the model gets,
and which PyTorch build an ONNX export in the cache came from. Once torch is loaded the
answers come from torch itself.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Any, Optional

from .errors import WeightsError

_threads: Optional[int] = None  # set_threads(): the model's CPU threads, for torch too

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "float64": "float64",
                "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def torch_loaded() -> bool:
    return "torch" in sys.modules


def gpu_possible() -> bool:
    """Whether a default device (``device=None``) could be a GPU. Asked of torch once it is
    loaded; before that, only on Linux machines without any GPU device node (NVIDIA
    ``/dev/nvidia*``, Jetson ``/dev/nvhost*``, AMD ROCm ``/dev/kfd``, WSL ``/dev/dxg``) is the
    answer "no" for sure."""
    if torch_loaded():
        import torch

        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps is not None and mps.is_available())
    if not sys.platform.startswith("linux"):
        return True  # macOS has MPS; elsewhere, let torch say
    return bool(glob.glob("/dev/nvidia*") or glob.glob("/dev/nvhost*")
                or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"))


def cpu_requested(device: Any) -> bool:
    """``device`` names the CPU, or is the default on a machine that has no GPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return not gpu_possible()
    return str(device) == "cpu"


def dtype_name(dtype: Any) -> str:
    """``None`` (float32), a name (``"fp16"``, ...: ``float32``, ``float16`` or ``bfloat16``,
    else :class:`WeightsError`) or any ``torch.dtype`` -> its name (``"float32"``,
    ``"float64"``, ...; the caller says which it supports)."""
    if dtype is None:
        return "float32"
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        return str(dtype).replace("torch.", "")
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
    for c in cpus:  # a core is the set of CPUs that share it (newer and older kernels' names)
        core = str(c)
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                with open(f"/sys/devices/system/cpu/cpu{c}/topology/{name}") as f:
                    core = f.read().strip()
                break
            except OSError:
                continue
        cores.add(core)
    return max(1, len(cores))


def _env_threads(name: str) -> Optional[int]:
    """A thread-count variable read as PyTorch reads it (the leading integer; none, zero or
    negative: not set)."""
    m = re.match(r"\s*([+-]?\d+)", os.environ.get(name, ""))
    n = int(m.group(1)) if m else 0
    return n if n > 0 else None


def default_threads() -> int:
    """The model's CPU threads: those given to :func:`set_threads` (``--threads``), else
    ``torch.get_num_threads()`` once torch is loaded, else what it would say: the physical
    cores, or ``MKL_NUM_THREADS`` / ``OMP_NUM_THREADS`` up to that many."""
    if _threads is not None:
        return _threads
    if torch_loaded():
        import torch

        return torch.get_num_threads()
    cores = physical_cores()
    n = _env_threads("MKL_NUM_THREADS") or _env_threads("OMP_NUM_THREADS")
    return min(n, cores) if n else cores


def import_kernels(module: str):
    """Import the numba kernel module ``module`` (their compiled code is cached on disk).
    Where numba finds no writable place for that cache (a read-only install and home), it
    sets ``RVMATTE_NUMBA_CACHE=0`` (each kernel module's ``cache=`` flag reads it) and imports
    the module again: the kernels are then compiled in each process (a second or two)."""
    import importlib

    try:
        return importlib.import_module(module)
    except RuntimeError as e:
        if "cannot cache" not in str(e):
            raise
        os.environ["RVMATTE_NUMBA_CACHE"] = "0"
        sys.modules.pop(module, None)
        return importlib.import_module(module)


def threads_chosen() -> bool:
    """Whether the model's threads were chosen (``--threads`` / :func:`set_threads`, or
    ``MKL_NUM_THREADS`` / ``OMP_NUM_THREADS``) rather than left to the default."""
    return _threads is not None or bool(_env_threads("MKL_NUM_THREADS")
                                        or _env_threads("OMP_NUM_THREADS"))


def set_threads(n: int) -> None:
    """The model's CPU threads (``--threads``): for the torch-free path, and for torch now or,
    through :func:`apply_threads`, when it is used."""
    global _threads
    _threads = int(n)
    if torch_loaded():
        apply_threads()


def apply_threads() -> None:
    """Give torch the threads of :func:`set_threads`, if any (called where a PyTorch model is
    about to run; imports torch)."""
    if _threads is not None:
        import torch

        if torch.get_num_threads() != _threads:
            torch.set_num_threads(_threads)


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


def resolve_device(device: Any) -> str:
    """The one device resolver: ``None``/``"auto"`` -> CUDA, then MPS, then CPU; a name or a
    ``torch.device`` -> its canonical name (``"cpu"``, ``"cuda:0"``, ``"mps"``). PyTorch is
    imported only when the answer depends on it (a machine that may have a GPU, a GPU name).
    A device that does not exist here is a :class:`~rvmatte.errors.WeightsError`."""
    if device is None or str(device) == "auto":
        if cpu_requested(None):
            return "cpu"
    elif str(device) == "cpu":
        return "cpu"
    return str(torch_device(device))


def torch_device(device: Any):
    """``device`` as a ``torch.device``, checked to be usable (imports torch)."""
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise WeightsError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError("device 'cuda' requested but CUDA is not available (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
        raise WeightsError("device 'mps' requested but MPS is not available (use --device cpu)")
    return dev


class BandPool:
    """Runs ``kernel(*args, r0, r1)`` over bands of rows side by side: the first band in the
    caller's thread, the others on ``threads - 1`` pool threads (made at first use, and again
    after :meth:`close`). The kernels release the GIL; every row's result must not depend on
    the split."""

    def __init__(self, threads: int, name: str = "rvmatte-bands") -> None:
        self.threads = max(1, int(threads))
        self.name = name
        self._pool: Any = None

    def run(self, kernel, args: tuple, edges) -> None:
        """``edges``: the ``threads + 1`` band boundaries (rows)."""
        jobs = [(int(edges[i]), int(edges[i + 1])) for i in range(self.threads)]
        futures = []
        if self.threads > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix=self.name)
            futures = [self._pool.submit(kernel, *args, r0, r1) for r0, r1 in jobs[1:]]
        kernel(*args, *jobs[0])
        for f in futures:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
