"""Augmentation as the paper describes it (Sec. 4.1, "Data augmentation").

Motion augmentation: affine translation, scale, rotation, shear, brightness, saturation,
contrast, hue, noise and blur whose parameters move smoothly over the clip (interpolated
between two random end points along a random easing curve), applied independently to the
foreground and the background. Temporal augmentation (clip reversal, speed change, frame
skipping) lives in :class:`FrameSampler`; random pause here. Discrete: horizontal flip,
grayscale, sharpening.

All randomness comes from a ``numpy.random.Generator`` passed in (seeded per sample by the
dataset), never from global state. Tensors: ``fgr (T,3,H,W)``, ``pha (T,1,H,W)``,
``bgr (T,3,H',W')`` float in [0, 1]. Every geometric operation is applied to foreground and
alpha *together* (as one 4-channel tensor), so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

Rng = np.random.Generator
BILINEAR = InterpolationMode.BILINEAR

# ------------------------------------------------------------------------- easing curves


def _bounce_out(t: float) -> float:
    n, d = 7.5625, 2.75
    if t < 1 / d:
        return n * t * t
    if t < 2 / d:
        t -= 1.5 / d
        return n * t * t + 0.75
    if t < 2.5 / d:
        t -= 2.25 / d
        return n * t * t + 0.9375
    t -= 2.625 / d
    return n * t * t + 0.984375


def _in_out(f: Callable[[float], float]) -> Callable[[float], float]:
    return lambda t: f(2 * t) / 2 if t < 0.5 else 1 - f(2 - 2 * t) / 2


def _out(f: Callable[[float], float]) -> Callable[[float], float]:
    return lambda t: 1 - f(1 - t)


_EASE_IN: dict[str, Callable[[float], float]] = {
    "quad": lambda t: t ** 2,
    "cubic": lambda t: t ** 3,
    "quartic": lambda t: t ** 4,
    "quintic": lambda t: t ** 5,
    "sine": lambda t: 1 - math.cos(t * math.pi / 2),
    "circular": lambda t: 1 - math.sqrt(max(0.0, 1 - t * t)),
    "exponential": lambda t: 0.0 if t == 0 else 2 ** (10 * (t - 1)),
    "back": lambda t: t ** 3 - t * math.sin(t * math.pi),
    "elastic": lambda t: math.sin(13 * math.pi / 2 * t) * 2 ** (10 * (t - 1)),
    "bounce": lambda t: 1 - _bounce_out(1 - t),
}

EASINGS: list[Callable[[float], float]] = []
for _f in _EASE_IN.values():
    EASINGS += [_f, _out(_f), _in_out(_f)]
EASINGS.append(lambda t: 0.0 if t < 0.5 else 1.0)  # step: a sudden change


def random_easing(rng: Rng) -> Callable[[float], float]:
    """Linear 20 % of the time, otherwise one of the classic easing curves (or a step)."""
    if rng.random() < 0.2:
        return lambda t: t
    return EASINGS[int(rng.integers(len(EASINGS)))]


def _progress(rng: Rng, T: int) -> list[float]:
    ease = random_easing(rng)
    return [ease(t / (T - 1)) if T > 1 else 0.0 for t in range(T)]


def _lerp(a, b, p):
    return a * (1 - p) + b * p


# ------------------------------------------------------------------------- frame sampling


@dataclass
class FrameSampler:
    """Temporal augmentation: which frame offsets make a clip of ``T`` frames.

    Speed change / frame skipping (``speeds``: 0.5 repeats frames, 2-5 skip frames), a random
    shift, and clip reversal (probability ``p_reverse``). ``train=False`` gives 0..T-1.
    """

    speeds: Sequence[float] = (0.5, 1, 2, 3, 4, 5)
    p_reverse: float = 0.5
    train: bool = True

    def __call__(self, T: int, rng: Rng) -> list[int]:
        if not self.train:
            return list(range(T))
        speed = self.speeds[int(rng.integers(len(self.speeds)))]
        shift = int(rng.integers(T))
        frames = [int(i * speed) + shift for i in range(T)]
        if rng.random() < self.p_reverse:
            frames.reverse()
        return frames


# ------------------------------------------------------------------------- primitives


def _affine_params(rng: Rng, scale_range=(0.9, 1.1), degrees=10.0, translate=0.1, shear=5.0):
    return dict(angle=float(rng.uniform(-degrees, degrees)),
                tx=float(rng.uniform(-translate, translate)),
                ty=float(rng.uniform(-translate, translate)),
                scale=float(rng.uniform(*scale_range)),
                shx=float(rng.uniform(-shear, shear)),
                shy=float(rng.uniform(-shear, shear)))


def _affine(x: Tensor, p: dict) -> Tensor:
    h, w = x.shape[-2:]
    return TF.affine(x, angle=p["angle"], translate=[round(p["tx"] * w), round(p["ty"] * h)],
                     scale=p["scale"], shear=[p["shx"], p["shy"]], interpolation=BILINEAR)


def motion_affine(rng: Rng, *clips: Tensor) -> list[Tensor]:
    """Affine transform moving smoothly from one random pose to another over the clip; the
    same per-frame transform applies to every clip passed (translation relative to size)."""
    T = clips[0].shape[0]
    a, b = _affine_params(rng), _affine_params(rng)
    prog = _progress(rng, T)
    out = [c.clone() for c in clips]
    for t, p in enumerate(prog):
        pt = {k: _lerp(a[k], b[k], p) for k in a}
        for c in out:
            c[t] = _affine(c[t], pt)
    return out


def static_affine(rng: Rng, clip: Tensor, scale_range) -> Tensor:
    """One random affine transform for the whole clip."""
    return _affine(clip, _affine_params(rng, scale_range=scale_range))


def resized_crop(rng: Rng, clip: Tensor, size: tuple[int, int],
                 ratio=(0.9, 1.1), scale=(1.0, 1.0)) -> Tensor:
    """Random crop (area fraction ``scale``, aspect ``ratio`` of the target) resized to ``size``."""
    H, W = clip.shape[-2:]
    th, tw = size
    for _ in range(10):
        area = H * W * rng.uniform(*scale)
        ar = (tw / th) * math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(area * ar)))
        h = int(round(math.sqrt(area / ar)))
        if 0 < w <= W and 0 < h <= H:
            break
    else:  # fall back to the largest crop of the target aspect
        ar = tw / th
        w, h = (W, int(round(W / ar))) if W / H < ar else (int(round(H * ar)), H)
        w, h = max(1, min(w, W)), max(1, min(h, H))
    top = int(rng.integers(H - h + 1))
    left = int(rng.integers(W - w + 1))
    return TF.resized_crop(clip, top, left, h, w, list(size), interpolation=BILINEAR,
                           antialias=True)


def motion_color_jitter(rng: Rng, clip: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue drifting smoothly over the clip."""
    ends = rng.normal(0, 0.1, size=8)
    strength = rng.random() * 0.2
    prog = _progress(rng, clip.shape[0])
    out = clip.clone()
    for t, p in enumerate(prog):
        p = p * strength
        b = max(1 + _lerp(ends[0], ends[1], p), 0.1)
        c = max(1 + _lerp(ends[2], ends[3], p), 0.1)
        s = max(1 + _lerp(ends[4], ends[5], p), 0.1)  # official code reuses brightness here
        h = min(0.5, max(-0.5, _lerp(ends[6], ends[7], p) * 0.1))
        x = TF.adjust_brightness(out[t], float(b))
        x = TF.adjust_contrast(x, float(c))
        x = TF.adjust_saturation(x, float(s))
        out[t] = TF.adjust_hue(x, float(h)).clamp(0, 1)
    return out


