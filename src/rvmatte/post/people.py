"""Person selection: keep only the chosen people in the matte, tracked from frame to frame.

The network mattes everyone. This post-stage processor splits each frame's alpha into people and
keeps the selected ones (alpha set to 0 elsewhere; the composite follows from the alpha)::

    analysis image   the alpha block-averaged to ~480 px on its long side (factor f)
    people           connected regions of alpha > low that reach alpha > high somewhere
                     (hysteresis); regions under min_area of the frame are fragments
    tracks           every person gets a track: its reference mask (as last seen alone), where
                     it is and how it moves; a region goes to the track(s) whose predicted mask
                     (reference mask moved by the track's motion) it overlaps
    selection        on frame ``Selection.frame`` the point / box / mask / N largest picks tracks
    output           the selected tracks' pixels, grown by ``grow`` analysis pixels into pixels
                     nobody owns (soft edges, hair), bilinearly upsampled, times the alpha

What happens when people meet (docs: README "Choosing who is matted"):

- **touching / crossing / occlusion**: their regions merge into one. The merged region is split
  between the tracks it overlaps: each pixel goes to the track whose predicted mask is nearest;
  a pixel inside several predicted masks goes to a selected track (the kept person is kept
  whole; the other person's parts that cover the kept one's silhouette stay while they
  overlap). During a merge the tracks move at their last velocity and keep their reference
  masks, so a long contact does not let one track absorb the other.
- **leaving and coming back**: a track with no region coasts for ``coast`` frames, then is
  lost (the matte is empty if it was the only kept person). A new region is matched to a lost
  track by colour histogram and size; a selected person who comes back is kept again. People
  entering for the first time are not kept (``--people N`` picks on the selection frame).
- small fragments (a detached hand, hair) go to the nearest track within ``reach``.

The state (tracks, counters) is numpy and goes into checkpoints exactly
(:meth:`PeopleFilter.state_arrays` / :meth:`PeopleFilter.load_state`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import InputError


# ---- what the user asks for ---------------------------------------------------------------

def _pair(text: Any, n: int, what: str) -> tuple:
    """``"12,34"`` / ``(12, 34)`` -> ints; one-line InputError otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text) if isinstance(
        text, (tuple, list)) else None
    try:
        vals = tuple(int(round(float(v))) for v in parts) if parts is not None else ()
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != n or any(v < 0 for v in vals):
        form = "X,Y" if n == 2 else "X0,Y0,X1,Y1"
        raise InputError(f"invalid {what} {text!r}: expected {form} (non-negative pixels)")
    return vals


