"""Compositing one frame at a time (web UI preview, ``rvmatte live``).

A thin layer over :mod:`rvmatte.io.compose`, the pipeline's own backgrounds, so a preview
or a live stream looks exactly like the converted file. ``--background`` syntax is the
same as ``rvmatte convert``'s: a colour name or ``#rrggbb``, an image (or video) path,
``blur``/``blur:SIGMA`` or ``transparent``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import InputError


def load_background(spec: Optional[str], *, default: str = "green"):
    """A :class:`rvmatte.io.compose.Background`, or ``None`` for transparent."""
    from ..io.compose import parse_background

    bg = parse_background(spec if spec not in (None, "") else default)
    if bg is None:
        bg = parse_background(default)
    return None if bg == "transparent" else bg


def safe_background_spec(text: Optional[str], *, default: str = "green") -> str:
    """Normalise a background given by a *remote* client: a colour (-> ``#rrggbb``),
    ``blur``/``blur:SIGMA`` or ``transparent``. Never a path (images are uploaded)."""
    from ..io.compose import parse_color

    t = (text or default).strip()
    low = t.lower()
    if low in ("transparent", "none", "alpha"):
        return "transparent"
    if low == "blur" or low.startswith("blur:"):
        load_background(low)  # validates the strength
        return low
    rgb = parse_color(t)
    if rgb is None:
        raise InputError(f"bad background {t!r}: use a colour name or #rrggbb, blur, "
                         "blur:SIGMA, transparent, or image with an uploaded image")
    return "#%02x%02x%02x" % rgb


def composite(frame: np.ndarray, pha: np.ndarray, fgr: np.ndarray, background,
              index: int = 0) -> np.ndarray:
    """Blend one frame over ``background`` (``None`` = transparent).

    frame: (H, W, 3) uint8 source; pha: (H, W) float in [0, 1]; fgr: (H, W, 3) float in
    [0, 1]. Returns (H, W, 3) uint8, or (H, W, 4) RGBA uint8 when transparent.
    """
    from ..io.compose import to_uint8

    a = torch.from_numpy(np.ascontiguousarray(pha, np.float32)).view(1, 1, *pha.shape[-2:])
    f = torch.from_numpy(np.ascontiguousarray(fgr, np.float32)).permute(2, 0, 1)[None]
    if background is None:
        out = torch.cat([f, a], 1)
    else:
        src = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
        bg = background.get(src.div_(255.0), index)
        out = f * a + bg * (1 - a)
    return to_uint8(out)[0].permute(1, 2, 0).contiguous().numpy()
