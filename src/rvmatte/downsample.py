"""The downsample ratio: at what scale the network looks at a frame.

``"auto"`` follows the official rule: the longest side of the working image is at most 512 px,
``min(512 / max(h, w), 1)``. The refiner brings alpha and foreground back to full resolution.
"""

from __future__ import annotations

import math

from .errors import InputError

AUTO_TARGET = 512


def working_size(h: int, w: int, ratio: float) -> tuple[int, int]:
    """``floor(h * r), floor(w * r)``: the size ``interpolate(scale_factor=r)`` produces (the
    network's working image)."""
    if ratio == 1:
        return h, w
    return int(math.floor(h * ratio)), int(math.floor(w * ratio))


def auto_downsample_ratio(h: int, w: int) -> float:
    """``min(512 / max(h, w), 1)``: the official RVM rule."""
    return min(AUTO_TARGET / max(h, w), 1.0)


def parse_downsample_ratio(value: str | float | int | None) -> float | None:
    """Parse ``"auto"``/``None`` (-> ``None``, decided per frame size) or a ratio in (0, 1].

    Raises :class:`~rvmatte.errors.InputError` with a message a user can act on.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"invalid downsample ratio {value!r}: use 'auto' or a number "
                             "in (0, 1], e.g. 0.25") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"invalid downsample ratio {value!r}: use 'auto' or a number in (0, 1]")
    ratio = float(value)
    if not math.isfinite(ratio) or not 0 < ratio <= 1:
        raise InputError(f"invalid downsample ratio {value!r}: must be in (0, 1] "
                         "(e.g. 0.25 for 4K, 0.4 for 1080p, 1 for 512 px), or 'auto'")
    return ratio


def resolve_downsample_ratio(value: str | float | None, h: int, w: int) -> float:
    """The ratio to use for an ``h`` x ``w`` frame."""
    ratio = parse_downsample_ratio(value)
    return auto_downsample_ratio(h, w) if ratio is None else ratio
