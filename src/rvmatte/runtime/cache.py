"""The export cache: rvmatte's own ONNX exports of a model, made once and reused.

``<cache>/onnx/<stem>_<dtype>_op<opset>_<key>_torch<version>.onnx`` where ``<cache>`` is
``$RVMATTE_CACHE_DIR``, else ``$XDG_CACHE_HOME/rvmatte`` or ``~/.cache/rvmatte``. The bundled
weights' exports are keyed by their pinned sha256 (:func:`bundled_onnx`), so finding one needs
neither torch nor a built model; other models by a hash of their weights (:func:`cached_onnx`).
The exporters themselves live in :mod:`rvmatte.export.onnx` (imported when an export is made).

A graph *derived* from a float export (``derived=``: the int8 quantisation of
:mod:`rvmatte.runtime.int8`) is cached next to it as ``<stem>_<tag>_op<opset>_<key>_torch<version>.onnx``
(``tag`` e.g. ``int8``), its key the float file's key plus the derivation's version (for int8:
the calibration recipe's and ONNX Runtime's), so a new recipe makes new files.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from ..bundled import BUNDLED
from ..errors import OutputError, one_line
from ..hardware import dtype_name, torch_version
from ..export.names import COEF_INPUT_NAMES, DEFAULT_OPSET, INPUT_NAMES

if TYPE_CHECKING:
    import torch

    from ..models import MattingNetwork

# Bump when the exported graph changes, so cached files are rebuilt.
GRAPH_VERSION = 3
# The graphs rvmatte exports: the whole network, or its working-resolution half that ends
# with the refiner's coefficients (for the fused CPU kernel, rvmatte.runtime.kernels).
# (the exporter in rvmatte.export.onnx, the graph's inputs, the cache file's tag)
GRAPHS = {"full": ("export_onnx", INPUT_NAMES, ""),
          "coefficients": ("export_coefficients_onnx", COEF_INPUT_NAMES, "_coef")}


def _graph(graph: str):
    """``(export function, input names, tag)``; the exporter (which needs torch) is imported
    when called."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose from {', '.join(GRAPHS)}")
    name, inputs, tag = GRAPHS[graph]

    def export(*args, **kwargs):
        return getattr(importlib.import_module("rvmatte.export.onnx"), name)(*args, **kwargs)

    return export, inputs, tag


class Derived(Protocol):
    """A graph made from a float export and cached next to it (``derived=`` of
    :func:`bundled_onnx` and :func:`cached_onnx`; :data:`rvmatte.runtime.int8.INT8`)."""

    tag: str  # in the file name, where the dtype goes
    version: str  # in the key: a new version makes new files

    def make(self, float_onnx: Callable[[], Path], path: Path, *, graph: str) -> Any:
        """Write the derived graph to ``path``; ``float_onnx()`` exports (or finds) the float
        file it starts from (called after the deriver's own checks: an export needs torch)."""


