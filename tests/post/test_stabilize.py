"""Temporal stabilisation: holds still regions, never lags a moving edge, one formula in
numba and torch, exact through its state."""

import numpy as np
import pytest

from rvmatte.post.stabilize import StabilizeParams, Stabilizer, weight


def _noisy(rng, base, sigma=2.0):
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


def _edge(h, w, x0):
    """An image with a bright person-like block left of column x0, and its alpha."""
    img = np.full((h, w, 3), 60.0)
    img[:, :x0] = (200, 150, 120)
    a = np.zeros((h, w), np.float32)
    a[:, :x0] = 1
    return img, a


def test_still_region_flicker_is_reduced():
    rng = np.random.default_rng(0)
    base, a = _edge(40, 64, 30)
    st = Stabilizer()
    raw, out = [], []
    for t in range(30):
        pha = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1).astype(np.float32)[None]
        raw.append(pha[0].copy())
        st(_noisy(rng, base)[None], pha, None)
        out.append(pha[0].copy())
    d_raw = np.abs(np.diff(np.array(raw), axis=0)).mean()
    d_out = np.abs(np.diff(np.array(out), axis=0)).mean()
    assert d_out < 0.5 * d_raw
    assert abs(np.mean(out[-1]) - a.mean()) < 0.01  # no drift


def test_moving_edge_is_not_lagged():
    """The edge jumps 6 px: the frame it moves in already has the network's alpha there."""
    rng = np.random.default_rng(1)
    st = Stabilizer()
    for t in range(5):
        base, a = _edge(40, 64, 30)
        st(_noisy(rng, base)[None], a[None].copy(), None)
    base, a = _edge(40, 64, 36)
    pha = a[None].copy()
    st(_noisy(rng, base)[None], pha, None)
    np.testing.assert_allclose(pha[0][:, 29:38], a[:, 29:38], atol=1e-6)


def test_scene_cut_resets():
    st = Stabilizer()
    a = np.full((1, 16, 16), 0.2, np.float32)
    st(np.zeros((1, 16, 16, 3), np.uint8), a, None)
    b = np.full((1, 16, 16), 0.25, np.float32)
    st(np.full((1, 16, 16, 3), 255, np.uint8), b, None)
    assert np.all(b == np.float32(0.25))


def test_weight_formula():
    p = StabilizeParams()
    assert weight(0, 0) == pytest.approx(p.w_max)
    assert weight(p.tau_image, 0) == 0 and weight(0, p.tau_alpha) == 0


def test_state_round_trip_is_exact():
    rng = np.random.default_rng(2)
    base, a = _edge(24, 32, 12)
    frames = [_noisy(rng, base) for _ in range(6)]
    alphas = [np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32) for _ in range(6)]
    fgrs = [rng.random((24, 32, 3)).astype(np.float32) for _ in range(6)]

    def run(split):
        st, outs = Stabilizer(), []
        for t in range(6):
            if t == split:
                saved = st.state_arrays()
                st = Stabilizer(threads=2)
                st.load_state(saved)
            p, f = alphas[t][None].copy(), fgrs[t][None].copy()
            st(frames[t][None], p, f)
            outs.append((p, f))
        return outs

    for (p1, f1), (p2, f2) in zip(run(-1), run(3)):
        assert np.array_equal(p1, p2) and np.array_equal(f1, f2)


def test_torch_matches_numba():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    base, a = _edge(24, 32, 12)
    s1, s2 = Stabilizer(), Stabilizer()
    for t in range(5):
        img = _noisy(rng, base)
        pha = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
        fgr = rng.random((24, 32, 3)).astype(np.float32)
        p1, f1 = pha[None].copy(), fgr[None].copy()
        s1(img[None], p1, f1)
        src = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        f2, p2 = s2.tensors(src, torch.from_numpy(fgr).permute(2, 0, 1)[None],
                            torch.from_numpy(pha)[None, None])
        np.testing.assert_allclose(p2[0, 0].numpy(), p1[0], atol=2e-5)
        np.testing.assert_allclose(f2[0].permute(1, 2, 0).numpy(), f1[0], atol=2e-5)


