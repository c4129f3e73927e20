"""Turn green-screen (or blue-screen) footage into a VideoMatte240K-style training set.

    prepare_greenscreen(["take1.mp4", "take2/"], "my_set/")   ->  my_set/fgr/<clip>/00000.jpg
                                                                   my_set/pha/<clip>/00000.png

The keyer is a colour-difference keyer, the classic studio method: with ``c`` the key's
dominant channel (green for a green screen), the *screen excess* of a pixel is
``e = x_c - max(other channels)``, normalised by the key colour's own excess. Alpha falls from
1 to 0 as the normalised excess rises from ``tolerance[0]`` to ``tolerance[1]``. The
foreground is un-mixed from the key colour where alpha is partial
(``F = (I - (1 - a) K) / a``) and then spill-suppressed by clamping the dominant channel to
the maximum of the others (``strength`` blends between none and full suppression).

Good footage matters more than this keyer: even light on the screen, no screen colour on the
subject, little motion blur. Inspect a few frames of ``pha/`` before training on it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError, OutputError

__all__ = ["Keyer", "auto_key_color", "prepare_greenscreen"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def auto_key_color(frame: np.ndarray) -> np.ndarray:
    """Median colour of the pixels that are clearly green- or blue-dominant (``frame``:
    float HxWx3 in [0, 1]); the screen is assumed to be the larger of the two."""
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    green = (g - np.maximum(r, b)) > 0.1
    blue = (b - np.maximum(r, g)) > 0.1
    mask = green if green.sum() >= blue.sum() else blue
    if mask.sum() < 0.01 * mask.size:
        raise InputError("could not find a green or blue screen in the first frame; pass the "
                         "key colour explicitly (e.g. --key-color 00b140)")
    return np.median(frame[mask], axis=0)


def parse_color(text: str) -> np.ndarray:
    t = text.strip().lstrip("#")
    if len(t) != 6:
        raise InputError(f"key colour must be 6 hex digits like 00b140, got {text!r}")
    try:
        return np.array([int(t[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255
    except ValueError:
        raise InputError(f"key colour must be 6 hex digits like 00b140, got {text!r}") from None


@dataclass
class Keyer:
    """``key``: RGB in [0, 1]; ``tolerance``: normalised screen excess where alpha starts to
    fall and where it reaches 0; ``spill``: spill-suppression strength in [0, 1]."""

    key: np.ndarray
    tolerance: tuple[float, float] = (0.25, 0.65)
    spill: float = 1.0

    def __post_init__(self) -> None:
        self.key = np.asarray(self.key, dtype=np.float64)
        self.channel = int(np.argmax(self.key))
        others = [i for i in range(3) if i != self.channel]
        self.others = others
        self.key_excess = float(self.key[self.channel] - self.key[others].max())
        if self.key_excess < 0.1:
            raise InputError(f"key colour {np.round(self.key * 255).astype(int).tolist()} is not "
                             "saturated enough for a colour-difference key")
        lo, hi = self.tolerance
        if not 0 <= lo < hi:
            raise InputError(f"tolerance must satisfy 0 <= low < high, got {self.tolerance}")

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``frame``: float HxWx3 in [0, 1] -> (fgr HxWx3, alpha HxW), both float in [0, 1]."""
        x = frame.astype(np.float64)
        excess = (x[..., self.channel] - x[..., self.others].max(-1)) / self.key_excess
        lo, hi = self.tolerance
        t = np.clip((excess - lo) / (hi - lo), 0, 1)
        alpha = 1 - t * t * (3 - 2 * t)  # smoothstep
        alpha[alpha < 0.01] = 0
        alpha[alpha > 0.99] = 1
        a = alpha[..., None]
        unmixed = (x - (1 - a) * self.key) / np.maximum(a, 1e-3)
        fgr = np.where(a > 0.05, np.clip(unmixed, 0, 1), x)
        # spill suppression: the key channel may not exceed the brightest other channel
        limit = fgr[..., self.others].max(-1)
        c = fgr[..., self.channel]
        fgr[..., self.channel] = c - self.spill * np.maximum(c - limit, 0)
        fgr[alpha == 0] = 0
        return fgr.astype(np.float32), alpha.astype(np.float32)


def _frames(path: Path, every: int, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    """uint8 HxWx3 RGB frames of a video file or an image folder."""
    n = 0
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in _IMAGE_EXTS)
        if not files:
            raise InputError(f"no images in folder {path}")
        for i, f in enumerate(files):
            if i % every:
                continue
            with Image.open(f) as im:
                yield np.asarray(im.convert("RGB"))
            n += 1
            if max_frames and n >= max_frames:
                return
        return
    import av
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"cannot open video {path}: {e}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream")
        for i, frame in enumerate(container.decode(video=0)):
            if i % every:
                continue
            yield frame.to_ndarray(format="rgb24")
            n += 1
            if max_frames and n >= max_frames:
                return


def _resize(img: Image.Image, max_side: Optional[int], resample) -> Image.Image:
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), resample)
    return img


def prepare_greenscreen(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                        key_color: Optional[str] = None, tolerance=(0.25, 0.65), spill: float = 1.0,
                        every: int = 1, max_frames: Optional[int] = None,
                        max_side: Optional[int] = None, overwrite: bool = False,
                        progress=None) -> dict[str, int]:
    """Key every input (video file or image folder) into ``out/fgr/<clip>/`` (JPEG) and
    ``out/pha/<clip>/`` (PNG). Each clip is written to a temporary folder and renamed when
    complete. Returns ``{clip: frames}``."""
    out = Path(out)
    if not inputs:
        raise InputError("no green-screen inputs given")
    if every < 1:
        raise InputError("--every must be >= 1")
    names = []
    for p in inputs:
        p = Path(p)
        if not p.exists():
            raise InputError(f"input not found: {p}")
        names.append(p.stem if p.is_file() else p.name)
    if len(set(names)) != len(names):
        raise InputError(f"two inputs have the same name ({names}); clip folders must differ")
    result: dict[str, int] = {}
    for src, name in zip(inputs, names):
        dst_f, dst_p = out / "fgr" / name, out / "pha" / name
        if (dst_f.exists() or dst_p.exists()) and not overwrite:
            raise OutputError(f"{dst_f} already exists (use --overwrite)")
        tmp_f, tmp_p = out / "fgr" / f".{name}.partial", out / "pha" / f".{name}.partial"
        for d in (tmp_f, tmp_p):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        keyer = parse_color(key_color) if key_color else None
        n = 0
        for frame in _frames(Path(src), every, max_frames):
            x = frame.astype(np.float32) / 255
            if not isinstance(keyer, Keyer):
                keyer = Keyer(keyer if keyer is not None else auto_key_color(x), tuple(tolerance), spill)
            fgr, pha = keyer(x)
            f_img = _resize(Image.fromarray((fgr * 255 + 0.5).astype(np.uint8)), max_side, Image.BILINEAR)
            p_img = _resize(Image.fromarray((pha * 255 + 0.5).astype(np.uint8)), max_side, Image.BILINEAR)
            f_img.save(tmp_f / f"{n:05d}.jpg", quality=95)
            p_img.save(tmp_p / f"{n:05d}.png")
            n += 1
            if progress:
                progress(name, n)
        if n == 0:
            raise InputError(f"no frames read from {src}")
        for tmp, dst in ((tmp_f, dst_f), (tmp_p, dst_p)):
            shutil.rmtree(dst, ignore_errors=True)
            os.replace(tmp, dst)
        result[name] = n
    return result
