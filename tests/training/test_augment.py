"""Every augmentation keeps foreground and alpha aligned, and is seeded."""

import numpy as np
import pytest
import torch

from rvmatte.training import augment as A


def _clip(T=4, H=48, W=40, seed=0):
    """A foreground whose first channel *is* the alpha: any misalignment shows up."""
    g = torch.Generator().manual_seed(seed)
    pha = (torch.rand(T, 1, H // 8, W // 8, generator=g) > 0.5).float()
    pha = torch.nn.functional.interpolate(pha, (H, W), mode="nearest")
    fgr = torch.cat([pha, torch.rand(T, 2, H, W, generator=g)], 1)
    bgr = torch.rand(T, 3, H + 10, W + 6, generator=g)
    return fgr, pha, bgr


GEOMETRIC = {
    "motion_affine": lambda r, x: A.motion_affine(r, x)[0],
    "static_affine": lambda r, x: A.static_affine(r, x, (0.5, 1.0)),
    "resized_crop": lambda r, x: A.resized_crop(r, x, (32, 32)),
    "motion_blur": lambda r, x: A.motion_blur(r, x)[0],
    "random_pause": lambda r, x: A.random_pause(r, x)[0],
    "sharpen": lambda r, x: A.sharpen(3.0, x)[0],
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_ops_keep_fgr_and_alpha_aligned(name):
    fgr, pha, _ = _clip()
    fp = torch.cat([fgr, pha], 1)  # how MotionAugmentation applies geometry
    out = GEOMETRIC[name](np.random.default_rng(3), fp)
    assert torch.allclose(out[:, 0], out[:, 3], atol=1e-6)


def _lopsided(T=3, H=24, W=32):
    """A clip whose person stands on the left (alpha 1 there, the foreground's first channel
    equal to it) over a background bright on the left: a mirror of either shows."""
    pha = torch.zeros(T, 1, H, W)
    pha[..., : W // 3] = 1.0
    fgr = torch.cat([pha, torch.rand(T, 2, H, W, generator=torch.Generator().manual_seed(0))], 1)
    bgr = torch.linspace(1, 0, W).expand(T, 3, H, W).clone()
    return fgr, pha, bgr


def _left_heavy(x):
    """Per frame: is the first channel's mass on the left half?"""
    W = x.shape[-1]
    return (x[:, 0, :, : W // 2].sum((1, 2)) > x[:, 0, :, W // 2:].sum((1, 2))).tolist()


def test_hflip_mirrors_whole_clips_and_p0_never_flips():
    """MotionAugmentation's flip (everything else off, crop = the whole frame): p=1 mirrors
    every frame of foreground and alpha together, and the background, and nothing else
    changes; p=0 never flips; p=0.5 flips the person and the background independently,
    always the whole clip at once."""
    def aug(p):
        return A.MotionAugmentation((24, 32), 0, 0, 0, 0, 0, 0, 0, p_hflip=p, p_pause=0,
                                    static_affine=False, aspect_ratio=(1, 1))

    fgr, pha, bgr = _lopsided()
    kept = aug(0)(fgr, pha, bgr, np.random.default_rng(0))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(kept, (fgr, pha, bgr)))
    flipped = aug(1)(fgr, pha, bgr, np.random.default_rng(0))
    for got, want in zip(flipped, (fgr, pha, bgr)):
        assert torch.allclose(got, want.flip(-1), atol=1e-6)
    seen = set()
    for seed in range(40):
        for p in (0, 0.5):
            f, a, b = aug(p)(fgr, pha, bgr, np.random.default_rng(seed))
            person, back = _left_heavy(a), _left_heavy(b)
            assert len(set(person)) == 1 and len(set(back)) == 1  # every frame alike
            assert _left_heavy(f) == person and torch.equal(f[:, 0], a[:, 0])
            if p == 0:
                assert person[0] and back[0]
            else:
                seen.add((person[0], back[0]))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}


def test_segmentation_hflip_moves_image_and_mask_together():
    fgr, pha, _ = _lopsided()
    outcomes = set()
    for seed in range(20):
        aug = A.SegmentationAugmentation((24, 32), jitter=(0, 0, 0, 0), p_grayscale=0,
                                         crop_scale=(1, 1))
        img, seg = aug(fgr, pha, np.random.default_rng(seed))
        assert _left_heavy(img) == _left_heavy(seg) and len(set(_left_heavy(seg))) == 1
        outcomes.add(_left_heavy(seg)[0])
    assert outcomes == {True, False}
    never = A.SegmentationAugmentation((24, 32), p_hflip=0, crop_scale=(1, 1))
    assert all(_left_heavy(never(fgr, pha, np.random.default_rng(s))[1]) == [True] * 3
               for s in range(10))


@pytest.mark.parametrize("name", ["motion_color_jitter", "motion_noise", "grayscale"])
def test_photometric_ops_leave_geometry_and_range(name):
    fgr, pha, _ = _clip()
    rng = np.random.default_rng(1)
    if name == "motion_color_jitter":
        out = A.motion_color_jitter(rng, fgr)
    elif name == "motion_noise":
        out = A.motion_noise(rng, fgr)[0]
    else:
        out = A.grayscale(fgr)[0]
    assert out.shape == fgr.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_alignment_with_everything_on(seed):
    aug = A.MotionAugmentation((32, 32), p_fgr_affine=1, p_bgr_affine=1, p_noise=0,
                               p_color_jitter=0, p_grayscale=0, p_sharpness=1, p_blur=1,
                               p_hflip=0.5, p_pause=1)
    fgr, pha, bgr = _clip(seed=seed)
    f, p, b = aug(fgr, pha, bgr, np.random.default_rng(seed))
    assert f.shape == (4, 3, 32, 32) and p.shape == (4, 1, 32, 32) and b.shape == (4, 3, 32, 32)
    assert torch.allclose(f[:, 0], p[:, 0], atol=1e-5)


def test_pipeline_is_seeded_and_photometric_ops_spare_alpha():
    aug = A.MotionAugmentation((32, 32), p_noise=1, p_color_jitter=1, p_grayscale=1, p_fgr_affine=0,
                               p_bgr_affine=0, p_sharpness=0, p_blur=0, p_hflip=0, p_pause=0,
                               static_affine=False, aspect_ratio=(1, 1))
    fgr, pha, bgr = _clip(H=32, W=32)
    a = aug(fgr, pha, bgr, np.random.default_rng(7))
    b = aug(fgr, pha, bgr, np.random.default_rng(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.allclose(a[1], pha, atol=1e-6)  # alpha untouched by colour / noise / grayscale


def test_segmentation_augmentation_alignment():
    fgr, pha, _ = _clip()
    aug = A.SegmentationAugmentation((32, 32), motion=True)
    img, seg = aug(pha.expand(-1, 3, -1, -1).clone(), pha, np.random.default_rng(0))
    # colour jitter changes img values but not where the edges are
    assert ((img[:, 0] > img[:, 0].mean()) == (seg[:, 0] > 0.5)).float().mean() > 0.95


def test_frame_sampler():
    rng = np.random.default_rng(0)
    seen_reversed = seen_fast = False
    for _ in range(50):
        f = A.FrameSampler()(6, rng)
        assert len(f) == 6 and min(f) >= 0
        d = np.diff(f)
        seen_reversed |= bool((d < 0).all())
        seen_fast |= bool((np.abs(d) >= 2).all())
    assert seen_reversed and seen_fast
    assert A.FrameSampler(train=False)(4, rng) == [0, 1, 2, 3]


def test_easings_are_bounded_at_the_ends():
    for e in A.EASINGS:
        assert abs(e(0.0)) < 1e-6 and abs(e(1.0) - 1) < 1e-6
