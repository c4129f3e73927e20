"""Person segmentation datasets (trained interleaved with matting, as in the paper).

Layouts::

    COCO panoptic     <root>/train2017/<id>.jpg, <root>/panoptic_train2017/<id>.png,
                      <root>/annotations/panoptic_train2017.json
    YouTubeVIS 2021   <root>/train/JPEGImages/<video>/<frame>.jpg, <root>/train/instances.json
                      (``<root>`` may also be the ``train`` folder itself)
    Supervisely       <root>/img/<name>.png and <root>/seg/<name>.png (binary person masks,
                      as produced by the official ``spd_preprocess.py``)

``__getitem__(key)`` returns ``img (T,3,S,S)``, ``seg (T,1,S,S)`` in [0, 1] (T=1 for images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ...errors import InputError
from ..augment import FrameSampler
from .common import Key, key_rng, load_image, require_dir, require_images, stack, stem_map

__all__ = ["CocoPanopticDataset", "YouTubeVISDataset", "SuperviselyPersonDataset",
           "decode_rle"]

COCO_LAYOUT = ("train2017/<id>.jpg, panoptic_train2017/<id>.png and "
               "annotations/panoptic_train2017.json (COCO panoptic)")
YTVIS_LAYOUT = "train/JPEGImages/<video>/<frame>.jpg and train/instances.json (YouTubeVIS 2021)"
SPD_LAYOUT = "img/<name>.png and seg/<name>.png with matching names (Supervisely Person)"

# COCO panoptic categories treated as "person": person, backpack, tie (as the official code).
COCO_PERSON_IDS = (1, 27, 32)


def _read_json(path: Path, what: str, layout: str) -> dict:
    if not path.is_file():
        raise InputError(f"{what}: annotation file not found: {path} (expected {layout})")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what}: cannot parse {path}: {e}") from None


def _rle_counts_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_rle(rle: dict) -> np.ndarray:
    """COCO run-length encoding (list or compressed string ``counts``) -> uint8 HxW {0,1}."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _rle_counts_from_string(counts)
    flat = np.zeros(h * w, dtype=np.uint8)
    pos = 0
    for i, c in enumerate(counts):
        if i % 2:
            flat[pos:pos + c] = 1
        pos += c
    return flat.reshape(w, h).T  # column-major


class _SegDataset(Dataset):
    def __init__(self, size: int, augmentation: Optional[Callable]) -> None:
        self.size = size
        self.augmentation = augmentation

    def _finish(self, imgs, segs, rng):
        img, seg = stack(imgs), stack(segs)
        if self.augmentation is None:
            from ..augment import SegmentationAugmentation
            aug = SegmentationAugmentation((self.size, self.size), jitter=(0, 0, 0, 0),
                                           p_grayscale=0, p_hflip=0, crop_scale=(1, 1))
        else:
            aug = self.augmentation
        return aug(img, seg, rng)


