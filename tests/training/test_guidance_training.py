"""Training a guided network (issue 19): the synthesised plate and mask, and a smoke run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rvmatte.errors import InputError
from rvmatte.training.config import GuidanceSynthesis, preset
from rvmatte.training.engine import Trainer
from rvmatte.training.guidance import misalign, synthesize, synthesize_mask, synthesize_plate

from .conftest import tiny_config

H, W = 96, 128
NO_PHOTO = dict(exposure=0.0, white_balance=0.0, max_noise_std=0.0)
NO_GEOMETRY = dict(max_shift_px=0.0, max_rotation_deg=0.0, max_scale=0.0)


def _cfg(**kw) -> GuidanceSynthesis:
    return dataclasses.replace(GuidanceSynthesis(), **kw)


def _background(T: int = 4) -> torch.Tensor:
    """(T,3,H,W): a smooth gradient with a bright square at (40..56, 50..66), still over time."""
    yy, xx = torch.meshgrid(torch.linspace(0.2, 0.6, H), torch.linspace(0.3, 0.7, W), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2])
    img[:, 40:56, 50:66] = 0.95
    return img.expand(T, 3, H, W).clone()


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """Centroid (y, x) of the bright square in (3,H,W)."""
    w = (img.mean(0) > 0.9).float()
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    return torch.stack([(w * yy).sum(), (w * xx).sum()]) / w.sum()


def _disc(T: int = 6) -> torch.Tensor:
    """(T,1,H,W): a person-like disc with a soft 6-px edge, moving right (8 positions)."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    frames = [((30 - ((yy - 48) ** 2 + (xx - 50 - 3 * (t % 8)) ** 2).sqrt()) / 6 + 0.5).clamp(0, 1)
              for t in range(T)]
    return torch.stack(frames)[:, None]


def test_misalign_moves_content_by_the_shift():
    bg = _background(1)
    assert torch.allclose(misalign(bg, 0, 0, 0, 1), bg, atol=1e-5)
    moved = misalign(bg, 3.0, -2.0, 0, 1)[0]
    torch.testing.assert_close(_centroid(moved) - _centroid(bg[0]), torch.tensor([-2.0, 3.0]),
                               atol=0.05, rtol=0)


def test_plate_is_the_background_misaligned_by_a_few_pixels():
    cfg = _cfg(**NO_PHOTO, p_static_plate=0.0)
    bg = _background()
    # the square's centre is 8..26 px from the image centre: rotation and scale add at most
    # about |r| (rad(1 deg) + 0.01) < 0.6 px to the shift of up to 3 px per axis
    bound = 3.0 * 2 ** 0.5 + 0.6
    shifts = []
    for seed in range(8):
        plate = synthesize_plate(np.random.default_rng(seed), bg, cfg)
        assert plate.shape == bg.shape and not torch.equal(plate, bg)
        d = _centroid(plate[0]) - _centroid(bg[0])
        assert float(d.norm()) <= bound, (seed, d)
        assert torch.equal(plate[0], plate[-1])  # one misalignment for the whole clip
        shifts.append(float(d.norm()))
    assert max(shifts) > 0.5  # it does move


def test_plate_has_bounded_exposure_white_balance_and_noise():
    cfg = _cfg(**NO_GEOMETRY)
    bg = _background()
    inner = (slice(None), slice(None), slice(4, 36), slice(4, 124))  # the gradient, no clamp
    lo = 1 / (1 + cfg.exposure) * (1 - cfg.white_balance)
    hi = (1 + cfg.exposure) * (1 + cfg.white_balance)
    for seed in range(8):
        plate = synthesize_plate(np.random.default_rng(seed), bg, cfg)
        p, b = plate[inner], bg[inner]
        gain = (p * b).sum((0, 2, 3)) / (b * b).sum((0, 2, 3))  # per channel, least squares
        assert bool(((gain > lo) & (gain < hi)).all()), (seed, gain)
        residual = p - gain.view(1, 3, 1, 1) * b
        assert float(residual.std()) <= cfg.max_noise_std * 1.05, seed


def test_static_plate_is_one_frame_for_the_clip():
    bg = torch.rand(5, 3, H, W)  # a background that changes every frame
    plate = synthesize_plate(np.random.default_rng(1), bg, _cfg(**NO_PHOTO, p_static_plate=1.0))
    assert all(torch.equal(plate[0], plate[t]) for t in range(1, 5))


def test_mask_lies_between_the_eroded_and_dilated_ground_truth():
    cfg = _cfg(p_drop_frame=0.0)
    pha = _disc()
    r = cfg.max_morph_px + cfg.max_blur_px
    k = 2 * r + 1
    outer = F.max_pool2d((pha > cfg.threshold_min).float(), k, 1, r) > 0
    inner = 1 - F.max_pool2d(1 - (pha > cfg.threshold_max).float(), k, 1, r) > 0.5
    areas = []
    for seed in range(6):
        mask = synthesize_mask(np.random.default_rng(seed), pha, cfg)
        assert mask.shape == pha.shape and float(mask.min()) >= 0 and float(mask.max()) <= 1
        assert not bool(((mask > 0) & ~outer).any()), seed      # mask within dilated(gt)
        assert not bool((inner & ~(mask > 0.5)).any()), seed    # and covers eroded(gt)
        areas += [float(m.sum()) for m in mask]
    assert max(areas) > 1.1 * min(areas)  # frames differ: eroded, dilated, blurred


