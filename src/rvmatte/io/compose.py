"""The one compositor: backgrounds and ``fgr * pha + bg * (1 - pha)``, for every user.

``convert`` composites torch tensors on the model's device (one uint8 conversion at the end);
``live`` composites the numpy frames :class:`~rvmatte.inference.session.Matter` returns
(:func:`composite_frames`, torch-free over a colour); the server parses remote clients'
backgrounds with :func:`safe_background_spec`. The CPU's compiled kernel
(:mod:`rvmatte.runtime.kernels`) is the fast implementation of this same formula, tested to match it
within one level.

Background specs (``--background``): a colour name or ``#rrggbb``, an image path (scaled to
cover the frame), a video path (looped or trimmed to the clip's length), ``blur`` or
``blur:SIGMA`` (the original frame blurred; SIGMA in pixels, default 20) or ``transparent``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import torch

# "green" is a green-screen green, not CSS's dark (0, 128, 0).
NAMED = {"green": (0, 255, 0), "greenscreen": (0, 255, 0), "bluescreen": (0, 71, 187)}
DEFAULT_BLUR_SIGMA = 20.0


def parse_color(text: str) -> Optional[tuple[int, int, int]]:
    """A colour name or ``#rrggbb``/``#rgb`` -> (r, g, b); ``None`` if ``text`` is not a colour."""
    from PIL import ImageColor

    t = text.strip().lower()
    if t in NAMED:
        return NAMED[t]
    if t.startswith("#") or t.replace(" ", "").isalpha():
        try:
            rgb = ImageColor.getrgb(t)
        except ValueError:
            return None
        return tuple(int(v) for v in rgb[:3])
    return None


def to_uint8(x: Any, *, inplace: bool = False) -> Any:
    """float [0, 1] -> uint8, rounded: ``x * 255 + 0.5``, clamped, truncated.

    x: a torch tensor or a float32 numpy array, any shape; the result is of the same kind.
    ``inplace`` reuses ``x`` (a temporary) as scratch."""
    if isinstance(x, np.ndarray):
        y = np.multiply(x, np.float32(255.0), out=x if inplace else None)
        y += np.float32(0.5)
        return np.clip(y, 0, 255, out=y).astype(np.uint8)
    import torch

    x = x.mul_(255.0) if inplace else x.mul(255.0)
    return x.add_(0.5).clamp_(0, 255).to(torch.uint8)


def composite(fgr: Any, pha: Any, bg: Any) -> Any:
    """``fgr * pha + bg * (1 - pha)`` as a linear interpolation from ``bg`` to ``fgr``.

    torch (convert, channels first): fgr (T,3,H,W), pha (T,1,H,W), bg (T or 1,3,H,W); one
    pass with ``torch.lerp``. numpy (live, channels last): fgr (T,H,W,3), pha (T,H,W,1), bg
    broadcastable, e.g. (3,); float32, with the two-sided form ``torch.lerp`` uses (exact at
    pha 0 and 1), so both agree to float rounding. Returns float, the shape of ``fgr``."""
    if isinstance(fgr, np.ndarray):
        bg = np.asarray(bg, np.float32)
        diff = fgr - bg
        low = bg + pha * diff            # exact at pha = 0
        high = fgr - diff * (1 - pha)    # exact at pha = 1
        return np.where(pha < 0.5, low, high)
    import torch

    return torch.lerp(bg.to(fgr.dtype).expand_as(fgr), fgr, pha.expand_as(fgr))


def composite_frames(frames: np.ndarray, fgr: np.ndarray, pha: np.ndarray,
                     background: Optional["Background"], index: int = 0) -> np.ndarray:
    """The frames a viewer sees (live mode), as uint8.

    frames: (T,H,W,3) uint8, the source (blur and video backgrounds are made from it);
    fgr: (T,H,W,3) float32 in [0, 1]; pha: (T,H,W) float32 in [0, 1]; background: a
    :class:`Background`, or ``None`` for transparent; index: output index of the first frame.
    Returns (T,H,W,3) uint8, or (T,H,W,4) RGBA (straight alpha) when transparent."""
    a = np.asarray(pha, np.float32)[..., None]
    if background is None:
        return to_uint8(np.concatenate([fgr, a], axis=-1), inplace=True)
    out = composite(np.asarray(fgr, np.float32), a, background.get_array(frames, index))
    return to_uint8(out, inplace=True)


