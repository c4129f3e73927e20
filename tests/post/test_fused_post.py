"""The post stage on the fused CPU path: the shortcuts the runner takes for it change no bit.

A post stage that replaces the foreground (foreground estimation first) gets only the
network's alpha (``Refiner.alpha_u8``, about half the work of ``floats_u8``); one that mixes
the network's foreground into its estimate in the alpha's soft band (the default foreground
estimation) gets the alpha and the foreground at the band's pixels only
(``Refiner.foreground_at``); the outputs must be those of the full float outputs."""

import numpy as np
import pytest

pytest.importorskip("numba")

from rvmatte.post import ForegroundEstimator, PostChain, Stabilizer  # noqa: E402
from rvmatte.post.foreground import ForegroundParams  # noqa: E402
from rvmatte.runtime import kernels  # noqa: E402


def _frame(h, w, seed):
    """A smooth frame (blobs) with some texture: values across the whole 0..255 range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([np.sin(7 * xx + 3 * yy + c) for c in range(3)], -1) * 110 + 128
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _coefficients(hl, wl, seed):
    rng = np.random.default_rng(seed)
    a = (rng.normal(0, 0.7, (4, hl, wl))).astype(np.float32)
    b = (rng.random((4, hl, wl)) * 1.4 - 0.2).astype(np.float32)  # the clamps matter
    return a, b


@pytest.mark.parametrize("h,w,hl,wl", [(270, 480, 67, 120), (101, 77, 50, 38), (48, 64, 48, 64)])
def test_alpha_alone_is_the_float_outputs_alpha_bit_for_bit(h, w, hl, wl):
    frame = _frame(h, w, h)
    a, b = _coefficients(hl, wl, w)
    ref = kernels.Refiner(2)
    want, fgr, got = (np.empty((h, w), np.float32), np.empty((h, w, 3), np.float32),
                      np.full((h, w), 7, np.float32))
    ref.floats_u8(frame, a, b, fgr, want)
    ref.alpha_u8(frame, a, b, got)
    ref.close()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert 0 < (want == 0).mean() < 1 and 0 < ((want > 0) & (want < 1)).mean()


def _alone() -> ForegroundEstimator:
    """The estimate alone (no share of the network's foreground mixed in)."""
    return ForegroundEstimator(ForegroundParams(network_share=0))


def test_chain_says_whether_it_replaces_the_foreground():
    assert PostChain({"foreground": _alone(), "stabilize": Stabilizer()}).replaces_foreground
    assert not PostChain({"stabilize": Stabilizer()}).replaces_foreground
    assert not PostChain({"stabilize": Stabilizer(), "foreground": _alone()}) \
        .replaces_foreground
    assert not PostChain({}).replaces_foreground
    # the default estimator mixes in the network's foreground: it needs it, on demand
    assert not PostChain({"foreground": ForegroundEstimator()}).replaces_foreground
    assert PostChain({"foreground": ForegroundEstimator(), "stabilize": Stabilizer()}) \
        .foreground_on_demand
    assert not PostChain({"stabilize": Stabilizer(), "foreground": ForegroundEstimator()}) \
        .foreground_on_demand
    assert not PostChain({"foreground": _alone()}).foreground_on_demand


@pytest.mark.parametrize("h,w,hl,wl", [(270, 480, 67, 120), (101, 77, 50, 38)])
def test_foreground_at_some_pixels_is_the_float_outputs_foreground(h, w, hl, wl):
    frame = _frame(h, w, h + 1)
    a, b = _coefficients(hl, wl, w + 1)
    ref = kernels.Refiner(2)
    pha, want = np.empty((h, w), np.float32), np.empty((h, w, 3), np.float32)
    ref.floats_u8(frame, a, b, want, pha)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, h, 500), rng.integers(0, w, 500)
    ys[:4], xs[:4] = [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]  # the corners (edge clamps)
    band = (ys.astype(np.int64) << 32) | xs
    got = np.full((len(band), 3), 7, np.float32)
    ref.foreground_at(frame, a, b, band, got)
    ref.close()
    np.testing.assert_allclose(got, want[ys, xs], rtol=0, atol=2e-6)
    assert 0 < (got == 0).mean() < 1 and 0 < ((got > 0) & (got < 1)).mean()


@pytest.mark.parametrize("options", [{"foreground": _alone},
                                     {"foreground": _alone, "stabilize": Stabilizer},
                                     {"foreground": ForegroundEstimator},
                                     {"foreground": ForegroundEstimator, "stabilize": Stabilizer}])
def test_fused_finish_outputs_as_with_the_full_float_outputs(options):
    """FusedRunner.finish with the chain (alpha only, or alpha and the foreground on demand)
    and with the same processors behind a plain function (no ``replaces_foreground`` or
    ``foreground_on_demand``: the full float outputs): the same bytes."""
    from rvmatte.runtime.fused import FusedRunner

    runner = FusedRunner.__new__(FusedRunner)  # the full-resolution half only: no network
    runner.refine = kernels.Refiner(2)
    frames = np.stack([_frame(90, 160, s) for s in range(3)])
    coefs = [_coefficients(23, 40, s) for s in range(3)]
    outs = ("composite_yuv", "alpha_yuv", "rgba", "foreground")
    fast, full = (PostChain({k: make() for k, make in options.items()}) for _ in range(2))
    plain = lambda f, p, g: full(f, p, g)  # noqa: E731
    assert fast.replaces_foreground or fast.foreground_on_demand
    assert not hasattr(plain, "replaces_foreground") and not hasattr(plain, "foreground_on_demand")
    for t in range(3):
        got = runner.finish(frames[t:t + 1], coefs[t:t + 1], outputs=outs, post=fast)
        want = runner.finish(frames[t:t + 1], coefs[t:t + 1], outputs=outs, post=plain)
        for k in outs:
            assert np.array_equal(got[k], want[k]), (t, k)
    runner.close()