def motion_noise(rng: Rng, *clips: Tensor) -> list[Tensor]:
    """Film-grain noise (grain size 1-4 px, mono or colour), fresh every frame."""
    grain = rng.random() * 3 + 1
    mono = rng.random() < 0.5
    amount = rng.random() * 0.2 / grain
    g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    out = []
    for c in clips:
        T, C, H, W = c.shape
        n = torch.randn((T, 1 if mono else C, max(1, round(H / grain)), max(1, round(W / grain))),
                        generator=g) * amount
        if grain != 1:
            n = F.interpolate(n, (H, W), mode="bilinear", align_corners=False)
        out.append((c + n).clamp(0, 1))
    return out


def motion_blur(rng: Rng, *clips: Tensor) -> list[Tensor]:
    """Gaussian blur whose sigma (0-10 px) drifts over the clip."""
    a, b = rng.random() * 10, rng.random() * 10
    prog = _progress(rng, clips[0].shape[0])
    out = [c.clone() for c in clips]
    for t, p in enumerate(prog):
        sigma = max(_lerp(a, b, p), 0.0)
        if sigma < 0.05:
            continue
        k = int(sigma * 2) | 1
        for c in out:
            if min(c.shape[-2:]) > k:
                c[t] = TF.gaussian_blur(c[t], [k, k], [sigma, sigma])
    return out


