"""Matting metrics, defined as in the evaluation of the RVM paper (Lin et al., WACV 2022).

All functions take alpha mattes as float arrays in [0, 1] of the same shape ``(H, W)``.
Scalings follow the official evaluation scripts so that numbers are comparable with the
paper's tables:

========  ===========================================================  =========
metric    definition (per frame)                                       scaling
========  ===========================================================  =========
MAD       mean |p - g|                                                 x 1e3
MSE       mean (p - g)^2                                               x 1e3
Grad      sum (|grad p_n| - |grad g_n|)^2, Gaussian-derivative filters  / 1e3
          (sigma 1.4) on min-max normalised mattes p_n, g_n
Conn      sum |phi(p) - phi(g)|, connectivity with threshold step 0.1   / 1e3
dtSSD     sqrt( sum ((p_t - p_t-1) - (g_t - g_t-1))^2 / N )             x 1e2
fgr MSE   mean (F_p - F_g)^2 over the pixels (and channels) with g > 0  x 1e3
========  ===========================================================  =========

Per clip, each metric is averaged over frames; a benchmark averages the clip means. As in the
official scripts, dtSSD of the first frame of a clip counts as 0 in the clip mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "ALPHA_METRICS", "mad", "mse", "grad", "conn", "dtssd", "fgr_mse", "gaussian_derivative_filters",
    "ClipScorer", "mean_of_clips",
]

# Keys of the alpha metrics, in report order.
ALPHA_METRICS = ("mad", "mse", "grad", "conn", "dtssd")


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {true.shape}")
    return pred, true


def mad(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute difference ``mean(|p - g|) * 1e3``."""
    pred, true = _check_pair(pred, true)
    return float(np.abs(pred - true).mean() * 1e3)


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error ``mean((p - g)^2) * 1e3``."""
    pred, true = _check_pair(pred, true)
    return float(((pred - true) ** 2).mean() * 1e3)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(x ** 2) / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))


def gaussian_derivative_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """The separable factors of the Grad metric's x filter: ``(smooth, derivative)``.

    The 2-D x filter is ``K[i, j] = G(i - h) * G'(j - h)`` normalised to unit L2 norm, with
    ``G`` the Gaussian of ``sigma``, ``G'(x) = -x G(x) / sigma^2`` and half size
    ``h = ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon)))`` (h = 4, a 9x9 filter, for
    sigma = 1.4). ``K`` is the outer product of the two returned 1-D factors (each of unit norm,
    so ``K`` has unit norm); the y filter is its transpose.
    """
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    smooth = _gaussian(x, sigma)
    deriv = -x * _gaussian(x, sigma) / sigma ** 2
    return smooth / np.linalg.norm(smooth), deriv / np.linalg.norm(deriv)


def _minmax(a: np.ndarray) -> np.ndarray:
    # Constant images normalise to zeros (what OpenCV's NORM_MINMAX does in the official code).
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= np.finfo(np.float64).eps:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _gradient_magnitude(a: np.ndarray, sigma: float) -> np.ndarray:
    smooth, deriv = gaussian_derivative_filters(sigma)
    # Correlation (not convolution) with replicated borders, as cv2.filter2D(BORDER_REPLICATE).
    gx = ndimage.correlate1d(ndimage.correlate1d(a, smooth, axis=0, mode="nearest"),
                             deriv, axis=1, mode="nearest")
    gy = ndimage.correlate1d(ndimage.correlate1d(a, deriv, axis=0, mode="nearest"),
                             smooth, axis=1, mode="nearest")
    return np.sqrt(gx ** 2 + gy ** 2)


def grad(pred: np.ndarray, true: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error ``sum((|∇p_n| - |∇g_n|)^2) / 1e3``.

    ``p_n``, ``g_n`` are the mattes min-max normalised to [0, 1]; ``|∇·|`` is the magnitude of
    the responses to the Gaussian-derivative x and y filters of
    :func:`gaussian_derivative_filters` (correlation, replicated borders).
    """
    pred, true = _check_pair(pred, true)
    diff = _gradient_magnitude(_minmax(true), sigma) - _gradient_magnitude(_minmax(pred), sigma)
    return float((diff ** 2).sum() / 1e3)


