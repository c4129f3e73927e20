"""Export (ONNX, TorchScript), the ONNX Runtime backend and the fast inference paths.

    from rvmatte.export import export_onnx, export_torchscript, OnnxRuntimeRunner
    export_onnx(rvmatte.load_model(), "rvm.onnx")             # opset 17, dynamic B/H/W
    runner = OnnxRuntimeRunner()                              # exports to the cache once
    fgr, pha, state = runner(src, state, downsample_ratio)    # like the PyTorch model

Submodules import onnx / onnxruntime lazily, so ``import rvmatte.export`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_onnx": "rvmatte.export.onnx",
    "export_torchscript": "rvmatte.export.torchscript",
    "OnnxRuntimeRunner": "rvmatte.export.runtime",
    "fuse_batchnorm": "rvmatte.export.optimize",
    "make_runner": "rvmatte.export.optimize",
    "choose_backend": "rvmatte.export.optimize",
    "zero_state": "rvmatte.export.wrapper",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rvmatte.export' has no attribute {name!r}")
