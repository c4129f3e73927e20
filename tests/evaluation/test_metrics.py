"""Each metric on small cases worked out by hand (or from the definition, by explicit loops)."""

import math

import numpy as np
import pytest

from rvmatte import metrics as M


def test_mad_mse_by_hand():
    pred = np.array([[0.0, 1.0], [0.25, 0.5]])
    true = np.array([[0.5, 0.5], [0.25, 0.0]])
    # |d| = .5 .5 0 .5 -> mean .375 ; d^2 = .25 .25 0 .25 -> mean .1875
    assert M.mad(pred, true) == pytest.approx(375.0)
    assert M.mse(pred, true) == pytest.approx(187.5)
    assert M.mad(true, true) == 0 and M.mse(true, true) == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        M.mad(np.zeros((2, 2)), np.zeros((2, 3)))


def test_dtssd_by_hand():
    pred_tm1 = np.zeros((1, 2))
    pred_t = np.array([[1.0, 0.0]])
    true_t = true_tm1 = np.zeros((1, 2))
    # sqrt((1^2 + 0) / 2) * 100
    assert M.dtssd(pred_t, pred_tm1, true_t, true_tm1) == pytest.approx(100 / math.sqrt(2))
    # The same change in prediction and truth is perfectly coherent.
    assert M.dtssd(pred_t, pred_tm1, pred_t, pred_tm1) == 0


def test_fgr_mse_only_where_alpha_positive():
    true_pha = np.array([[0.0, 1.0]])
    true_fgr = np.zeros((1, 2, 3))
    pred_fgr = np.zeros((1, 2, 3))
    pred_fgr[0, 0] = 1.0   # wrong where alpha == 0: ignored
    pred_fgr[0, 1] = 0.5   # off by .5 on all three channels where alpha > 0
    assert M.fgr_mse(pred_fgr, true_fgr, true_pha) == pytest.approx(250.0)
    assert math.isnan(M.fgr_mse(pred_fgr, true_fgr, np.zeros((1, 2))))


def test_conn_by_hand():
    # Nothing of the prediction passes 0.1: every pixel's level is 0, so phi(g) = 1 - 1 = 0
    # and phi(p) = 1 on 4 pixels -> 4 / 1000.
    assert M.conn(np.zeros((2, 2)), np.ones((2, 2))) == pytest.approx(0.004)
    # Pixel 2 leaves the (connected) intersection at t = 0.3: level 0.2. phi(g) = 1 - 0.3,
    # phi(p) = 1 (d = 0 < 0.15). Pixel 1 stays connected to the end: both phi = 1.
    assert M.conn(np.array([[1.0, 0.2]]), np.array([[1.0, 0.5]])) == pytest.approx(0.0003)
    assert M.conn(np.array([[1.0, 0.2]]), np.array([[1.0, 0.2]])) == 0


def test_conn_uses_largest_4_connected_component():
    # Two diagonal pixels are not 4-connected: only one of them is in Omega (the first, by
    # label order); the other gets level 0 although both pass every threshold.
    true = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred = true.copy()
    assert M.conn(pred, true) == 0  # identical mattes: errors cancel
    pred2 = np.array([[1.0, 0.0], [0.0, 0.5]])
    # Pixel (1,1): level 0 (not in the largest component at t=0.1). phi(g) = 0, phi(p) = 0.5.
    assert M.conn(pred2, true) == pytest.approx(0.0005)


def test_grad_filter_shape_and_norm():
    smooth, deriv = M.gaussian_derivative_filters(1.4)
    # half size ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = ceil(3.62) = 4 -> 9 taps
    assert smooth.shape == deriv.shape == (9,)
    k = np.outer(smooth, deriv)
    assert np.sqrt((k ** 2).sum()) == pytest.approx(1.0)
    assert deriv.sum() == pytest.approx(0.0, abs=1e-12)  # odd filter


def _naive_grad(pred, true, sigma=1.4):
    """The official definition with explicit loops: 2-D correlation, replicated border."""
    h = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    g = lambda x: math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    kx = [[g(i - h) * (-(j - h) * g(j - h) / sigma ** 2) for j in range(2 * h + 1)]
          for i in range(2 * h + 1)]
    norm = math.sqrt(sum(v * v for row in kx for v in row))
    kx = [[v / norm for v in row] for row in kx]

    def normed(a):
        lo, hi = a.min(), a.max()
        return np.zeros_like(a) if hi == lo else (a - lo) / (hi - lo)

    def mag(a):
        H, W = a.shape
        out = np.zeros_like(a)
        for y in range(H):
            for x in range(W):
                sx = sy = 0.0
                for i in range(2 * h + 1):
                    for j in range(2 * h + 1):
                        yy = min(max(y + i - h, 0), H - 1)
                        xx = min(max(x + j - h, 0), W - 1)
                        sx += kx[i][j] * a[yy, xx]
                        sy += kx[j][i] * a[yy, xx]  # y filter = transpose
                out[y, x] = math.sqrt(sx * sx + sy * sy)
        return out

    return float(((mag(normed(true)) - mag(normed(pred))) ** 2).sum() / 1e3)


def test_grad_matches_definition():
    rng = np.random.default_rng(0)
    true = np.zeros((7, 12))
    true[:, 6:] = 1.0  # a vertical step edge
    pred = np.clip(true + rng.normal(0, 0.2, true.shape), 0, 1)
    assert M.grad(pred, true) == pytest.approx(_naive_grad(pred, true), rel=1e-9)
    # A constant prediction normalises to zero: the error is the truth's gradient energy.
    assert M.grad(np.full_like(true, 0.3), true) == pytest.approx(
        _naive_grad(np.zeros_like(true), true), rel=1e-9)
    assert M.grad(true, true) == 0


def test_grad_invariant_to_affine_rescaling():
    # Min-max normalisation makes Grad blind to a global gain/offset of either matte.
    rng = np.random.default_rng(1)
    a, b = rng.random((10, 10)), rng.random((10, 10))
    assert M.grad(a, b) == pytest.approx(M.grad(0.5 * a + 0.2, b))


def test_clip_scorer_averages_with_zero_first_dtssd():
    s = M.ClipScorer()
    true = np.zeros((2, 2))
    s.add(np.zeros((2, 2)), true)
    s.add(np.ones((2, 2)), true)
    assert s.frames["dtssd"] == [0.0, pytest.approx(100.0)]
    means = s.means()
    assert means["mad"] == pytest.approx(500.0)
    assert means["dtssd"] == pytest.approx(50.0)
    assert M.mean_of_clips([{"mad": 1.0}, {"mad": 3.0}]) == {"mad": 2.0}


def test_clip_scorer_rejects_unknown_metric():
    with pytest.raises(ValueError):
        M.ClipScorer(metrics=("mad", "sad"))
