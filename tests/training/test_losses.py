import pytest
import torch

from rvmatte.training.losses import (coherence_loss, laplacian_loss, laplacian_pyramid,
                                     matting_loss, segmentation_loss)


def test_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    fgr, pha = torch.rand(2, 3, 3, 64, 64, generator=g), torch.rand(2, 3, 1, 64, 64, generator=g)
    loss = matting_loss(fgr, pha, fgr, pha)
    for k, v in loss.items():
        assert float(v) == pytest.approx(0.0, abs=1e-7), k


def test_l1_and_constant_offset():
    true = torch.zeros(1, 2, 1, 64, 64)
    pred = torch.full_like(true, 0.25)
    loss = matting_loss(torch.zeros(1, 2, 3, 64, 64), pred, torch.zeros(1, 2, 3, 64, 64), true)
    assert float(loss["pha_l1"]) == pytest.approx(0.25)
    assert float(loss["pha_coherence"]) == 0  # same change over time
    # a constant offset lives only in the coarsest (low-pass) residual... which the band-pass
    # levels remove except at borders affected by padding: small but not zero
    assert 0 <= float(loss["pha_laplacian"]) < 0.25
    assert float(loss["fgr_l1"]) == 0  # alpha* = 0 everywhere: foreground is not scored


def test_coherence_known_value():
    true = torch.zeros(1, 2, 1, 4, 4)
    pred = torch.zeros(1, 2, 1, 4, 4)
    pred[:, 1] = 0.5  # predicted change 0.5, true change 0
    assert float(coherence_loss(pred, true)) == pytest.approx(0.25)
    loss = matting_loss(torch.zeros(1, 2, 3, 64, 64), torch.nn.functional.pad(pred, (30, 30, 30, 30)),
                        torch.zeros(1, 2, 3, 64, 64), torch.zeros(1, 2, 1, 64, 64))
    assert float(loss["pha_coherence"]) == pytest.approx(5 * 0.25 * 16 / 4096)
    assert float(coherence_loss(pred[:, :1], true[:, :1])) == 0  # T = 1


def test_foreground_masked_by_true_alpha():
    true_pha = torch.zeros(1, 1, 1, 64, 64)
    true_pha[..., :32] = 1
    pred_fgr = torch.zeros(1, 1, 3, 64, 64)
    pred_fgr[..., 32:] = 1  # error only where alpha* = 0
    loss = matting_loss(pred_fgr, true_pha, torch.zeros_like(pred_fgr), true_pha)
    assert float(loss["fgr_l1"]) == 0
    pred_fgr[..., :32] = 1
    loss = matting_loss(pred_fgr, true_pha, torch.zeros_like(pred_fgr), true_pha)
    assert float(loss["fgr_l1"]) == pytest.approx(0.5)


def test_laplacian_pyramid_levels_and_weights():
    x = torch.rand(1, 1, 64, 64)
    pyr = laplacian_pyramid(x, 5)
    assert [p.shape[-1] for p in pyr] == [64, 32, 16, 8, 4]
    # an impulse at the finest level: loss = L1 of the level-0 band (weight 1) + coarser ones
    a = torch.zeros(1, 1, 64, 64)
    assert float(laplacian_loss(a, a)) == 0
    b = a.clone()
    b[..., 32, 32] = 1
    manual = sum(2 ** s * (p - q).abs().mean() for s, (p, q) in
                 enumerate(zip(laplacian_pyramid(b), laplacian_pyramid(a)))) / 5
    assert float(laplacian_loss(b, a)) == pytest.approx(float(manual))
    assert float(laplacian_loss(b, a)) > 0


def test_segmentation_bce():
    logits = torch.zeros(1, 1, 1, 4, 4)
    assert float(segmentation_loss(logits, torch.ones_like(logits))) == pytest.approx(0.693147, rel=1e-5)
    big = torch.full_like(logits, 20.0)
    assert float(segmentation_loss(big, torch.ones_like(logits))) < 1e-6
