"""Reading and writing the PNG frame folders that the evaluation works on.

Layout: a folder of per-clip subfolders, each holding one PNG per frame (names sort in frame
order, e.g. ``0000.png``). Alpha frames are grayscale, 8-bit (``/255``) or 16-bit (``/65535``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError

__all__ = ["read_alpha", "write_alpha", "read_rgb", "write_rgb", "list_clips", "list_frames"]


def read_alpha(path: str | os.PathLike) -> np.ndarray:
    """A grayscale PNG as float64 (H, W) in [0, 1]; 8-bit or 16-bit.

    RGB files whose three channels are equal (some datasets store alpha that way) are accepted.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64) / 65535.0
            elif mode == "L":
                a = np.asarray(im, dtype=np.float64) / 255.0
            elif mode == "LA":
                a = np.asarray(im.getchannel("L"), dtype=np.float64) / 255.0
            elif mode == "RGB":
                rgb = np.asarray(im)
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise InputError(f"{path}: expected a grayscale alpha PNG, got a colour image")
                a = rgb[..., 0].astype(np.float64) / 255.0
            else:
                raise InputError(f"{path}: unsupported alpha image mode {mode!r} (use 8- or 16-bit grayscale)")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from None
    return np.clip(a, 0.0, 1.0)


def write_alpha(path: str | os.PathLike, alpha: np.ndarray, bits: int = 8) -> None:
    """Write (H, W) alpha in [0, 1] as an 8- or 16-bit grayscale PNG."""
    a = np.clip(np.asarray(alpha, dtype=np.float64), 0, 1)
    if bits == 8:
        Image.fromarray(np.round(a * 255).astype(np.uint8), mode="L").save(path)
    elif bits == 16:
        Image.fromarray(np.round(a * 65535).astype(np.uint16)).save(path)
    else:
        raise ValueError("bits must be 8 or 16")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image as uint8 (H, W, 3) RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from None


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write uint8 (H, W, 3) RGB (or float in [0, 1]) as PNG."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(rgb, mode="RGB").save(path)


def list_clips(root: str | os.PathLike) -> list[str]:
    """Sorted names of the clip subfolders of ``root`` (InputError if none)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    clips = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not clips:
        raise InputError(f"{root} has no clip subfolders (expected ROOT/<clip>/<frame>.png)")
    return clips


def list_frames(clip_dir: str | os.PathLike) -> list[str]:
    """Sorted PNG file names in one clip folder (InputError if none)."""
    clip_dir = Path(clip_dir)
    frames = sorted(p.name for p in clip_dir.iterdir() if p.suffix.lower() == ".png")
    if not frames:
        raise InputError(f"{clip_dir} holds no PNG frames")
    return frames