def cover(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Scale (N,3,h0,w0) float to cover h x w (keeping aspect ratio), centre-crop."""
    from torch.nn import functional as F

    h0, w0 = img.shape[-2:]
    s = max(h / h0, w / w0)
    nh, nw = max(h, math.ceil(h0 * s - 1e-6)), max(w, math.ceil(w0 * s - 1e-6))
    if (nh, nw) != (h0, w0):
        img = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
    top, left = (nh - h) // 2, (nw - w) // 2
    return img[..., top:top + h, left:left + w]


class Background:
    """Produces the background for a chunk of frames. ``None`` background = transparent."""

    name = "background"

    def get(self, src: torch.Tensor, index: int) -> torch.Tensor:
        """``src``: (T,3,H,W) float chunk whose first frame has output index ``index``.
        Returns (T or 1, 3, H, W) float on ``src``'s device."""
        raise NotImplementedError

    def get_array(self, frames: np.ndarray, index: int) -> np.ndarray:
        """:meth:`get` for numpy frames: ``frames`` (T,H,W,3) uint8 whose first frame has
        output index ``index``. Returns (T or 1, H, W, 3) float32 in [0, 1]."""
        import torch

        src = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        return self.get(src.div_(255.0), index).permute(0, 2, 3, 1).float().numpy()

    def close(self) -> None:
        pass


class ColorBackground(Background):
    def __init__(self, rgb: tuple[int, int, int]) -> None:
        self.rgb = rgb
        self.name = "#%02x%02x%02x" % rgb

    def get(self, src, index):
        import torch

        c = torch.tensor(self.rgb, dtype=src.dtype, device=src.device) / 255.0
        return c.view(1, 3, 1, 1).expand(1, 3, *src.shape[-2:])

    def get_array(self, frames, index):
        # torch-free: live's default (green) background on the CPU path; (1, 1, 1, 3)
        # broadcasts over the frame like get()'s expand.
        return (np.asarray(self.rgb, np.float32) / np.float32(255.0)).reshape(1, 1, 1, 3)


class ImageBackground(Background):
    def __init__(self, path: Path) -> None:
        from .readers import _read_image

        self.name = str(path)
        self._img = _read_image(path)
        self._cache: dict = {}

    def get(self, src, index):
        import torch

        key = (tuple(src.shape[-2:]), src.device, src.dtype)
        if key not in self._cache:
            t = torch.from_numpy(np.array(self._img)).permute(2, 0, 1)[None].float().div(255.0)
            self._cache = {key: cover(t, *src.shape[-2:]).to(src.device, src.dtype)}
        return self._cache[key]


class VideoBackground(Background):
    """Frames of a video, looped when the clip is longer, trimmed when shorter."""

    def __init__(self, path: Path) -> None:
        from .readers import Source, probe

        self.name = str(path)
        self._source = Source(probe(path))
        self._iter = None
        self._next = 0  # output index the iterator will produce next

    def _frame(self, index: int) -> np.ndarray:
        if self._iter is None or index < self._next:
            self._iter, self._next = self._source.frames(), 0
        while True:
            try:
                f = next(self._iter)
            except StopIteration:
                if self._next == 0:
                    raise InputError(f"background video {self.name} has no frames") from None
                n = self._next
                index = index % n
                self._iter, self._next = self._source.frames(), 0
                continue
            self._next += 1
            if self._next - 1 == index:
                return f.image
            if self._next - 1 > index:  # looped
                self._iter, self._next = self._source.frames(), 0

    def get(self, src, index):
        import torch

        h, w = src.shape[-2:]
        frames = [self._frame(index + i) for i in range(src.shape[0])]
        t = torch.from_numpy(np.stack(frames)).to(src.device).permute(0, 3, 1, 2).to(src.dtype).div_(255.0)
        return cover(t, h, w)

    def close(self):
        if self._iter is not None:
            self._iter.close()
            self._iter = None


class BlurBackground(Background):
    """The original frame, Gaussian-blurred (computed at reduced resolution for speed)."""

    def __init__(self, sigma: float = DEFAULT_BLUR_SIGMA) -> None:
        self.sigma = sigma
        self.name = f"blur:{sigma:g}"

    def get(self, src, index):
        import torch
        from torch.nn import functional as F

        h, w = src.shape[-2:]
        factor = max(1, int(self.sigma // 4))
        x = src.float()
        if factor > 1:
            x = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="bilinear",
                              align_corners=False, antialias=True)
        sigma = self.sigma / factor
        radius = max(1, int(math.ceil(3 * sigma)))
        k = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
        k = torch.exp(-0.5 * (k / sigma) ** 2)
        k = (k / k.sum()).to(x.dtype)
        c = x.shape[1]
        # replicate padding works for any frame size (reflect needs pad < size)
        x = F.pad(x, (0, 0, radius, radius), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
        x = F.pad(x, (radius, radius, 0, 0), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
        if factor > 1:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x.to(src.dtype)


def parse_background(spec) -> Optional[Background] | str:
    """Parse a ``--background`` value. Returns a :class:`Background`, the string
    ``"transparent"``, or ``None`` (default: decided by the output format)."""
    if spec is None or isinstance(spec, Background):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 3:
        return ColorBackground(tuple(int(v) for v in spec))
    text = str(spec).strip()
    low = text.lower()
    if low in ("", "default"):
        return None
    if low in ("transparent", "none", "alpha"):
        return "transparent"
    if low == "blur" or low.startswith("blur:"):
        sigma = DEFAULT_BLUR_SIGMA
        if ":" in low:
            try:
                sigma = float(low.split(":", 1)[1])
            except ValueError:
                sigma = -1
            if not (0 < sigma <= 500):
                raise InputError(f"invalid blur strength in {text!r}: use blur:SIGMA with SIGMA "
                                 "in (0, 500] pixels, e.g. blur:20")
        return BlurBackground(sigma)
    path = Path(text)
    if path.exists():
        if path.is_dir():
            raise InputError(f"background {text!r} is a directory; expected a colour, an image "
                             "or a video file")
        from .readers import IMAGE_EXTS

        if path.suffix.lower() in IMAGE_EXTS:
            return ImageBackground(path)
        return VideoBackground(path)
    rgb = parse_color(text)
    if rgb is not None:
        return ColorBackground(rgb)
    if any(ch in text for ch in "/\\.") or text.startswith("#"):
        raise InputError(f"background {text!r}: no such file, and not a colour (#rrggbb)")
    raise InputError(f"background {text!r} is not a colour name, #rrggbb, an image or video "
                     "path, 'blur' or 'transparent'")


def load_background(spec: Any, *, default: str = "green") -> Optional[Background]:
    """A ``--background`` value as a :class:`Background`, or ``None`` for transparent; an
    empty or ``"default"`` value is ``default`` (live mode and previews have no output
    format to decide it)."""
    bg = parse_background(spec if spec not in (None, "") else default)
    if bg is None:
        bg = parse_background(default)
    return None if bg == "transparent" else bg


def safe_background_spec(text: Optional[str], *, default: str = "green") -> str:
    """Normalise a background given by a *remote* client (the server): a colour (->
    ``#rrggbb``), ``blur``/``blur:SIGMA`` or ``transparent``. Never a path: a server's files
    are not the client's to name (images are uploaded)."""
    t = (text or default).strip()
    low = t.lower()
    if low in ("transparent", "none", "alpha"):
        return "transparent"
    if low == "blur" or low.startswith("blur:"):
        parse_background(low)  # validates the strength
        return low
    rgb = parse_color(t)
    if rgb is None:
        raise InputError(f"bad background {t!r}: use a colour name or #rrggbb, blur, "
                         "blur:SIGMA, transparent, or image with an uploaded image")
    return "#%02x%02x%02x" % rgb
