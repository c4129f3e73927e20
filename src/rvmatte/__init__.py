"""rvmatte: robust human video matting.

Public API::

    spec = rvmatte.ModelSpec(device="cpu")            # which model, where, how (frozen)
    rvmatte.convert_video("in.mp4", output="out.mp4", alpha="alpha.mp4", spec=spec)
    rvmatte.convert_many(["a.mp4", "clips/"], "out/", cluster="auto")  # many, on Ray
    frames = rvmatte.read_frames("in.mp4", end="8f")  # uint8 RGB (T,H,W,3)
    matter = rvmatte.Matter(spec); out = matter.process(frames)   # MattingOutput(fgr, pha, state)
    model = rvmatte.load_model()                      # the PyTorch network, eval mode
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so `import rvmatte` stays light.
_LAZY = {
    "load_model": "rvmatte.weights",
    "MattingOutput": "rvmatte.models.outputs",
    "MattingNetwork": "rvmatte.models.matting",
    "build_model": "rvmatte.models.registry",
    "convert_video": "rvmatte.inference.convert",
    "convert_many": "rvmatte.cluster",
    "Matter": "rvmatte.inference.session",
    "ModelSpec": "rvmatte.spec",
    "read_frames": "rvmatte.io.readers",
    "RvmatteError": "rvmatte.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rvmatte' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
