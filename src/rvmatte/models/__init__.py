"""nn.Modules only: no file I/O, argument parsing or printing here.

Names are imported on first use, so that :mod:`rvmatte.models.outputs` (the typed outputs,
torch-free) can be imported without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MattingNetwork": "matting", "downsample": "matting",
    "MattingOutput": "outputs", "SegmentationOutput": "outputs", "State": "outputs",
    "build_model": "registry", "REFINER_NAMES": "registry", "VARIANTS": "registry",
    "GUIDANCE_INPUTS": "registry", "guidance_inputs": "guidance",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