@dataclass(frozen=True)
class Selection:
    """Who is matted. Any of ``points`` (``((x, y), ...)`` pixels on the selection frame),
    ``box`` (``(x0, y0, x1, y1)``), ``mask`` (an image whose non-black pixels cover the
    person(s) to keep), or ``people`` (the N largest people) alone. ``frame``: the frame (of
    the converted range, 0 = its first) the pixels refer to."""

    points: tuple = ()
    box: Optional[tuple] = None
    mask: Optional[str] = None
    people: Optional[int] = None
    frame: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        pts = self.points
        if pts and not isinstance(pts[0], (tuple, list, str)):
            pts = (pts,)  # one point given as (x, y)
        set_(self, "points", tuple(_pair(p, 2, "--select point") for p in pts))
        if self.box is not None:
            b = _pair(self.box, 4, "--select-box")
            if b[2] <= b[0] or b[3] <= b[1]:
                raise InputError(f"invalid --select-box {self.box!r}: X1,Y1 must be right of "
                                 "and below X0,Y0")
            set_(self, "box", b)
        if self.mask is not None:
            set_(self, "mask", str(self.mask))
        if self.people is not None:
            if isinstance(self.people, bool) or not isinstance(self.people, int) or self.people < 1:
                raise InputError(f"invalid --people {self.people!r}: must be a positive integer")
            if self.points or self.box is not None or self.mask is not None:
                raise InputError("--people picks the largest people: use it without --select, "
                                 "--select-box or --select-mask")
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0:
            raise InputError(f"invalid --select-frame {self.frame!r}: must be a frame number "
                             ">= 0")
        if not (self.points or self.box is not None or self.mask is not None or self.people):
            raise InputError("empty selection: give a point, a box, a mask or a number of "
                             "people")

    @classmethod
    def parse(cls, select: Any = None, box: Any = None, mask: Any = None,
              people: Optional[int] = None, frame: Optional[int] = None) -> Optional["Selection"]:
        """From CLI / HTTP strings: ``select`` ``"X,Y"`` or a list of them, ``box``
        ``"X0,Y0,X1,Y1"``, ``mask`` a path, ``people`` N, ``frame`` N. None when nothing
        is selected (``frame`` alone is an error)."""
        if isinstance(select, str):
            select = [select]
        if not select and box is None and mask is None and people is None:
            if frame not in (None, 0):
                raise InputError("--select-frame needs --select, --select-box or --select-mask")
            return None
        return cls(points=tuple(select or ()), box=box, mask=mask, people=people,
                   frame=0 if frame is None else frame)

    @classmethod
    def of(cls, select: Any) -> Optional["Selection"]:
        """The ``select`` argument of ``convert_video`` / ``run_live``: None (everyone), a
        Selection, or an ``(x, y)`` pair (the person at that pixel)."""
        if select is None or isinstance(select, cls):
            return select
        return cls(points=(tuple(select),))

    def identity(self) -> dict:
        """For a checkpoint's fingerprint (the mask file by path, size and time)."""
        mask = None
        if self.mask is not None:
            p = Path(self.mask)
            st = p.stat() if p.is_file() else None
            mask = [str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None]
        return {"points": [list(p) for p in self.points], "box": self.box, "mask": mask,
                "people": self.people, "frame": self.frame}

    def check(self, width: int, height: int) -> Optional[np.ndarray]:
        """Refuse pixels outside a ``width`` x ``height`` frame; load the mask (bool (H,W),
        resized if its size differs but its aspect matches). Returns the mask or None."""
        for x, y in self.points:
            if x >= width or y >= height:
                raise InputError(f"--select {x},{y} is outside the {width}x{height} frame")
        if self.box is not None and (self.box[0] >= width or self.box[1] >= height):
            raise InputError(f"--select-box {','.join(map(str, self.box))} is outside the "
                             f"{width}x{height} frame")
        return None if self.mask is None else load_mask(self.mask, width, height)