def cache_dir() -> Path:
    """rvmatte's user cache folder (created on demand)."""
    root = os.environ.get("RVMATTE_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rvmatte"


def model_digest(model: MattingNetwork) -> str:
    """A short hash of the model's architecture and weights (the export cache key)."""
    import torch

    h = hashlib.sha256(f"{model.variant}/{model.refiner_name}/{GRAPH_VERSION}".encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_private: list[Path] = []  # this process's own export folder, when the cache is not writable
_private_lock = threading.Lock()
# torch.onnx.export is not re-entrant (two exports at once in one process fail inside torch,
# e.g. a server's preview and its first job): one export at a time, per process.
_export_lock = threading.RLock()


def _private_folder() -> Path:
    """A temporary folder for this process's exports, removed at exit: used when the user
    cache cannot be written (a read-only or foreign home, a full disk), so the job still runs.
    (A process killed by a signal leaves it in the temporary directory.)"""
    with _private_lock:
        if not _private:
            import atexit
            import shutil
            import tempfile

            _private.append(Path(tempfile.mkdtemp(prefix="rvmatte-onnx-")))
            atexit.register(shutil.rmtree, _private[0], True)
        return _private[0]


def _in_cache(stem: str, key: str, make: Callable[[Path], Any], *, dtype, opset: int,
              directory: str | os.PathLike | None, tag: Optional[str] = None) -> Path:
    """``<cache>/onnx/<stem>_<dtype>_op<opset>_<key>_torch<version>.onnx``, made by
    ``make(path)`` unless it is there already. If the user cache cannot be written, the export
    goes to a folder of this process's own (made again by each run, once); an explicit
    ``directory`` that cannot be written, or no room for the export anywhere, is an
    :class:`~rvmatte.errors.OutputError`."""
    with _export_lock:  # a second caller waits, then finds the file the first one made
        return _find_or_make(stem, key, make, tag=tag or dtype_name(dtype), opset=opset,
                             directory=directory)


def _find_or_make(stem: str, key: str, make: Callable[[Path], Any], *, tag: str, opset: int,
                  directory: str | os.PathLike | None) -> Path:
    name = f"{stem}_{tag}_op{opset}_{key}_torch{torch_version()}.onnx"
    if directory is None and _private and (_private[0] / name).is_file():
        return _private[0] / name  # this process fell back for it already: do not export again
    folder = Path(directory) if directory is not None else cache_dir() / "onnx"
    path = folder / name
    try:
        if path.is_file():
            return path
        folder.mkdir(parents=True, exist_ok=True)
        make(path)
        return path
    except OSError as e:
        if directory is not None:
            raise OutputError(f"cannot write the ONNX export in {folder}: "
                              f"{e.strerror or one_line(e)}") from None
    try:
        path = _private_folder() / name
        if not path.is_file():
            make(path)
    except OSError as e:
        raise OutputError(f"cannot write the ONNX export in {cache_dir() / 'onnx'} nor in a "
                          f"temporary folder: {e.strerror or one_line(e)}") from None
    return path


def _derived(derived: Derived, stem: str, key: str, float_onnx: Callable[[], Path], *,
             graph: str, opset: int, directory) -> Path:
    """``derived``'s graph made from the float export ``float_onnx()`` (exported first if
    need be), cached under a key of the float file's key and the derivation's version."""
    k = hashlib.sha256(f"{key}/{derived.tag}/{derived.version}".encode()).hexdigest()[:16]
    return _in_cache(stem, f"{key[0]}{k}" if key.startswith("w") else k,
                     lambda path: derived.make(float_onnx, path, graph=graph),
                     dtype=None, tag=derived.tag, opset=opset, directory=directory)


def cached_onnx(model: MattingNetwork, *, dtype: str | torch.dtype | None = None,
                opset: int = DEFAULT_OPSET, directory: str | os.PathLike | None = None,
                graph: str = "full", derived: Optional[Derived] = None) -> Path:
    """Export ``model`` to the cache unless an identical export is there; returns its path.
    ``graph``: ``"full"`` or ``"coefficients"`` (see :data:`GRAPHS`). ``derived``: the graph
    derived from the float32 export instead (e.g. :data:`rvmatte.runtime.int8.INT8`)."""
    export, _, tag = _graph(graph)
    stem, key = f"rvm_{model.variant}_{model.refiner_name}{tag}", model_digest(model)
    if derived is not None:
        return _derived(derived, stem, key,
                        lambda: cached_onnx(model, opset=opset, directory=directory, graph=graph),
                        graph=graph, opset=opset, directory=directory)
    return _in_cache(stem, key, lambda path: export(model, path, dtype=dtype, opset=opset),
                     dtype=dtype, opset=opset, directory=directory)


def bundled_onnx(variant: str = "mobilenetv3", *, dtype: str | torch.dtype | None = None,
                 opset: int = DEFAULT_OPSET, directory: str | os.PathLike | None = None,
                 graph: str = "full", derived: Optional[Derived] = None) -> Path:
    """The cached ONNX export of the *bundled* weights of ``variant``, keyed by their pinned
    sha256 instead of a hash of a built model: when the file is there, no PyTorch model is
    built and neither torch nor torchvision is imported (1.3-2.5 s of start-up). Exported on
    first use. ``derived``: as for :func:`cached_onnx`."""
    export, _, tag = _graph(graph)
    b = BUNDLED[variant]
    key = hashlib.sha256(f"{variant}/{b.refiner}/{GRAPH_VERSION}/{b.sha256}".encode()).hexdigest()[:16]
    stem = f"rvm_{variant}_{b.refiner}{tag}"
    if derived is not None:
        return _derived(derived, stem, f"w{key}",
                        lambda: bundled_onnx(variant, opset=opset, directory=directory, graph=graph),
                        graph=graph, opset=opset, directory=directory)
    return _in_cache(stem, f"w{key}",
                     lambda path: export(_load_model(variant, device="cpu"), path,
                                         dtype=dtype, opset=opset),
                     dtype=dtype, opset=opset, directory=directory)


def _load_model(*args, **kwargs):
    from ..weights import load_model

    return load_model(*args, **kwargs)
