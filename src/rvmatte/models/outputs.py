"""The network's typed outputs, kept free of PyTorch so that the runtime's torch-free paths
(ONNX Runtime, the fused CPU kernel) return the same types with numpy arrays in them."""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

# The recurrent state (r1, r2, r3, r4): tensors from the PyTorch runners, numpy arrays from
# the torch-free ones. Every runner takes either, and ``None`` on a clip's first frames.
State = Tuple[Any, Any, Any, Any]


class MattingOutput(NamedTuple):
    """``fgr``: (B,T,3,H,W) or (B,3,H,W); ``pha``: (B,T,1,H,W) or (B,1,H,W), both in [0, 1];
    ``state``: the recurrent state ``(r1, r2, r3, r4)`` to pass to the next call."""

    fgr: Any
    pha: Any
    state: State


class SegmentationOutput(NamedTuple):
    """``seg``: segmentation logits, (B,T,1,H,W) or (B,1,H,W) at the working resolution."""

    seg: Any
    state: State
