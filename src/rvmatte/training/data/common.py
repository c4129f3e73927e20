"""Helpers shared by the dataset readers: layout checks, lazy image loading, seeding."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch
from PIL import Image

from ...errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# A dataset key: an index, or (index, seed) from rvmatte.training.engine's sampler so that a
# sample depends only on the run's seed and position (exact resume, any worker count).
Key = Union[int, tuple]


def key_rng(key: Key, salt: int = 0) -> tuple[int, np.random.Generator]:
    """Split a key into (index, generator seeded from the key)."""
    if isinstance(key, (tuple, list)):
        idx, seed = int(key[0]), int(key[1])
    else:
        idx, seed = int(key), int(key)
    return idx, np.random.default_rng([seed, idx, salt])


def require_dir(path: Optional[Union[str, Path]], what: str, expected: str) -> Path:
    """``path`` as a directory, or an :class:`InputError` naming the dataset and its layout."""
    if path is None or str(path) == "":
        raise InputError(f"{what}: no root given (expected {expected})")
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what}: root not found: {p} (expected {expected})")
    if not p.is_dir():
        raise InputError(f"{what}: root is not a directory: {p} (expected {expected})")
    return p


def list_images(d: Path) -> list[str]:
    return sorted(f.name for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())


def list_dirs(d: Path) -> list[str]:
    return sorted(f.name for f in d.iterdir() if f.is_dir())


def require_images(d: Path, what: str, expected: str) -> list[str]:
    files = list_images(d)
    if not files:
        raise InputError(f"{what}: no images ({', '.join(IMAGE_EXTS[:3])}, ...) in {d} "
                         f"(expected {expected})")
    return files


def stem_map(files: Iterable[str]) -> dict[str, str]:
    return {Path(f).stem: f for f in files}


def shrink(img: Image.Image, size: int, resample=Image.BILINEAR) -> Image.Image:
    """Downscale so the short side is at most ``size`` (saves decoding work downstream)."""
    w, h = img.size
    if min(w, h) > size:
        s = size / min(w, h)
        img = img.resize((max(1, int(w * s)), max(1, int(h * s))), resample)
    return img


def load_image(path: Path, mode: str, size: Optional[int] = None,
               resample=Image.BILINEAR) -> Image.Image:
    """Open, convert and (optionally) shrink an image; the file is closed on return."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {e}") from None
    return shrink(im, size, resample) if size else im


def to_tensor(img: Union[Image.Image, np.ndarray]) -> torch.Tensor:
    """PIL/uint8 HxW(xC) -> float (C,H,W) in [0, 1]."""
    a = np.array(img)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div_(255)


def stack(imgs: list) -> torch.Tensor:
    """List of PIL images (same size) -> (T,C,H,W)."""
    return torch.stack([to_tensor(i) for i in imgs])


def match_size(imgs: list[Image.Image], size: tuple[int, int], resample=Image.BILINEAR):
    return [i if i.size == size else i.resize(size, resample) for i in imgs]