_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def conn(pred: np.ndarray, true: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error ``sum(|phi(p) - phi(g)|) / 1e3``.

    For thresholds ``t_k = k * step`` (k = 1..1/step), ``Omega_k`` is the largest 4-connected
    component of ``(g >= t_k) & (p >= t_k)``. Each pixel's level ``l`` is the threshold
    ``t_(k-1)`` of the first ``k`` whose ``Omega_k`` does not contain it (1 if every one does).
    With ``d = a - l``, ``phi(a) = 1 - d * [d >= 0.15]``.
    """
    pred, true = _check_pair(pred, true)
    thresholds = np.arange(0, 1 + step, step)  # the same float steps as the official code
    level = np.full(true.shape, -1.0)
    for k in range(1, len(thresholds)):
        both = (true >= thresholds[k]) & (pred >= thresholds[k])
        labels, n = ndimage.label(both, structure=_FOUR_CONNECTED)
        omega = np.zeros(true.shape, dtype=bool)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            omega = labels == int(np.argmax(sizes)) + 1
        level[(level == -1) & ~omega] = thresholds[k - 1]
    level[level == -1] = 1.0
    true_d = true - level
    pred_d = pred - level
    true_phi = 1 - true_d * (true_d >= 0.15)
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    return float(np.abs(true_phi - pred_phi).sum() / 1e3)


def dtssd(pred_t: np.ndarray, pred_tm1: np.ndarray, true_t: np.ndarray, true_tm1: np.ndarray) -> float:
    """Temporal coherence ``sqrt(sum(((p_t - p_t-1) - (g_t - g_t-1))^2) / N) * 1e2``, N pixels."""
    pred_t, true_t = _check_pair(pred_t, true_t)
    pred_tm1, true_tm1 = _check_pair(pred_tm1, true_tm1)
    d = (pred_t - pred_tm1) - (true_t - true_tm1)
    return float(math.sqrt((d ** 2).sum() / true_t.size) * 1e2)


def fgr_mse(pred_fgr: np.ndarray, true_fgr: np.ndarray, true_pha: np.ndarray) -> float:
    """Foreground MSE ``mean((F_p - F_g)^2) * 1e3`` over all channels of pixels where ``g > 0``.

    ``pred_fgr``, ``true_fgr``: (H, W, 3) in [0, 1]; ``true_pha``: (H, W). NaN if ``g`` is 0
    everywhere.
    """
    pred_fgr, true_fgr = _check_pair(pred_fgr, true_fgr)
    mask = np.asarray(true_pha) > 0
    if not mask.any():
        return float("nan")
    return float(((pred_fgr[mask] - true_fgr[mask]) ** 2).mean() * 1e3)


@dataclass
class ClipScorer:
    """Accumulates per-frame metrics over one clip, in frame order.

    ``add(pred, true)`` scores a frame (and, from the second frame on, dtSSD against the
    previous one); ``frames`` holds the per-frame values, ``means()`` the clip means.
    """

    metrics: tuple[str, ...] = ALPHA_METRICS
    frames: dict[str, list[float]] = field(default_factory=dict)
    _prev: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(ALPHA_METRICS) - {"fgr_mse"}
        if unknown:
            raise ValueError(f"unknown metrics: {sorted(unknown)}")
        self.frames = {m: [] for m in self.metrics}

    def add(self, pred: np.ndarray, true: np.ndarray, pred_fgr: np.ndarray | None = None,
            true_fgr: np.ndarray | None = None) -> dict[str, float]:
        pred, true = _check_pair(pred, true)
        row: dict[str, float] = {}
        for name, fn in (("mad", mad), ("mse", mse), ("grad", grad), ("conn", conn)):
            if name in self.metrics:
                row[name] = fn(pred, true)
        if "dtssd" in self.metrics:
            row["dtssd"] = 0.0 if self._prev is None else dtssd(pred, self._prev[0], true, self._prev[1])
        if "fgr_mse" in self.metrics and pred_fgr is not None and true_fgr is not None:
            row["fgr_mse"] = fgr_mse(pred_fgr, true_fgr, true)
        self._prev = (pred, true)
        for name, value in row.items():
            self.frames[name].append(value)
        return row

    def means(self) -> dict[str, float]:
        out = {}
        for name, values in self.frames.items():
            finite = [v for v in values if not math.isnan(v)]
            if finite:
                out[name] = float(np.mean(finite))
        return out


def mean_of_clips(clip_means: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-clip means into benchmark numbers (each clip weighs the same)."""
    acc: dict[str, list[float]] = {}
    for means in clip_means:
        for name, value in means.items():
            acc.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in acc.items()}