def load_mask(path: Any, width: int, height: int) -> np.ndarray:
    """A selection mask image -> bool (H,W): pixels brighter than 127 (or opaque, for an image
    with alpha). Another size with the same aspect (within 1 %) is resized; else refused."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"selection mask not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                g = im.convert("RGBA").getchannel("A")
            else:
                g = im.convert("L")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read selection mask {p}: {e}") from None
    if g.size != (width, height):
        if abs(g.size[0] / g.size[1] - width / height) > 0.01 * width / height:
            raise InputError(f"selection mask {p} is {g.size[0]}x{g.size[1]}, the video "
                             f"{width}x{height} (another aspect ratio)")
        g = g.resize((width, height), Image.NEAREST)
    m = np.asarray(g) > 127
    if not m.any():
        raise InputError(f"selection mask {p} is empty (no pixel brighter than 127)")
    return m


# ---- the analysis image -------------------------------------------------------------------

def analysis_factor(height: int, width: int, long_side: int = 480) -> int:
    """The integer block size that brings the long side to about ``long_side`` px."""
    return max(1, int(math.ceil(max(height, width) / long_side)))


@functools.lru_cache(maxsize=None)
def _kernels():
    from numba import njit

    jit = njit(nogil=True, cache=True, boundscheck=False)

    @jit
    def block_mean(a, f, out):
        h, w = out.shape
        H, W = a.shape
        inv = np.float32(1.0 / (f * f))
        for y in range(h):
            for x in range(w):
                s = np.float32(0.0)
                for dy in range(f):
                    yy = min(y * f + dy, H - 1)
                    for dx in range(f):
                        s += a[yy, min(x * f + dx, W - 1)]
                out[y, x] = s * inv

    @jit
    def apply_weight(pha, w, f):
        """pha (H,W) *= bilinear upsampling of w (h,w) by f (pixel centres aligned)."""
        H, W = pha.shape
        h, ww = w.shape
        inv = 1.0 / f
        for y in range(H):
            sy = (y + 0.5) * inv - 0.5
            y0 = int(math.floor(sy))
            fy = np.float32(sy - y0)
            ya, yb = min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)
            for x in range(W):
                sx = (x + 0.5) * inv - 0.5
                x0 = int(math.floor(sx))
                fx = np.float32(sx - x0)
                xa, xb = min(max(x0, 0), ww - 1), min(max(x0 + 1, 0), ww - 1)
                top = w[ya, xa] + fx * (w[ya, xb] - w[ya, xa])
                bot = w[yb, xa] + fx * (w[yb, xb] - w[yb, xa])
                v = top + fy * (bot - top)
                if v < np.float32(1.0):
                    pha[y, x] *= v

    return block_mean, apply_weight


def small_alpha(pha: np.ndarray, f: int) -> np.ndarray:
    """(H,W) float32 -> block means (ceil(H/f), ceil(W/f)) (edge blocks repeat the edge)."""
    H, W = pha.shape
    out = np.empty((-(-H // f), -(-W // f)), np.float32)
    _kernels()[0](np.ascontiguousarray(pha, np.float32), f, out)
    return out


def components(small: np.ndarray, low: float, high: float) -> tuple[np.ndarray, int]:
    """Hysteresis regions of ``small``: connected (8-neighbour) regions of ``> low`` holding a
    pixel ``> high``. Returns ``(labels int32, count)``, labels 1..count in scan order."""
    from scipy import ndimage

    lab, n = ndimage.label(small > low, structure=np.ones((3, 3), bool))
    if n == 0:
        return lab.astype(np.int32), 0
    strong = np.zeros(n + 1, bool)
    strong[np.unique(lab[small > high])] = True
    strong[0] = False
    remap = np.zeros(n + 1, np.int32)
    remap[strong] = np.arange(1, int(strong.sum()) + 1, dtype=np.int32)
    return remap[lab], int(strong.sum())


# ---- tracking -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PeopleParams:
    low: float = 0.1          # a person's region: alpha above this ...
    high: float = 0.5         # ... holding a pixel above this
    min_area: float = 0.002   # regions smaller than this share of the frame are fragments
    reach: float = 0.04       # fragments within this share of the diagonal join a track
    grow: int = 3             # analysis pixels the kept region grows into unowned pixels
    coast: int = 15           # frames a vanished track moves on before it is lost
    reid: float = 0.75        # histogram similarity (Bhattacharyya) to re-identify a person
    long_side: int = 480      # the analysis image's long side


_HIST_BINS = 4  # per channel: 64 colour bins


@dataclass
class _Track:
    id: int
    selected: bool
    ref_mask: np.ndarray          # bool (h,w), as last seen alone
    ref_pos: np.ndarray           # (y, x) centroid of ref_mask
    pos: np.ndarray               # (y, x) where the track is now
    vel: np.ndarray               # (y, x) per frame
    area: float
    hist: np.ndarray              # (64,) float64, sums to 1
    missing: int = 0
    merged: bool = False

    def predicted(self) -> np.ndarray:
        """The reference mask moved to where the track is expected this frame."""
        dy, dx = np.round(self.pos + self.vel - self.ref_pos).astype(int)
        return _shift(self.ref_mask, int(dy), int(dx))


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def _centroid(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([ys.mean(), xs.mean()]) if len(ys) else np.zeros(2)


def _histogram(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    px = img[m]
    if len(px) == 0:
        return np.full(_HIST_BINS ** 3, 1.0 / _HIST_BINS ** 3)
    q = (px.astype(np.int32) * _HIST_BINS) // 256
    code = (q[:, 0] * _HIST_BINS + q[:, 1]) * _HIST_BINS + q[:, 2]
    h = np.bincount(code, minlength=_HIST_BINS ** 3).astype(np.float64)
    return h / h.sum()


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(a * b).sum())


class PeopleFilter:
    """The post-stage processor of :class:`Selection` for ``width`` x ``height`` frames.

    ``resolved``: track ids to keep from the first frame on (found by a first pass over the
    frames up to ``selection.frame``, :func:`resolve_selection`); without it the selection
    is applied on ``selection.frame``, and everyone is kept before it (a live stream, which
    cannot look ahead; file conversion resolves a later frame first)."""

    def __init__(self, selection: Selection, width: int, height: int,
                 params: PeopleParams = PeopleParams(), *,
                 resolved: Optional[Sequence[int]] = None) -> None:
        self.selection, self.p = selection, params
        self.width, self.height = width, height
        self.mask = selection.check(width, height)
        self.f = analysis_factor(height, width, params.long_side)
        self.resolved = None if resolved is None else tuple(int(i) for i in resolved)
        self.warnings: list = []
        self.reset()

    def reset(self) -> None:
        self.tracks: list[_Track] = []
        self.frame = 0
        self.next_id = 0
        self.owner: Optional[np.ndarray] = None

    # -- the processor protocol ------------------------------------------------------------
    def __call__(self, frames: np.ndarray, pha: np.ndarray, fgr: Optional[np.ndarray] = None
                 ) -> None:
        """``frames`` uint8 (T,H,W,3), ``pha`` float32 (T,H,W) changed in place."""
        for t in range(pha.shape[0]):
            self.frame_weight(frames[t], pha[t], apply=True)

    def tensors(self, src: Any, fgr: Any, pha: Any) -> tuple:
        """``src``/``fgr`` (T,3,H,W), ``pha`` (T,1,H,W) tensors -> ``(fgr, pha)``."""
        import torch

        a = pha[:, 0].detach().float().cpu().numpy().copy()
        img = (src.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
               .permute(0, 2, 3, 1).cpu().numpy())
        self(img, a)
        return fgr, torch.from_numpy(a)[:, None].to(pha.device, pha.dtype)

    # -- one frame -------------------------------------------------------------------------
    def frame_weight(self, image: np.ndarray, pha: np.ndarray, *, apply: bool = True
                     ) -> np.ndarray:
        """Track the people of one frame; returns the analysis-size keep weight (float32) and
        with ``apply`` multiplies ``pha`` (H,W) float32 by it in place."""
        f = self.f
        small = small_alpha(pha, f)
        img = np.ascontiguousarray(image[f // 2::f, f // 2::f][:small.shape[0], :small.shape[1]])
        self.observe(small, img)
        w = self.weight()
        if apply:
            _kernels()[1](pha, w, f)
        self.frame += 1
        return w

    def observe(self, small: np.ndarray, img: np.ndarray) -> None:
        """Update the tracks from one frame's analysis alpha ``small`` and image ``img``."""
        p = self.p
        lab, n = components(small, p.low, p.high)
        h, w = small.shape
        min_px = max(1.0, p.min_area * h * w)
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        big = [c for c in range(1, n + 1) if areas[c] >= min_px]
        owner = np.full((h, w), -1, np.int32)
        active = [t for t in self.tracks if t.missing <= p.coast]
        preds = {t.id: t.predicted() for t in active}
        claims: dict[int, list] = {}
        for t in active:
            ov = np.bincount(lab[preds[t.id]], minlength=n + 1)
            for c in big:
                if ov[c] > 0.1 * min(areas[c], max(t.area, 1.0)):
                    claims.setdefault(c, []).append(t)
        seen: dict[int, np.ndarray] = {}
        merged_ids: set = set()
        for c in big:
            ts = claims.get(c, [])
            region = lab == c
            if len(ts) == 1:
                owner[region] = ts[0].id
            elif len(ts) > 1:
                self._split(region, ts, preds, owner)
                merged_ids.update(t.id for t in ts)
        for c in big:  # regions nobody claimed: a person coming back, or someone new
            if c not in claims:
                region = lab == c
                t = self._reidentify(region, img, areas[c], set(owner[owner >= 0].tolist()))
                owner[region] = t.id
        self._fragments(lab, [c for c in range(1, n + 1) if areas[c] < min_px], owner)
        self._update(owner, img, merged_ids)
        self.owner = owner
        if self.frame == (0 if self.resolved is not None else self.selection.frame):
            self._select(small, lab, owner)

    def _split(self, region: np.ndarray, ts: list, preds: dict, owner: np.ndarray) -> None:
        """A region several tracks claim: each pixel to the nearest predicted mask, a pixel
        inside several (distance 0) to a selected track first."""
        from scipy import ndimage

        order = sorted(ts, key=lambda t: not t.selected)  # selected first: they win ties
        dist = np.stack([ndimage.distance_transform_edt(~preds[t.id]) for t in order])
        pick = np.argmin(dist, axis=0)  # argmin takes the first of equal values
        ids = np.array([t.id for t in order], np.int32)
        owner[region] = ids[pick[region]]

    def _reidentify(self, region: np.ndarray, img: np.ndarray, area: float, taken: set
                    ) -> _Track:
        """A lost track that looks like ``region`` (colour, size), else a new track."""
        hist = _histogram(img, region)
        best, score = None, self.p.reid
        for t in self.tracks:
            if t.missing == 0 or t.id in taken:
                continue
            size = min(area, t.area) / max(area, t.area, 1.0)
            s = _similarity(hist, t.hist) * (0.5 + 0.5 * size)
            if s > score:
                best, score = t, s
        if best is None:
            pos = _centroid(region)
            best = _Track(self.next_id, False, region.copy(), pos, pos.copy(), np.zeros(2),
                          float(area), hist)
            self.next_id += 1
            self.tracks.append(best)
        else:  # back: no velocity across the gap
            best.vel = np.zeros(2)
            best.pos = _centroid(region)
            best.ref_mask, best.ref_pos = region.copy(), best.pos.copy()
        return best

    def _fragments(self, lab: np.ndarray, small_ids: list, owner: np.ndarray) -> None:
        """Small regions join the nearest owned pixels within ``reach`` (ties: selected)."""
        if not small_ids or not (owner >= 0).any():
            return
        from scipy import ndimage

        h, w = owner.shape
        reach = self.p.reach * math.hypot(h, w)
        dist, (iy, ix) = ndimage.distance_transform_edt(owner < 0, return_indices=True)
        for c in small_ids:
            region = lab == c
            k = np.argmin(np.where(region, dist, np.inf))
            y, x = divmod(int(k), w)
            if dist[y, x] <= reach:
                owner[region] = owner[iy[y, x], ix[y, x]]

    def _update(self, owner: np.ndarray, img: np.ndarray, merged_ids: set) -> None:
        """Each track from the pixels it owns this frame."""
        for t in self.tracks:
            m = owner == t.id
            if not m.any():
                t.missing += 1
                if t.missing <= self.p.coast:
                    t.pos = t.pos + t.vel
                    t.vel = t.vel * 0.9
                continue
            if t.id in merged_ids:  # moving through a merge at its own speed
                t.pos, t.merged, t.missing = t.pos + t.vel, True, 0
                continue
            pos = _centroid(m)
            if t.missing == 0 and not t.merged:
                t.vel = 0.5 * t.vel + 0.5 * (pos - t.pos)
            t.pos, t.ref_pos, t.ref_mask = pos, pos.copy(), m
            t.area = float(m.sum())
            t.hist = 0.8 * t.hist + 0.2 * _histogram(img, m)
            t.missing, t.merged = 0, False

    def _select(self, small: np.ndarray, lab: np.ndarray, owner: np.ndarray) -> None:
        if self.resolved is not None:
            ids = set(self.resolved)
        else:
            ids = set(pick_tracks(self.selection, self.mask, owner, self.f, self.tracks,
                                  self.frame, self.warnings))
        for t in self.tracks:
            t.selected = t.id in ids

    def weight(self) -> np.ndarray:
        """Analysis-size weight: 1 on the selected tracks' pixels, grown ``grow`` pixels into
        pixels nobody owns; 0 elsewhere."""
        from scipy import ndimage

        if self.resolved is None and self.frame < self.selection.frame:
            # before the selection frame, with no first pass (a live stream): everyone stays
            return np.ones(self.owner.shape, np.float32)
        sel = [t.id for t in self.tracks if t.selected and t.missing == 0]
        keep = np.isin(self.owner, sel) if sel else np.zeros(self.owner.shape, bool)
        if keep.any() and self.p.grow > 0:
            grown = ndimage.binary_dilation(keep, np.ones((3, 3), bool), self.p.grow)
            keep |= grown & (self.owner < 0)
        return keep.astype(np.float32)

    def selected_ids(self) -> list:
        return [t.id for t in self.tracks if t.selected]

    # -- checkpoint ------------------------------------------------------------------------
    _META = 12

    def state_arrays(self) -> list:
        """``[globals, per-track numbers, reference masks (packed), histograms, owner]``."""
        if self.owner is None:
            return []
        g = np.array([self.frame, self.next_id, len(self.tracks)], np.int64)
        meta = np.array([[t.id, t.selected, *t.ref_pos, *t.pos, *t.vel, t.area, t.missing,
                          t.merged, 0.0] for t in self.tracks], np.float64).reshape(-1, self._META)
        masks = (np.packbits(np.stack([t.ref_mask for t in self.tracks]), axis=-1)
                 if self.tracks else np.zeros((0, 0, 0), np.uint8))
        hists = np.array([t.hist for t in self.tracks], np.float64).reshape(-1, _HIST_BINS ** 3)
        return [g, meta, masks, hists, self.owner.copy()]

    def load_state(self, arrays: list, like: Any = None) -> None:
        self.reset()
        if not arrays:
            return
        g, meta, masks, hists, owner = arrays
        self.frame, self.next_id = int(g[0]), int(g[1])
        self.owner = np.array(owner, np.int32)
        w = self.owner.shape[1]
        for i in range(int(g[2])):
            m = meta[i]
            self.tracks.append(_Track(
                int(m[0]), bool(m[1]), np.unpackbits(masks[i], axis=-1)[:, :w].astype(bool),
                m[2:4].copy(), m[4:6].copy(), m[6:8].copy(), float(m[8]), hists[i].copy(),
                int(m[9]), bool(m[10])))