class CocoPanopticDataset(_SegDataset):
    """COCO panoptic images that contain a person; mask = person + backpack + tie."""

    def __init__(self, root, size: int, augmentation: Optional[Callable] = None,
                 split: str = "train2017") -> None:
        super().__init__(size, augmentation)
        what = "COCO panoptic"
        self.root = require_dir(root, what, COCO_LAYOUT)
        self.imgdir = require_dir(self.root / split, what, COCO_LAYOUT)
        self.anndir = require_dir(self.root / f"panoptic_{split}", what, COCO_LAYOUT)
        data = _read_json(self.root / "annotations" / f"panoptic_{split}.json", what, COCO_LAYOUT)
        if not isinstance(data, dict) or "annotations" not in data:
            raise InputError(f"{what}: panoptic_{split}.json has no 'annotations' list "
                             f"(expected {COCO_LAYOUT})")
        self.items = []
        for a in data["annotations"]:
            ids = [s["id"] for s in a.get("segments_info", ())
                   if s.get("category_id") in COCO_PERSON_IDS]
            if any(s.get("category_id") == 1 for s in a.get("segments_info", ())):
                self.items.append((a["file_name"], ids))
        if not self.items:
            raise InputError(f"{what}: no annotated image contains a person in {self.root}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Key):
        idx, rng = key_rng(key)
        name, ids = self.items[idx]
        img = load_image(self.imgdir / name.replace(".png", ".jpg"), "RGB")
        ann = np.asarray(load_image(self.anndir / name, "RGB")).astype(np.int64)
        ann = ann[..., 0] + 256 * ann[..., 1] + 65536 * ann[..., 2]
        seg = Image.fromarray((np.isin(ann, ids) * 255).astype(np.uint8))
        from .common import shrink
        img, seg = shrink(img, self.size), shrink(seg, self.size, Image.NEAREST)
        return self._finish([img], [seg], rng)


class SuperviselyPersonDataset(_SegDataset):
    """Supervisely Person Dataset as bitmap masks (``img/`` + ``seg/``)."""

    def __init__(self, root, size: int, augmentation: Optional[Callable] = None) -> None:
        super().__init__(size, augmentation)
        what = "Supervisely Person"
        self.root = require_dir(root, what, SPD_LAYOUT)
        img = stem_map(require_images(require_dir(self.root / "img", what, SPD_LAYOUT), what, SPD_LAYOUT))
        seg = stem_map(require_images(require_dir(self.root / "seg", what, SPD_LAYOUT), what, SPD_LAYOUT))
        missing = sorted(set(img) ^ set(seg))
        if missing:
            raise InputError(f"{what}: {len(missing)} image(s) without a matching mask (or mask "
                             f"without image) in {self.root}, e.g. {missing[0]!r} (expected {SPD_LAYOUT})")
        self.items = [(img[s], seg[s]) for s in sorted(img)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Key):
        idx, rng = key_rng(key)
        i, s = self.items[idx]
        img = load_image(self.root / "img" / i, "RGB", self.size)
        seg = load_image(self.root / "seg" / s, "L", self.size, Image.NEAREST)
        if seg.size != img.size:
            seg = seg.resize(img.size, Image.NEAREST)
        seg = seg.point(lambda v: 255 if v > 0 else 0)
        return self._finish([img], [seg], rng)


class YouTubeVISDataset(_SegDataset):
    """YouTubeVIS 2021 videos with person instances; returns clips of ``seq_length`` frames."""

    def __init__(self, root, size: int, seq_length: int, augmentation: Optional[Callable] = None,
                 sampler: Optional[FrameSampler] = None) -> None:
        super().__init__(size, augmentation)
        what = "YouTubeVIS"
        root = require_dir(root, what, YTVIS_LAYOUT)
        if not (root / "JPEGImages").is_dir() and (root / "train").is_dir():
            root = root / "train"
        self.root = root
        self.videodir = require_dir(root / "JPEGImages", what, YTVIS_LAYOUT)
        data = _read_json(root / "instances.json", what, YTVIS_LAYOUT)
        for k in ("videos", "annotations"):
            if k not in data:
                raise InputError(f"{what}: instances.json has no {k!r} list (expected {YTVIS_LAYOUT})")
        person = [c["id"] for c in data.get("categories", []) if c.get("name") == "person"] or [26]
        self.seq_length = seq_length
        self.sampler = sampler or FrameSampler(speeds=(1,))
        masks: dict[int, list[list]] = {}
        for a in data["annotations"]:
            if a.get("category_id") in person:
                frames = masks.setdefault(a["video_id"], [[] for _ in a["segmentations"]])
                for f, m in zip(frames, a["segmentations"]):
                    if m is not None:
                        f.append(m)
        self.masks = masks
        self.videos = {v["id"]: v for v in data["videos"] if v["id"] in masks}
        self.index = [(vid, f) for vid in sorted(self.videos)
                      for f in range(len(self.videos[vid]["file_names"]))]
        if not self.index:
            raise InputError(f"{what}: no video with a person annotation in {root}")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Key):
        idx, rng = key_rng(key)
        vid, start = self.index[idx]
        video = self.videos[vid]
        names = video["file_names"]
        H, W = video["height"], video["width"]
        imgs, segs = [], []
        for t in self.sampler(self.seq_length, rng):
            f = (start + t) % len(names)
            imgs.append(load_image(self.videodir / names[f], "RGB", self.size))
            m = np.zeros((H, W), np.uint8)
            for rle in self.masks[vid][f]:
                m |= decode_rle(rle)
            seg = Image.fromarray(m * 255)
            segs.append(seg.resize(imgs[-1].size, Image.NEAREST) if seg.size != imgs[-1].size else seg)
        return self._finish(imgs, segs, rng)