def _reference_step(img, prev, pha, prev_pha, fgr, prev_fgr, p=StabilizeParams()):
    """One frame of the formula in plain float32 numpy and Python loops, in the kernels'
    order of operations (the running row sum included): what the numba kernels must equal
    bit for bit, however they are arranged for speed."""
    f32 = np.float32
    H, W = pha.shape
    r = p.radius
    d = (np.abs(img.astype(np.int32) - prev).sum(2).astype(f32) * f32(1.0 / (3.0 * 255.0)))
    hsum = np.empty((H, W), f32)
    for y in range(H):
        acc = f32(0)
        for x in range(min(r, W)):
            acc = f32(acc + d[y, x])
        for x in range(W):
            if x + r < W:
                acc = f32(acc + d[y, x + r])
            if x - r - 1 >= 0:
                acc = f32(acc - d[y, x - r - 1])
            hsum[y, x] = acc
    pha, fgr = pha.copy(), fgr.copy()
    for y in range(H):
        y0, y1 = max(y - r, 0), min(y + r, H - 1)
        col = hsum[y0].copy()
        for yy in range(y0 + 1, y1 + 1):
            col = col + hsum[yy]
        for x in range(W):
            n = f32((y1 - y0 + 1) * (min(x + r, W - 1) - max(x - r, 0) + 1))
            dd = col[x] / n * f32(1 / p.tau_image)
            a, q0 = pha[y, x], prev_pha[y, x]
            da = (a - q0) * f32(1 / p.tau_alpha)
            q = dd * dd + da * da
            if q < 1:
                w = f32(p.w_max) * (f32(1) - q) * (f32(1) - q)
                pha[y, x] = a + w * (q0 - a)
                fgr[y, x] = fgr[y, x] + w * (prev_fgr[y, x] - fgr[y, x])
    return pha, fgr


@pytest.mark.parametrize("threads", [1, 3])
def test_kernels_equal_the_plain_formula_bit_for_bit(threads):
    """Odd sizes (rows not a multiple of the kernels' groups of 4), any split into bands."""
    rng = np.random.default_rng(4)
    base, a = _edge(23, 37, 15)
    frames = [_noisy(rng, base, 6.0) for _ in range(4)]
    alphas = [np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32) for _ in range(4)]
    fgrs = [rng.random((23, 37, 3)).astype(np.float32) for _ in range(4)]
    st = Stabilizer(threads=threads)
    ref = (alphas[0], fgrs[0])
    st(frames[0][None], alphas[0][None].copy(), fgrs[0][None].copy())
    for t in range(1, 4):
        p, f = alphas[t][None].copy(), fgrs[t][None].copy()
        st(frames[t][None], p, f)
        ref = _reference_step(frames[t], frames[t - 1], alphas[t], *ref[:1], fgrs[t], ref[1])
        assert np.array_equal(p[0], ref[0]) and np.array_equal(f[0], ref[1])
        assert (p[0] != alphas[t]).any()  # it did hold something


def test_strided_foreground_is_stabilised_in_place():
    """A foreground that is a strided view (a tensor's permuted memory, as live mode passes)
    is changed in place, as a contiguous one is."""
    rng = np.random.default_rng(5)
    base, a = _edge(20, 28, 10)
    s1, s2 = Stabilizer(), Stabilizer()
    for t in range(3):
        img = _noisy(rng, base)[None]
        pha = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)[None]
        fgr = rng.random((1, 20, 28, 3)).astype(np.float32)
        strided = np.ascontiguousarray(fgr.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
        assert not strided.flags.c_contiguous
        p1, p2 = pha.copy(), pha.copy()
        s1(img, p1, fgr)
        s2(img, p2, strided)
        assert np.array_equal(p1, p2) and np.array_equal(fgr, strided)
    assert s2.prev_fgr.flags.c_contiguous