def random_pause(rng: Rng, *clips: Tensor) -> list[Tensor]:
    """Freeze a random stretch of the clip on one frame (same stretch for all clips)."""
    T = clips[0].shape[0]
    if T < 2:
        return list(clips)
    start = int(rng.integers(T - 1))
    length = int(rng.integers(T - start))
    out = [c.clone() for c in clips]
    for c in out:
        c[start + 1:start + length] = c[start]
    return out


def sharpen(factor: float, *clips: Tensor) -> list[Tensor]:
    """Sharpness as PIL/torchvision define it (blend with a 3x3 smoothed copy; borders kept),
    for any number of channels so foreground and alpha are sharpened together."""
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13
    out = []
    for c in clips:
        T, C, H, W = c.shape
        if H < 3 or W < 3:
            out.append(c)
            continue
        smooth = c.clone()
        inner = F.conv2d(c.reshape(T * C, 1, H, W), k.to(c)[None, None]).reshape(T, C, H - 2, W - 2)
        smooth[..., 1:-1, 1:-1] = inner
        out.append((smooth + factor * (c - smooth)).clamp(0, 1))
    return out


def grayscale(*clips: Tensor) -> list[Tensor]:
    return [TF.rgb_to_grayscale(c, num_output_channels=3) for c in clips]


# ------------------------------------------------------------------------- pipelines