def pick_tracks(sel: Selection, mask: Optional[np.ndarray], owner: np.ndarray, f: int,
                tracks: list, frame: int, warnings: list) -> list:
    """The track ids ``sel`` designates on an analysis frame whose pixels ``owner`` holds."""
    h, w = owner.shape
    present = [t for t in tracks if (owner == t.id).any()]
    if not present:
        raise InputError(f"no person found on frame {frame} to select (the matte is empty)")
    if sel.people:
        present.sort(key=lambda t: (-int((owner == t.id).sum()), t.id))
        if len(present) < sel.people:
            warnings.append(f"--people {sel.people}: only {len(present)} found on frame "
                            f"{frame}; keeping them all")
        return [t.id for t in present[:sel.people]]
    ids: list = []
    for x, y in sel.points:
        ids.append(_at_point(owner, x // f, y // f, x, y, frame))
    region = np.zeros((h, w), bool)
    if sel.box is not None:
        x0, y0, x1, y1 = sel.box
        region[y0 // f:-(-y1 // f), x0 // f:-(-x1 // f)] = True
    if mask is not None:
        region |= small_alpha(mask.astype(np.float32), f) > 0.5
    if sel.box is not None or mask is not None:
        inside = [(int((region & (owner == t.id)).sum()) / max(1, int((owner == t.id).sum())), t.id)
                  for t in present]
        chosen = [i for share, i in inside if share >= 0.5]
        if not chosen:
            share, best = max(inside)
            if share == 0:
                what = "--select-box" if sel.box is not None else "--select-mask"
                raise InputError(f"{what} covers no person on frame {frame}")
            chosen = [best]
        ids.extend(chosen)
    return sorted(set(ids))


def _at_point(owner: np.ndarray, sx: int, sy: int, x: int, y: int, frame: int) -> int:
    """The track at analysis pixel (sx, sy), or the nearest one within ~5 % of the diagonal."""
    from scipy import ndimage

    h, w = owner.shape
    sx, sy = min(sx, w - 1), min(sy, h - 1)
    if owner[sy, sx] >= 0:
        return int(owner[sy, sx])
    dist, (iy, ix) = ndimage.distance_transform_edt(owner < 0, return_indices=True)
    if dist[sy, sx] > 0.05 * math.hypot(h, w):
        raise InputError(f"no person at {x},{y} on frame {frame}: click on (or next to) the "
                         "person to keep")
    return int(owner[iy[sy, sx], ix[sy, sx]])


def resolve_selection(selection: Selection, alphas, width: int, height: int,
                      params: PeopleParams = PeopleParams()) -> list:
    """Track ids to keep from the first frame on, found by tracking everyone over ``alphas``
    (an iterable of (image uint8 (H,W,3), alpha float32 (H,W)) for frames 0..selection.frame)
    and picking on the last. Used when the selection is on a later frame."""
    import dataclasses

    # a selection frame never reached: everyone is tracked, nobody picked, until the end
    pf = PeopleFilter(dataclasses.replace(selection, frame=10 ** 12), width, height, params)
    last = -1
    for image, pha in alphas:
        pf.frame_weight(image, np.ascontiguousarray(pha, np.float32), apply=False)
        last += 1
    if last < selection.frame:
        raise InputError(f"--select-frame {selection.frame}: the video has only {last + 1} "
                         "frames in the range")
    return pick_tracks(selection, pf.mask, pf.owner, pf.f, pf.tracks, selection.frame,
                       pf.warnings)
