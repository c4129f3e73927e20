"""The one helper for the time axis.

Every module in :mod:`rvmatte.models` works on single frames ``(N, C, H, W)``; clips
``(B, T, C, H, W)`` are folded into ``(B*T, C, H, W)`` and unfolded afterwards. Recurrent
modules (ConvGRU) are the only ones that loop over ``T`` themselves.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor


def fold(x: Tensor) -> tuple[Tensor, tuple[int, ...] | None]:
    """``(B, T, C, H, W) -> (B*T, C, H, W)``; 4-D input passes through.

    Returns the folded tensor and the leading shape to hand to :func:`unfold`
    (``None`` for 4-D input).
    """
    if x.ndim == 5:
        return x.flatten(0, 1), tuple(x.shape[:2])
    return x, None


def unfold(x: Tensor, lead: tuple[int, ...] | None) -> Tensor:
    """Inverse of :func:`fold`: ``(B*T, ...) -> (B, T, ...)`` when ``lead`` is given."""
    if lead is None:
        return x
    return x.unflatten(0, lead)


def per_frame(fn: Callable[..., Tensor | Sequence[Tensor]], *xs: Tensor):
    """Apply a frame-wise function to 4-D or 5-D tensors with the same leading shape.

    ``fn`` receives folded 4-D tensors; its tensor output (or each tensor in a sequence
    output) is unfolded back to the input's rank.
    """
    folded = [fold(x) for x in xs]
    lead = folded[0][1]
    out = fn(*(f for f, _ in folded))
    if isinstance(out, Tensor):
        return unfold(out, lead)
    return type(out)(unfold(o, lead) for o in out)
