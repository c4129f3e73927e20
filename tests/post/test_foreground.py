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


def test_torch_version_agrees_with_numba_and_recovers_the_foreground():
    """The GPU path's PyTorch solve, run on the CPU: about the numba result (only the sweep
    order differs), as good against the known foreground, opaque pixels the frame."""
    import torch

    from rvmatte.post.foreground import estimate_foreground_torch

    img, a, F = _scene()
    ref = estimate_foreground(img, a)
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    got = estimate_foreground_torch(src, torch.from_numpy(a)[None, None])
    assert got.shape == (1, 3, *a.shape) and got.dtype == torch.float32
    got = got[0].permute(1, 2, 0).numpy()
    band, m = (a > 0.05) & (a < 1), a > 0.05
    assert np.abs(got - ref)[band].mean() < 0.01
    naive = img.astype(np.float32) / 255
    err = ((got - F)[m] ** 2).mean()
    assert err < 1.1 * ((ref - F)[m] ** 2).mean() and err < 0.25 * ((naive - F)[m] ** 2).mean()
    assert np.abs(got[a == 1] - naive[a == 1]).mean() < 0.01  # opaque: about the frame


def test_processor_tensors_choose_the_solver_by_device():
    import torch

    img, a, F = _scene(32, 40)
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    pha = torch.from_numpy(a)[None, None]
    fgr = torch.zeros_like(src, dtype=torch.float16)
    auto, forced = ForegroundEstimator(), ForegroundEstimator(impl="torch")
    assert not auto.uses_torch("cpu") and auto.uses_torch("cuda") and forced.uses_torch("cpu")
    assert not ForegroundEstimator(impl="numba").uses_torch("cuda")
    f_numba, p1 = auto.tensors(src, fgr, pha)
    f_torch, p2 = forced.tensors(src, fgr, pha)
    assert p1 is pha and p2 is pha and f_numba.dtype == f_torch.dtype == torch.float16
    want = np.zeros((1, 32, 40, 3), np.float32)  # the network's foreground, as fgr
    ForegroundEstimator()(img[None], a[None], want)
    assert np.abs(f_numba[0].permute(1, 2, 0).float().numpy() - want[0]).max() < 1e-3
    assert 0 < (f_torch - f_numba).abs().float().mean() < 0.01  # the other solver, close


def test_reused_buffers_carry_nothing_over():
    """The processor keeps its working arrays from frame to frame (and size to size): each
    frame's estimate equals a fresh one, bit for bit, whatever came before."""
    from rvmatte.post.foreground import ForegroundParams

    big, small = _scene(), _scene(48, 64)
    other = (255 - big[0], 1 - big[1], None)  # another frame of the big size
    proc = ForegroundEstimator(ForegroundParams(network_share=0))  # the estimate alone
    for img, a, _ in (big, other, small, big, other):
        got = np.empty((1, *img.shape), np.float32)
        proc(img[None], a[None], got)
        assert np.array_equal(got[0], estimate_foreground(img, a))
    full = ForegroundEstimator(ForegroundParams(skip_flat=False, network_share=0))
    for img, a, _ in (other, big):
        got = np.empty((1, *img.shape), np.float32)
        full(img[None], a[None], got)
        assert np.array_equal(got[0], estimate_foreground(img, a, params=full.p))


def _band(a: np.ndarray) -> np.ndarray:
    """Where the estimate is solved at full size: alpha not flat 0/1, or a 4-neighbour
    different."""
    p = np.pad(a, 1, mode="edge")
    same = ((p[1:-1, :-2] == a) & (p[1:-1, 2:] == a) & (p[:-2, 1:-1] == a)
            & (p[2:, 1:-1] == a))
    return ~(((a == 0) | (a == 1)) & same)


def test_the_network_foreground_is_mixed_in_by_its_share():
    """F = (1 - s) estimate + s network where the estimate is solved (the soft band; the
    estimate elsewhere), on the numpy (fused) and tensor paths, numba and PyTorch; s = 0 is
    the estimate alone, and only then does the processor say it replaces the foreground."""
    import torch

    from rvmatte.post.foreground import ForegroundParams, estimate_foreground_torch

    img, a, F = _scene(32, 40)
    net = np.random.default_rng(0).random((1, 32, 40, 3), dtype=np.float32)
    alone = estimate_foreground(img, a)
    band = _band(a)[..., None]
    assert 0.05 < band.mean() < 0.9
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    net_t, pha_t = torch.from_numpy(net).permute(0, 3, 1, 2), torch.from_numpy(a)[None, None]
    for share in (0.35, 0.0):
        p = ForegroundParams(network_share=share)
        proc = ForegroundEstimator(p)
        assert proc.replaces_foreground == (share == 0)
        got = net.copy()
        proc(img[None], a[None], got)
        want = np.where(band, (1 - share) * alone + share * net[0], alone)
        assert np.abs(got[0] - want).max() < 1e-6
        t, _ = ForegroundEstimator(p, impl="numba").tensors(src, net_t, pha_t)
        assert np.abs(t[0].permute(1, 2, 0).numpy() - want).max() < 1e-6
        tt = estimate_foreground_torch(src, pha_t, p, net_t)[0].permute(1, 2, 0).numpy()
        alone_t = estimate_foreground_torch(src, pha_t, p)[0].permute(1, 2, 0).numpy()
        want_t = np.where(band, (1 - share) * alone_t + share * net[0], alone_t)
        assert np.abs(tt - want_t).max() < 1e-6
    assert ForegroundParams().network_share == 0.35  # the default mixes
