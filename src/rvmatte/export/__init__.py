"""Export: ONNX and TorchScript files of the network, and checks that they match PyTorch.

    from rvmatte.export import export_onnx, export_torchscript
    export_onnx(rvmatte.load_model(), "rvm.onnx")             # opset 17, dynamic B/H/W

Running an export (ONNX Runtime, the fused CPU path) is the runtime's job:
:mod:`rvmatte.runtime`. This package never imports the runtime or the pipeline. Submodules
import onnx lazily, so ``import rvmatte.export`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_onnx": "rvmatte.export.onnx",
    "export_torchscript": "rvmatte.export.torchscript",
    "zero_state": "rvmatte.export.wrapper",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rvmatte.export' has no attribute {name!r}")