@dataclass
class MotionAugmentation:
    """The matting augmentation; probabilities default to the VideoMatte240K ones of the
    official release. ``__call__(fgr, pha, bgr, rng) -> (fgr, pha, bgr)`` at ``size``."""

    size: tuple[int, int]
    p_fgr_affine: float = 0.3
    p_bgr_affine: float = 0.3
    p_noise: float = 0.1
    p_color_jitter: float = 0.3
    p_grayscale: float = 0.02
    p_sharpness: float = 0.1
    p_blur: float = 0.02
    p_hflip: float = 0.5
    p_pause: float = 0.03
    static_affine: bool = True
    aspect_ratio: tuple[float, float] = (0.9, 1.1)

    def __call__(self, fgr: Tensor, pha: Tensor, bgr: Tensor, rng: Rng):
        fp = torch.cat([fgr, pha], dim=1)  # geometry acts on fgr and alpha as one tensor
        if rng.random() < self.p_fgr_affine:
            (fp,) = motion_affine(rng, fp)
        if rng.random() < self.p_bgr_affine / 2:
            (bgr,) = motion_affine(rng, bgr)
        if rng.random() < self.p_bgr_affine / 2:  # camera motion: both move together
            fp, bgr = motion_affine(rng, fp, bgr)
        if self.static_affine:
            fp = static_affine(rng, fp, (0.5, 1.0))
            bgr = static_affine(rng, bgr, (1.0, 1.5))
        fp = resized_crop(rng, fp, self.size, self.aspect_ratio)
        bgr = resized_crop(rng, bgr, self.size, self.aspect_ratio)
        if rng.random() < self.p_hflip:
            fp = fp.flip(-1)
        if rng.random() < self.p_hflip:
            bgr = bgr.flip(-1)
        fgr, pha = fp[:, :3], fp[:, 3:]
        if rng.random() < self.p_noise:
            fgr, bgr = motion_noise(rng, fgr, bgr)
        if rng.random() < self.p_color_jitter:
            fgr = motion_color_jitter(rng, fgr)
        if rng.random() < self.p_color_jitter:
            bgr = motion_color_jitter(rng, bgr)
        if rng.random() < self.p_grayscale:
            fgr, bgr = grayscale(fgr, bgr)
        fp = torch.cat([fgr, pha], dim=1)
        if rng.random() < self.p_sharpness:
            fp, bgr = sharpen(float(rng.random() * 8), fp, bgr)
        if rng.random() < self.p_blur / 3:
            (fp,) = motion_blur(rng, fp)
        if rng.random() < self.p_blur / 3:
            (bgr,) = motion_blur(rng, bgr)
        if rng.random() < self.p_blur / 3:
            fp, bgr = motion_blur(rng, fp, bgr)
        if rng.random() < self.p_pause:
            fp, bgr = random_pause(rng, fp, bgr)
        fp = fp.clamp(0, 1)
        return fp[:, :3].contiguous(), fp[:, 3:].contiguous(), bgr.clamp(0, 1).contiguous()


def videomatte_augmentation(size: tuple[int, int], train: bool = True) -> MotionAugmentation:
    if not train:
        return MotionAugmentation(size, 0, 0, 0, 0, 0, 0, 0, 0, 0, static_affine=False,
                                  aspect_ratio=(1.0, 1.0))
    return MotionAugmentation(size)


def imagematte_augmentation(size: tuple[int, int], train: bool = True) -> MotionAugmentation:
    """Still images become clips through strong foreground motion (p=0.95)."""
    if not train:
        return videomatte_augmentation(size, train=False)
    return MotionAugmentation(size, p_fgr_affine=0.95, p_bgr_affine=0.3, p_noise=0.05,
                              p_color_jitter=0.3, p_grayscale=0.03, p_sharpness=0.05,
                              p_blur=0.02, p_hflip=0.5, p_pause=0.03)


@dataclass
class SegmentationAugmentation:
    """Image/video segmentation: one random resized crop, colour jitter, grayscale and flip for
    the whole clip. ``__call__(img (T,3,H,W), seg (T,1,H,W), rng)``."""

    size: tuple[int, int]
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.15)
    p_grayscale: float = 0.05
    p_hflip: float = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)
    motion: bool = False  # smooth affine motion (used to turn images into clips)

    def __call__(self, img: Tensor, seg: Tensor, rng: Rng):
        x = torch.cat([img, seg], dim=1)
        if self.motion:
            (x,) = motion_affine(rng, x)
        x = resized_crop(rng, x, self.size, (0.9, 1.1), self.crop_scale)
        img, seg = x[:, :3], x[:, 3:]
        b, c, s, h = self.jitter
        order = rng.permutation(4)
        fb, fc, fs = (float(rng.uniform(max(0, 1 - v), 1 + v)) for v in (b, c, s))
        fh = float(rng.uniform(-h, h))
        for i in order:
            if i == 0:
                img = TF.adjust_brightness(img, fb)
            elif i == 1:
                img = TF.adjust_contrast(img, fc)
            elif i == 2:
                img = TF.adjust_saturation(img, fs)
            else:
                img = TF.adjust_hue(img, fh)
        if rng.random() < self.p_grayscale:
            (img,) = grayscale(img)
        if rng.random() < self.p_hflip:
            img, seg = img.flip(-1), seg.flip(-1)
        return img.clamp(0, 1).contiguous(), seg.clamp(0, 1).contiguous()