def test_dropped_frames_and_absent_inputs_are_zeros():
    pha = _disc(T=200)
    mask = synthesize_mask(np.random.default_rng(0), pha, _cfg(p_drop_frame=0.1))
    dropped = [t for t in range(200) if not mask[t].any()]
    assert 5 <= len(dropped) <= 40  # about 10 % (seeded)
    assert not synthesize_mask(np.random.default_rng(0), pha[:5], _cfg(p_drop_frame=1.0)).any()
    bgr, pha = _background()[None].repeat(3, 1, 1, 1, 1), _disc(4)[None].repeat(3, 1, 1, 1, 1)
    none = synthesize(np.random.default_rng(0), bgr, pha, ("plate", "mask"), _cfg(p_none=1.0))
    assert none["plate"].shape == bgr.shape and none["mask"].shape == pha.shape
    assert not none["plate"].any() and not none["mask"].any()
    full = synthesize(np.random.default_rng(0), bgr, pha, ("plate", "mask"),
                      _cfg(p_none=0.0, p_missing=0.0, p_drop_frame=0.0))
    assert all(full["plate"][b].any() and full["mask"][b].any() for b in range(3))


def test_synthesis_is_seeded():
    bgr, pha = _background()[None].repeat(2, 1, 1, 1, 1), _disc(4)[None].repeat(2, 1, 1, 1, 1)
    cfg = _cfg(p_none=0.0, p_missing=0.0)
    a = synthesize(np.random.default_rng([42, 3]), bgr, pha, ("plate", "mask"), cfg)
    b = synthesize(np.random.default_rng([42, 3]), bgr, pha, ("plate", "mask"), cfg)
    c = synthesize(np.random.default_rng([42, 4]), bgr, pha, ("plate", "mask"), cfg)
    assert torch.equal(a["plate"], b["plate"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["plate"], c["plate"])
    only_mask = synthesize(np.random.default_rng(0), bgr, pha, ("mask",), cfg)
    assert set(only_mask) == {"mask"}


def _quiet(msg):
    pass


def test_guided_smoke_run_trains_the_guidance_weights(tmp_path):
    cfg = tiny_config(tmp_path, preset="guided", max_steps=3, lr_guidance=1e-3,
                      segmentation=False, guidance_synthesis={"p_none": 0.0, "p_missing": 0.0},
                      validate_every=3, valid_clips=1)
    assert cfg.init == "bundled" and cfg.guidance == ["plate", "mask"]
    t = Trainer(cfg, log=_quiet)
    try:
        assert t.model.guidance_inputs == ("plate", "mask")
        assert t.random_keys == ["guidance.conv.weight"]  # at its zero init
        assert not t.model.guidance.conv.weight.any()
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        result = t.run()
    finally:
        t.close()
    assert result["steps"] == 3 and np.isfinite(result["last_loss"])
    w = t.model.guidance.conv.weight.detach()
    assert w.any() and float(w.abs().max()) > 1e-4  # it received gradients and moved
    after = t.model.state_dict()
    assert not torch.equal(before["decoder.decode0.conv.0.weight"], after["decoder.decode0.conv.0.weight"])
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert "guidance.conv.weight" in ckpt["model"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["tag"] == "valid"]
    assert valid and {"mad", "guided_mad"} <= set(valid[0])  # scored without and with guidance


def test_guided_resume_is_bit_identical(tmp_path):
    """The synthesis is seeded by (seed, step, rank, pass): an interrupted run resumes exactly."""
    def cfg(d, steps):
        return tiny_config(tmp_path / d, preset="guided", max_steps=steps, checkpoint_every=2,
                           segmentation=False)
    full = Trainer(cfg("a", 4), log=_quiet)
    full.run()
    Trainer(cfg("b", 2), log=_quiet).run()
    resumed = Trainer(cfg("b", 4), resume=True, log=_quiet)
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["guidance.conv.weight"].any()


def test_plain_training_is_unchanged_and_bad_guidance_is_refused(tmp_path):
    plain = Trainer(tiny_config(tmp_path / "a", segmentation=False), log=_quiet)
    assert plain.model.guidance is None
    assert all(g["name"] != "guidance" for g in plain.optimizer.param_groups)
    with pytest.raises(InputError, match="config key 'guidance': unknown guidance input 'trimap'"):
        Trainer(tiny_config(tmp_path / "b", guidance="trimap"), log=_quiet)
    assert preset("guided").guidance_synthesis is not preset("guided").guidance_synthesis
