"""Matting datasets (foreground + alpha, composited over backgrounds during training).

Layouts (the published ones; roots come from flags or the config file)::

    VideoMatte240K  <root>/fgr/<clip>/<frame>.jpg  and  <root>/pha/<clip>/<frame>.jpg
    ImageMatte      <root>/fgr/<name>.jpg          and  <root>/pha/<name>.jpg
    backgrounds     <root>/<name>.jpg                                   (still images)
    DVM videos      <root>/<clip>/<frame>.jpg      (first ``max_frames`` frames are used)
    synthetic       <root>/fgr/ + <root>/pha/ (or <root>/rgba/*.png) + <root>/backgrounds/

Each ``__getitem__(key)`` returns ``fgr (T,3,S,S)``, ``pha (T,1,S,S)``, ``bgr (T,3,S,S)``
float in [0, 1]. ``key`` is an index or ``(index, seed)``; all randomness of a sample is drawn
from a generator seeded by the key, so a sample does not depend on which worker loads it.
Files are only listed in ``__init__`` and opened inside ``__getitem__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PIL import Image
from torch.utils.data import Dataset

from ...errors import InputError
from ..augment import FrameSampler
from .common import (Key, key_rng, list_dirs, list_images, load_image, match_size,
                     require_dir, require_images, stack, stem_map)

__all__ = ["BackgroundImages", "BackgroundVideos", "Backgrounds", "VideoMatteDataset",
           "ImageMatteDataset", "SyntheticMatteDataset"]

VIDEOMATTE_LAYOUT = "fgr/<clip>/<frame>.jpg and pha/<clip>/<frame>.jpg (VideoMatte240K)"
IMAGEMATTE_LAYOUT = "fgr/<name>.jpg and pha/<name>.jpg with matching names (ImageMatte)"
BGIMAGE_LAYOUT = "a folder of background images (<name>.jpg/.png)"
BGVIDEO_LAYOUT = "<clip>/<frame>.jpg folders (DVM background clips)"
SYNTHETIC_LAYOUT = ("fgr/<name>.png + pha/<name>.png (or rgba/<name>.png with alpha) and "
                    "backgrounds/<name>.jpg")


class BackgroundImages:
    """Still background images; a clip repeats one image (motion comes from augmentation)."""

    def __init__(self, root, size: int) -> None:
        self.root = require_dir(root, "background images", BGIMAGE_LAYOUT)
        self.files = require_images(self.root, "background images", BGIMAGE_LAYOUT)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, rng, T: int, sampler: FrameSampler) -> list[Image.Image]:
        f = self.files[int(rng.integers(len(self.files)))]
        return [load_image(self.root / f, "RGB", self.size)] * T


class BackgroundVideos:
    """Background clips as frame folders (DVM, first ``max_frames`` frames of each)."""

    def __init__(self, root, size: int, max_frames: int = 100) -> None:
        self.root = require_dir(root, "background videos", BGVIDEO_LAYOUT)
        self.clips = list_dirs(self.root)
        self.frames = [list_images(self.root / c)[:max_frames] for c in self.clips]
        keep = [i for i, f in enumerate(self.frames) if f]
        self.clips = [self.clips[i] for i in keep]
        self.frames = [self.frames[i] for i in keep]
        if not self.clips:
            raise InputError(f"background videos: no clip folders with frames in {self.root} "
                             f"(expected {BGVIDEO_LAYOUT})")
        self.size = size

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, rng, T: int, sampler: FrameSampler) -> list[Image.Image]:
        c = int(rng.integers(len(self.clips)))
        frames = self.frames[c]
        start = int(rng.integers(max(1, len(frames) - T)))
        out = []
        for i in sampler(T, rng):
            name = frames[(start + i) % len(frames)]
            out.append(load_image(self.root / self.clips[c] / name, "RGB", self.size))
        return match_size(out, out[0].size)


class Backgrounds:
    """Image and/or video backgrounds, chosen 50/50 when both are given (as in the paper)."""

    def __init__(self, images: Optional[BackgroundImages] = None,
                 videos: Optional[BackgroundVideos] = None) -> None:
        if images is None and videos is None:
            raise InputError("no background images or background videos configured "
                             "(set data.background_images_train and/or data.background_videos_train)")
        self.images, self.videos = images, videos

    def sample(self, rng, T: int, sampler: FrameSampler) -> list[Image.Image]:
        use_video = self.videos is not None and (self.images is None or rng.random() < 0.5)
        src = self.videos if use_video else self.images
        return src.sample(rng, T, sampler)


class _MattingDataset(Dataset):
    def __init__(self, backgrounds: Backgrounds, size: int, seq_length: int,
                 augmentation: Optional[Callable], sampler: Optional[FrameSampler]) -> None:
        self.backgrounds = backgrounds
        self.size = size
        self.seq_length = seq_length
        self.augmentation = augmentation
        self.sampler = sampler or FrameSampler(train=False)

    def _load(self, idx: int, rng) -> tuple[list, list]:
        raise NotImplementedError

    def __getitem__(self, key: Key):
        idx, rng = key_rng(key)
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        fgrs, phas = self._load(idx, rng)
        phas = match_size(phas, fgrs[0].size)
        fgrs = match_size(fgrs, fgrs[0].size)
        bgrs = self.backgrounds.sample(rng, self.seq_length, self.sampler)
        fgr, pha, bgr = stack(fgrs), stack(phas), stack(bgrs)
        if self.augmentation is None:
            from ..augment import videomatte_augmentation
            aug = videomatte_augmentation((self.size, self.size), train=False)
        else:
            aug = self.augmentation
        return aug(fgr, pha, bgr, rng)


class VideoMatteDataset(_MattingDataset):
    """VideoMatte240K: one sample per ``seq_length`` frames of each clip."""

    def __init__(self, root, backgrounds: Backgrounds, size: int, seq_length: int,
                 augmentation: Optional[Callable] = None,
                 sampler: Optional[FrameSampler] = None) -> None:
        super().__init__(backgrounds, size, seq_length, augmentation, sampler)
        self.root = require_dir(root, "VideoMatte240K", VIDEOMATTE_LAYOUT)
        fgr = require_dir(self.root / "fgr", "VideoMatte240K", VIDEOMATTE_LAYOUT)
        pha = require_dir(self.root / "pha", "VideoMatte240K", VIDEOMATTE_LAYOUT)
        self.clips = list_dirs(fgr)
        if not self.clips:
            raise InputError(f"VideoMatte240K: no clip folders in {fgr} (expected {VIDEOMATTE_LAYOUT})")
        self.frames = []
        for clip in self.clips:
            f = list_images(fgr / clip)
            if not (pha / clip).is_dir():
                raise InputError(f"VideoMatte240K: clip {clip!r} has fgr/ frames but no "
                                 f"pha/{clip}/ folder in {self.root} (expected {VIDEOMATTE_LAYOUT})")
            p = list_images(pha / clip)
            if not f or len(f) != len(p):
                raise InputError(f"VideoMatte240K: clip {clip!r} has {len(f)} fgr and {len(p)} "
                                 f"pha frames in {self.root} (expected equal, non-zero counts)")
            self.frames.append((f, p))
        self.index = [(c, s) for c in range(len(self.clips))
                      for s in range(0, len(self.frames[c][0]), seq_length)]

    def __len__(self) -> int:
        return len(self.index)

    def _load(self, idx: int, rng):
        c, start = self.index[idx]
        f, p = self.frames[c]
        clip = self.clips[c]
        fgrs, phas = [], []
        for i in self.sampler(self.seq_length, rng):
            j = (start + i) % len(f)
            fgrs.append(load_image(self.root / "fgr" / clip / f[j], "RGB", self.size))
            phas.append(load_image(self.root / "pha" / clip / p[j], "L", self.size))
        return fgrs, phas


class ImageMatteDataset(_MattingDataset):
    """ImageMatte (AIM + Distinctions-646 humans): each still becomes a clip of T frames."""

    layout = IMAGEMATTE_LAYOUT
    what = "ImageMatte"

    def __init__(self, root, backgrounds: Backgrounds, size: int, seq_length: int,
                 augmentation: Optional[Callable] = None,
                 sampler: Optional[FrameSampler] = None) -> None:
        super().__init__(backgrounds, size, seq_length, augmentation, sampler)
        self.root = require_dir(root, self.what, self.layout)
        self.pairs = self._pairs()

    def _pairs(self) -> list[tuple[Path, Path]]:
        fgr = require_dir(self.root / "fgr", self.what, self.layout)
        pha = require_dir(self.root / "pha", self.what, self.layout)
        f = stem_map(require_images(fgr, self.what, self.layout))
        p = stem_map(require_images(pha, self.what, self.layout))
        missing = sorted(set(f) - set(p))
        if missing:
            raise InputError(f"{self.what}: {len(missing)} foreground(s) without alpha in {pha}, "
                             f"e.g. {missing[0]!r} (expected {self.layout})")
        return [(fgr / f[s], pha / p[s]) for s in sorted(f)]

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, idx: int, rng):
        f, p = self.pairs[idx]
        if p is None:  # RGBA file
            rgba = load_image(f, "RGBA", self.size)
            fgr, pha = rgba.convert("RGB"), rgba.getchannel("A")
        else:
            fgr, pha = load_image(f, "RGB", self.size), load_image(p, "L", self.size)
        return [fgr] * self.seq_length, [pha] * self.seq_length


class SyntheticMatteDataset(ImageMatteDataset):
    """A self-contained matting set made of images with alpha and background images, so the
    whole training loop runs anywhere (``backgrounds/`` inside the root is used unless other
    backgrounds are passed). Images become clips through motion augmentation."""

    layout = SYNTHETIC_LAYOUT
    what = "synthetic matting set"

    def __init__(self, root, size: int, seq_length: int,
                 augmentation: Optional[Callable] = None, sampler: Optional[FrameSampler] = None,
                 backgrounds: Optional[Backgrounds] = None) -> None:
        if backgrounds is None:
            r = require_dir(root, self.what, self.layout)
            backgrounds = Backgrounds(BackgroundImages(require_dir(
                r / "backgrounds", self.what, self.layout), size))
        super().__init__(root, backgrounds, size, seq_length, augmentation, sampler)

    def _pairs(self):
        rgba = self.root / "rgba"
        if rgba.is_dir():
            return [(rgba / f, None) for f in require_images(rgba, self.what, self.layout)]
        return super()._pairs()
