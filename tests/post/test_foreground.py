"""Foreground estimation recovers a known foreground from a composite."""

import numpy as np

from rvmatte.post import ForegroundEstimator
from rvmatte.post.foreground import estimate_foreground


def _scene(h=96, w=128):
    yy, xx = np.mgrid[:h, :w]
    a = np.clip((xx - 0.4 * w) / 12.0, 0, 1).astype(np.float32)     # a soft edge
    a[(yy - h // 2) ** 2 + (xx - 0.75 * w) ** 2 < (h / 6) ** 2] = 0.5  # "hair": half cover
    F = np.stack([0.9 + 0 * yy, 0.3 + 0.2 * np.sin(yy / 9), 0.2 + 0 * xx], -1)
    B = np.stack([0.1 + 0 * yy, 0.5 + 0.3 * np.cos(xx / 7), 0.85 + 0 * xx], -1)
    img = a[..., None] * F + (1 - a[..., None]) * B
    return (img * 255 + 0.5).astype(np.uint8), a, F.astype(np.float32)


def test_recovers_known_foreground_better_than_naive():
    img, a, F = _scene()
    est = estimate_foreground(img, a)
    m = a > 0.05
    naive = img.astype(np.float32) / 255  # the frame itself (what F = I assumes)
    err = ((est - F)[m] ** 2).mean()
    assert err < 0.25 * ((naive - F)[m] ** 2).mean()
    assert np.abs(est[a == 1] - img[a == 1] / 255).mean() < 0.01  # opaque: about the frame


def test_band_only_equals_full_solve_where_it_matters():
    from rvmatte.post.foreground import ForegroundParams

    img, a, F = _scene()
    fast = estimate_foreground(img, a)
    full = estimate_foreground(img, a, params=ForegroundParams(skip_flat=False))
    m = (a > 0.05) & (a < 1)
    assert np.abs(fast[m] - full[m]).mean() < 0.02


def test_processor_protocol_in_place():
    img, a, F = _scene(32, 40)
    fgr = np.zeros((1, 32, 40, 3), np.float32)
    ForegroundEstimator()(img[None], a[None], fgr)
    assert fgr.any() and ForegroundEstimator().state_arrays() == []
