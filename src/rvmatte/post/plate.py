"""Background plate: a photo of the empty scene from the same camera, used after the network.

With the background ``B`` known, each frame is ``I = a F + (1 - a) B``. Per frame (numpy; the
full-resolution part is one numba pass)::

    align     B moved onto the frame: translation by phase correlation then two Lucas-Kanade
              steps on background pixels, at ~480 px (sub-pixel), and a per-channel gain
              (exposure); B warped bilinearly at full size when it moved
    noise     sigma: the robust spread of I - B over background pixels (alpha < 0.02)
    match     share of background pixels within k sigma of B; under ``mismatch`` the plate
              does not fit this frame (camera moved away, light changed): the frame is left
              as the network made it and a warning counts such frames (on the first frame:
              an error, the plate matches nothing)
    regions   regions of the alpha (as in rvmatte.post.people) whose pixels mostly match B
              within noise are background (a person on a poster, a screen): alpha 0
    pixels    alpha below ``soft_alpha`` where I matches B within k sigma: 0 (haze, spill)
    colour    I = aF + (1 - a)B puts F on the ray from B through I: F is the point of that
              ray nearest the network's colour (the old background's share, spill and halo,
              is taken out; the alpha's own errors do not enter), weighted by how far I is
              from B against the noise; the network's colour where alpha >= 0.98

The state is a few counters (:meth:`PlateFilter.state_arrays`), so a resumed conversion
gives the same bytes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError, RvmatteError
from .people import components, small_alpha


@dataclass(frozen=True)
class PlateParams:
    frames: int = 30            # frames of a plate video averaged
    k: float = 3.0              # "matches the plate": within k sigma
    min_sigma: float = 1.0 / 255
    max_sigma: float = 6.0 / 255
    region_differs: float = 0.2  # a region with fewer differing pixels than this is background
    region_diff: float = 0.06   # low-res difference that counts as "differs"
    soft_alpha: float = 0.3     # pixel clean-up only below this alpha
    kappa: float = 0.1          # |I - B|^2 at which the colour is half corrected (x 27 sigma^2)
    mismatch: float = 0.5       # a frame whose background matches less than this: no plate
    max_shift: float = 0.05     # camera motion beyond this share of the width: no plate
    long_side: int = 480        # the alignment / region analysis image


def load_plate(path: Any, width: int, height: int, frames: int = 30) -> tuple[np.ndarray, list]:
    """The plate as float32 (H,W,3) in [0, 1] for ``width`` x ``height`` frames, and warnings.
    An image, or a video whose first ``frames`` frames are averaged. Another size with the
    same aspect ratio (within 1 %) is resized (a warning); another aspect is refused."""
    from ..io.readers import read_frames

    p = Path(path)
    if not p.exists():
        raise InputError(f"background plate not found: {p}")
    try:
        imgs = read_frames(p, max_frames=frames)
    except RvmatteError as e:
        raise InputError(f"cannot read background plate {p}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a decoder's own error: one line
        raise InputError(f"cannot read background plate {p}: {type(e).__name__}") from None
    if len(imgs) == 0:
        raise InputError(f"background plate {p} holds no frame")
    plate = imgs.astype(np.float32).mean(0) / np.float32(255)
    warnings = []
    h, w = plate.shape[:2]
    if (w, h) != (width, height):
        if abs(w / h - width / height) > 0.01 * width / height:
            raise InputError(f"background plate {p} is {w}x{h}, the video {width}x{height}: "
                             "another aspect ratio (crop the plate to the video's framing)")
        from PIL import Image

        img = Image.fromarray(np.clip(plate * 255 + 0.5, 0, 255).astype(np.uint8))
        plate = np.asarray(img.resize((width, height), Image.BICUBIC), np.float32) / 255
        warnings.append(f"background plate {p} is {w}x{h}: resized to the video's "
                        f"{width}x{height}")
    return np.ascontiguousarray(plate, np.float32), warnings


@functools.lru_cache(maxsize=None)
def _kernels():
    from numba import njit

    jit = njit(nogil=True, cache=True, boundscheck=False)

    @jit
    def warp(plate, dy, dx, out):
        """out (H,W,3) = plate sampled at (y - dy, x - dx), bilinear, edges repeated."""
        H, W = plate.shape[0], plate.shape[1]
        xs0 = np.empty(W, np.int64)
        xs1 = np.empty(W, np.int64)
        fxs = np.empty(W, np.float32)
        for x in range(W):
            sx = min(max(x - dx, 0.0), W - 1.0)
            x0 = min(int(sx), W - 2) if W > 1 else 0
            xs0[x], xs1[x], fxs[x] = x0, min(x0 + 1, W - 1), np.float32(sx - x0)
        for y in range(H):
            sy = min(max(y - dy, 0.0), H - 1.0)
            y0 = min(int(sy), H - 2) if H > 1 else 0
            fy = np.float32(sy - y0)
            y1 = min(y0 + 1, H - 1)
            for x in range(W):
                x0, x1, fx = xs0[x], xs1[x], fxs[x]
                for c in range(3):
                    a = plate[y0, x0, c] + fx * (plate[y0, x1, c] - plate[y0, x0, c])
                    b = plate[y1, x0, c] + fx * (plate[y1, x1, c] - plate[y1, x0, c])
                    out[y, x, c] = a + fy * (b - a)

    @jit
    def solve(img, plate, gain, pha, fgr, want_f, thr, soft, kappa, near, f):
        """The per-pixel clean-up and foreground colour (see the module's docstring);
        pixels without alpha outside ``near`` (analysis size: around the alpha) are skipped."""
        H, W = pha.shape
        hn, wn = near.shape
        s = np.float32(1.0 / 255.0)
        one = np.float32(1.0)
        d = np.empty(3, np.float32)
        b = np.empty(3, np.float32)
        for y in range(H):
            yn = min(y // f, hn - 1)
            for x in range(W):
                a = pha[y, x]
                if a <= np.float32(0.0) and not near[yn, min(x // f, wn - 1)]:
                    continue
                n2 = np.float32(0.0)
                dmax = np.float32(0.0)
                for c in range(3):
                    b[c] = plate[y, x, c] * gain[c]
                    d[c] = np.float32(img[y, x, c]) * s - b[c]
                    n2 += d[c] * d[c]
                    dmax = max(dmax, abs(d[c]))
                if a > np.float32(0.0) and a < soft and dmax < thr:
                    a = np.float32(0.0)  # the plate within noise: background
                    pha[y, x] = a
                if not want_f or a >= np.float32(0.98):
                    continue
                # F on the ray from B through I (I = aF + (1-a)B), at the point nearest the
                # network's colour: the old background's share (spill) is taken out
                dot = np.float32(0.0)
                for c in range(3):
                    dot += (fgr[y, x, c] - b[c]) * d[c]
                t = min(max(dot / (n2 + np.float32(1e-6)), one), np.float32(20.0))
                w = n2 / (n2 + kappa)             # I too close to B: the ray is noise
                keep = min(max((a - np.float32(0.9)) / np.float32(0.08), np.float32(0.0)), one)
                wr = w * (one - keep)             # confident interior: the network's colour
                for c in range(3):
                    v = wr * (b[c] + t * d[c]) + (one - wr) * fgr[y, x, c]
                    fgr[y, x, c] = min(max(v, np.float32(0.0)), one)

    @jit
    def small_rgb(img, f, scale, out):
        """out (h,w,3) = block means of img (H,W,3) (uint8 or float) times scale."""
        h, w = out.shape[0], out.shape[1]
        H, W = img.shape[0], img.shape[1]
        inv = np.float32(scale / (f * f))
        for y in range(h):
            for x in range(w):
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                s2 = np.float32(0.0)
                for dy in range(f):
                    yy = min(y * f + dy, H - 1)
                    for dx in range(f):
                        xx = min(x * f + dx, W - 1)
                        s0 += np.float32(img[yy, xx, 0])
                        s1 += np.float32(img[yy, xx, 1])
                        s2 += np.float32(img[yy, xx, 2])
                out[y, x, 0] = s0 * inv
                out[y, x, 1] = s1 * inv
                out[y, x, 2] = s2 * inv

    return warp, solve, small_rgb


def rgb_small(rgb: np.ndarray, f: int) -> np.ndarray:
    """(H,W,3) uint8 or float [0,1] -> (ceil(H/f), ceil(W/f), 3) float32 block means in
    [0, 1]."""
    H, W = rgb.shape[:2]
    out = np.empty((-(-H // f), -(-W // f), 3), np.float32)
    _kernels()[2](np.ascontiguousarray(rgb), f, 1.0 / 255 if rgb.dtype == np.uint8 else 1.0,
                  out)
    return out


@functools.lru_cache(maxsize=8)
def _window(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """The translation (dy, dx) that moves ``b`` onto ``a`` (sub-pixel), and the peak's
    strength (0..1)."""
    h, w = a.shape
    win = _window(h, w)
    A = np.fft.rfft2((a - a.mean()) * win)
    B = np.fft.rfft2((b - b.mean()) * win)
    r = A * np.conj(B)
    r /= np.abs(r) + 1e-9
    c = np.fft.irfft2(r, s=(h, w))
    k = int(np.argmax(c))
    py, px = divmod(k, w)

    def sub(m1, m0, p1):
        den = m1 - 2 * m0 + p1
        return 0.0 if abs(den) < 1e-12 else 0.5 * (m1 - p1) / den

    dy = py + sub(c[(py - 1) % h, px], c[py, px], c[(py + 1) % h, px])
    dx = px + sub(c[py, (px - 1) % w], c[py, px], c[py, (px + 1) % w])
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    return float(dy), float(dx), float(c[py, px])


def _lk_refine(a: np.ndarray, b: np.ndarray, bg: np.ndarray, dy: float, dx: float,
               steps: int = 2) -> tuple[float, float]:
    """Lucas-Kanade steps of the translation moving ``b`` (h,w,3) onto ``a`` (h,w) over
    ``bg`` pixels."""
    warp = _kernels()[0]
    moved = np.empty_like(b)
    for _ in range(steps):
        warp(b, float(dy), float(dx), moved)
        bw = moved.mean(2)
        gy, gx = np.gradient(bw)
        it = (a - bw)[bg]
        gy, gx = gy[bg], gx[bg]
        m = np.array([[gy @ gy, gy @ gx], [gy @ gx, gx @ gx]])
        if np.linalg.cond(m) > 1e6:
            break
        # a(x) ~ b(x - d) : moving b by +delta changes it by -grad . delta
        d = np.linalg.solve(m, np.array([-(gy @ it), -(gx @ it)]))
        dy, dx = dy + float(d[0]), dx + float(d[1])
        if abs(d[0]) + abs(d[1]) < 0.01:
            break
    return dy, dx


def _near(a_small: np.ndarray) -> np.ndarray:
    """Analysis pixels within two of any alpha: where the foreground colour is solved."""
    from scipy import ndimage

    return ndimage.binary_dilation(a_small > 0.002, np.ones((3, 3), bool), 2)


def _half(g: np.ndarray) -> np.ndarray:
    h, w = g.shape[0] // 2 * 2, g.shape[1] // 2 * 2
    return g[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))


class PlateFilter:
    """The post-stage processor of a background plate (``path``) for ``width`` x ``height``
    frames. ``warnings``: lines for the conversion's result."""

    def __init__(self, path: Any, width: int, height: int,
                 params: PlateParams = PlateParams()) -> None:
        self.p = params
        self.plate, self._load_warnings = load_plate(path, width, height, params.frames)
        self.f = max(1, int(math.ceil(max(height, width) / params.long_side)))
        self.small_rgb = rgb_small(self.plate, self.f)
        self.small = self.small_rgb.mean(2)
        self.small_half = _half(self.small)
        self._warped: Optional[np.ndarray] = None
        self.last = {}  # the last frame's measurements (shift, gain, sigma, match)
        self.load_state([])

    # -- state -------------------------------------------------------------------------------
    def state_arrays(self) -> list:
        """Counters, and the shift of the warped plate in use (empty: none)."""
        at = np.array([] if self._warped_at is None else self._warped_at, np.float64)
        return [np.array([self.frame, self.mismatched, self.first_mismatch], np.int64), at]

    def load_state(self, arrays: list, like: Any = None) -> None:
        self.frame, self.mismatched, self.first_mismatch = (
            (int(v) for v in arrays[0]) if arrays else (0, 0, -1))
        at = arrays[1] if len(arrays) > 1 else ()
        self._warped_at = (float(at[0]), float(at[1])) if len(at) == 2 else None
        self._warped_ok = False

    @property
    def warnings(self) -> list:
        out = list(self._load_warnings)
        if self.mismatched:
            out.append(f"the background plate did not match {self.mismatched} frame(s) (the "
                       f"first: frame {self.first_mismatch}; the camera moved or the light "
                       "changed): they were matted without it")
        return out

    # -- the processor protocol --------------------------------------------------------------
    def __call__(self, frames: np.ndarray, pha: np.ndarray, fgr: Optional[np.ndarray]) -> None:
        """``frames`` uint8 (T,H,W,3); ``pha`` float32 (T,H,W), ``fgr`` float32 (T,H,W,3)
        or None, changed in place."""
        for t in range(frames.shape[0]):
            self.frame_apply(np.ascontiguousarray(frames[t]), pha[t],
                             None if fgr is None else fgr[t])

    def tensors(self, src: Any, fgr: Any, pha: Any) -> tuple:
        import torch

        a = pha[:, 0].detach().float().cpu().numpy().copy()
        f = fgr.detach().float().permute(0, 2, 3, 1).cpu().numpy().copy()
        img = (src.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
               .permute(0, 2, 3, 1).cpu().numpy())
        self(img, a, f)
        return (torch.from_numpy(f).permute(0, 3, 1, 2).to(fgr.device, fgr.dtype),
                torch.from_numpy(a)[:, None].to(pha.device, pha.dtype))

    # -- one frame ---------------------------------------------------------------------------
    def frame_apply(self, img: np.ndarray, pha: np.ndarray, fgr: Optional[np.ndarray]) -> bool:
        """One frame in place; returns whether the plate was used."""
        p, f = self.p, self.f
        index = self.frame
        self.frame += 1
        a_small = small_alpha(pha, f)
        i_small = rgb_small(img, f)
        plate, ok = self._align(i_small.mean(2), a_small)
        if ok:
            gain, sigma, share = self._fit(img, plate, pha)
            ok = share >= p.mismatch
            self.last.update(gain=gain, sigma=sigma, match=share)
        if not ok:
            if index == 0:
                raise InputError("the background plate matches nothing on the first frame "
                                 f"(only {100 * self.last.get('match', 0):.0f} % of the "
                                 "background agrees): is it a photo of this scene, from this "
                                 "camera?")
            self.mismatched += 1
            if self.first_mismatch < 0:
                self.first_mismatch = index
            return False
        self._regions(i_small, plate, gain, pha, a_small)
        solve = _kernels()[1]
        thr = np.float32(p.k * sigma)
        kappa = np.float32(p.kappa * 27 * sigma * sigma)
        near = _near(a_small) if fgr is not None else np.zeros((1, 1), np.bool_)
        solve(img, plate, gain, pha, fgr if fgr is not None else np.zeros((1, 1, 3), np.float32),
              fgr is not None, thr, np.float32(p.soft_alpha), kappa, near, f)
        return True

    def _align(self, g_small: np.ndarray, a_small: np.ndarray) -> tuple[np.ndarray, bool]:
        """The plate moved onto the frame (itself when it did not move); False when the
        motion is beyond ``max_shift``."""
        bg = a_small < 0.02
        # coarse: phase correlation at half the analysis size; fine: Lucas-Kanade on the
        # background pixels (people moving in front do not pull the estimate)
        dy, dx, _ = phase_shift(_half(g_small), self.small_half)
        dy, dx = 2 * dy, 2 * dx
        if bg.sum() > 100:
            dy, dx = _lk_refine(g_small, self.small_rgb, bg, dy, dx)
        f, (h, w) = self.f, self.small.shape
        dy, dx = dy * f, dx * f
        self.last.update(shift=(dy, dx))
        if math.hypot(dy, dx) > self.p.max_shift * w * f:
            return self.plate, False
        if abs(dy) < 0.25 and abs(dx) < 0.25:
            return self.plate, True
        at = self._warped_at
        if at is not None and math.hypot(dy - at[0], dx - at[1]) < 0.1:
            dy, dx = at  # (about) the motion of the last warp: reused (part of the state)
        else:
            self._warped_at = (dy, dx)
            self._warped_ok = False
        if self._warped is None:
            self._warped = np.empty_like(self.plate)
        if not self._warped_ok:
            _kernels()[0](self.plate, float(dy), float(dx), self._warped)
            self._warped_ok = True
        return self._warped, True

    def _fit(self, img: np.ndarray, plate: np.ndarray, pha: np.ndarray
             ) -> tuple[np.ndarray, float, float]:
        """Per-channel gain, noise sigma and the share of background pixels that match, from
        a grid of samples where alpha < 0.02."""
        p = self.p
        step = 2 * self.f
        i = img[::step, ::step].reshape(-1, 3).astype(np.float32) / 255
        b = plate[::step, ::step].reshape(-1, 3)
        bg = pha[::step, ::step].reshape(-1) < 0.02
        if bg.sum() < 50:
            return np.ones(3, np.float32), p.max_sigma, 1.0  # nothing to measure: trust it
        i, b = i[bg], b[bg]
        gain = np.clip(np.median(i, 0) / np.maximum(np.median(b, 0), 1e-3), 0.5, 2.0)
        d = np.abs(i - b * gain).max(1)
        sigma = float(np.clip(np.median(d) / 1.2, p.min_sigma, p.max_sigma))  # max of 3
        share = float((d < p.k * sigma + 0.02).mean())
        return gain.astype(np.float32), sigma, share

    def _regions(self, i_s: np.ndarray, plate: np.ndarray, gain: np.ndarray, pha: np.ndarray,
                 a_small: np.ndarray) -> None:
        """Regions of the alpha that mostly match the plate: alpha 0 (posters, screens).

        The regions are those of the confident alpha (> 0.5), so a false positive joined to
        the person only by a haze of low alpha is judged on its own, while a person's shirt
        that happens to match the wall is part of the person's region (kept). A dropped region
        also takes the matching low alpha around it."""
        from scipy import ndimage

        from .people import _kernels as people_kernels

        p, f = self.p, self.f
        lab, n = components(a_small, 0.5, 0.5)
        if n == 0:
            return
        b_s = (self.small_rgb if plate is self.plate else rgb_small(plate, f)) * gain
        differs = np.abs(i_s - b_s).max(2) > p.region_diff
        counts = np.bincount(lab.ravel(), minlength=n + 1)
        diff = np.bincount(lab.ravel(), weights=differs.ravel(), minlength=n + 1)
        bad = [c for c in range(1, n + 1) if diff[c] < p.region_differs * counts[c]]
        if not bad:
            return
        keep = np.isin(lab, [c for c in range(1, n + 1) if c not in bad])
        free = (a_small > 0.01) & ~ndimage.binary_dilation(differs | keep, iterations=1)
        drop = ndimage.binary_propagation(np.isin(lab, bad), mask=free | np.isin(lab, bad))
        drop = ndimage.binary_dilation(drop, np.ones((3, 3), bool), 1) & ~keep
        people_kernels()[1](pha, (~drop).astype(np.float32), f)
