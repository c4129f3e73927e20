"""Per-frame compositing for previews and live output (colour, image, blur, transparent).

Whole-file conversion composites inside the pipeline (:mod:`rvmatte.inference.convert`); this
module serves code that holds one frame at a time: the web UI's preview and ``rvmatte live``.
The ``--background`` syntax is the same as ``rvmatte convert``'s: a colour name or
``#rrggbb``, a path to an image, ``blur`` (or ``blur:RADIUS``) or ``transparent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class Background:
    """A parsed background. ``kind`` is ``colour``, ``image``, ``blur`` or ``transparent``."""

    kind: str
    rgb: tuple[int, int, int] = (0, 255, 0)
    image: Path | None = None
    blur_radius: float | None = None  # None: scaled to the frame size
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_alpha(self) -> bool:
        return self.kind == "transparent"

    def spec(self) -> str:
        """The string form accepted by :func:`parse_background` (and ``rvmatte convert``)."""
        if self.kind == "colour":
            return "#%02x%02x%02x" % self.rgb
        if self.kind == "image":
            return str(self.image)
        if self.kind == "blur":
            return "blur" if self.blur_radius is None else f"blur:{self.blur_radius:g}"
        return "transparent"

    def canvas(self, frame: np.ndarray) -> np.ndarray:
        """Background pixels (H, W, 3) float32 in [0, 1] for ``frame`` (H, W, 3) uint8."""
        h, w = frame.shape[:2]
        if self.kind == "colour":
            return np.broadcast_to(np.asarray(self.rgb, np.float32) / 255.0, (h, w, 3))
        if self.kind == "image":
            key = (h, w)
            if key not in self._cache:
                self._cache.clear()
                self._cache[key] = _cover(self.image, w, h)  # type: ignore[arg-type]
            return self._cache[key]
        if self.kind == "blur":
            from PIL import Image, ImageFilter

            radius = self.blur_radius if self.blur_radius is not None else max(h, w) / 40
            img = Image.fromarray(frame).filter(ImageFilter.GaussianBlur(radius))
            return np.asarray(img, np.float32) / 255.0
        raise ValueError("a transparent background has no canvas")


def parse_background(value: str | None, *, default: str = "green") -> Background:
    """Parse a ``--background`` value; raise :class:`InputError` with the reason if bad."""
    from PIL import ImageColor

    value = (value or default).strip()
    low = value.lower()
    if low == "transparent":
        return Background("transparent")
    if low == "blur" or low.startswith("blur:"):
        radius = None
        if ":" in low:
            try:
                radius = float(low.split(":", 1)[1])
            except ValueError:
                radius = -1.0
            if not 0 < radius <= 500:
                raise InputError(f"bad blur strength in {value!r}: use blur or blur:RADIUS "
                                 "with 0 < RADIUS <= 500")
        return Background("blur", blur_radius=radius)
    try:
        rgb = ImageColor.getrgb(value)
        return Background("colour", rgb=tuple(rgb[:3]))  # type: ignore[arg-type]
    except ValueError:
        pass
    path = Path(value).expanduser()
    if path.is_file():
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise InputError(f"background image {path} is not a readable image "
                             f"({type(e).__name__})") from None
        return Background("image", image=path)
    if path.suffix or "/" in value or "\\" in value:
        raise InputError(f"background image not found: {path}")
    raise InputError(f"bad background {value!r}: not a colour, an image file, "
                     "'blur' or 'transparent'")


def _cover(path: Path, w: int, h: int) -> np.ndarray:
    """Load ``path`` scaled to cover (w, h) and centre-cropped: (h, w, 3) float32."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.fit(im.convert("RGB"), (w, h), Image.Resampling.BILINEAR)
        return np.asarray(im, np.float32) / 255.0


def composite(frame: np.ndarray, pha: np.ndarray, fgr: np.ndarray,
              background: Background) -> np.ndarray:
    """Blend one frame.

    frame: (H, W, 3) uint8 source; pha: (H, W) or (H, W, 1) float in [0, 1];
    fgr: (H, W, 3) float in [0, 1]. Returns (H, W, 3) uint8, or (H, W, 4) RGBA uint8 for a
    transparent background.
    """
    a = np.asarray(pha, np.float32).reshape(frame.shape[0], frame.shape[1], 1)
    f = np.asarray(fgr, np.float32)
    if background.has_alpha:
        rgba = np.concatenate([f, a], axis=2)
        return (np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = f * a + background.canvas(frame) * (1 - a)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
