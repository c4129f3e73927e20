"""Background plate (rvmatte.post.plate): loading and its errors, the poster person removed, the
foreground colour from the compositing equation, camera motion followed, a plate that stops
matching, resume, and convert_video / CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvmatte.errors import Cancelled, InputError
from rvmatte.post.plate import PlateFilter, load_plate, phase_shift

H, W = 180, 320
YY, XX = np.mgrid[0:H, 0:W]

def _texture(seed=7):
    """A wall: smooth random texture (no period, which phase correlation could not place)."""
    from scipy import ndimage

    n = np.random.default_rng(seed).normal(0, 1, (H, W, 3))
    t = np.stack([ndimage.gaussian_filter(n[..., c], 3) for c in range(3)], -1)
    return (0.5 + 0.25 * t / t.std()).clip(0.05, 0.95).astype(np.float32)


BG = _texture()
FG = np.array([0.85, 0.25, 0.3], np.float32)


def blob(cx, cy, rx=22, ry=60):
    d = ((XX - cx) / rx) ** 2 + ((YY - cy) / ry) ** 2
    return np.clip((1.25 - d) / 0.5, 0, 1).astype(np.float32)


POSTER = blob(270, 50, 12, 30)
# the wall holds a photo of a person: part of the plate
WALL = BG * (1 - POSTER[..., None]) + POSTER[..., None] * np.array([0.8, 0.6, 0.5], np.float32)


def shifted(img, dx):
    return np.roll(img, dx, axis=1)


def frame(t, dx=0, seed=0):
    """(frame uint8, true alpha, the poster's alpha in this frame)."""
    rng = np.random.default_rng(seed + t)
    a = blob(90 + 4 * t, 110)
    bg = shifted(WALL, dx)
    img = a[..., None] * FG + (1 - a[..., None]) * bg
    img = np.clip(img * 255 + rng.normal(0, 1.5, img.shape), 0, 255).round().astype(np.uint8)
    return img, a, shifted(POSTER, dx)


SPILL = np.array([0.3, 0.7, 0.4], np.float32)  # the background the network imagines


def network(img, a, poster):
    """What a network gets wrong: the poster person matted (0.9), a haze of 0.04 around the
    person, and at soft edges a foreground coloured by a background it imagines (spill):
    F_net = F + (1 - a)(S - F), a frame colour where the person is not."""
    haze = 0.04 * ((a == 0) & (blob(90, 110, 40, 85) > 0))
    pha = np.clip(np.maximum(a, 0.9 * poster) + haze, 0, 1).astype(np.float32)
    spill = FG + (1 - a[..., None]) * (SPILL - FG)
    fgr = np.where(a[..., None] > 0, spill, img.astype(np.float32) / 255)
    return pha, np.ascontiguousarray(fgr, np.float32)


@pytest.fixture
def plate_png(tmp_path):
    p = tmp_path / "plate.png"
    Image.fromarray((WALL * 255 + 0.5).astype(np.uint8)).save(p)
    return p


# ---- loading ------------------------------------------------------------------------------

def test_plate_errors_are_one_line(tmp_path, plate_png):
    with pytest.raises(InputError, match="background plate not found"):
        load_plate(tmp_path / "none.png", W, H)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read background plate") as e:
        load_plate(tmp_path / "bad.png", W, H)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "sq.png")
    with pytest.raises(InputError, match="another aspect ratio"):
        load_plate(tmp_path / "sq.png", W, H)


def test_plate_of_another_size_is_resized_with_a_warning(tmp_path):
    Image.fromarray((WALL * 255 + 0.5).astype(np.uint8)).resize((2 * W, 2 * H)).save(
        tmp_path / "big.png")
    plate, warnings = load_plate(tmp_path / "big.png", W, H)
    assert plate.shape == (H, W, 3) and "resized" in warnings[0]
    assert np.abs(plate - WALL).mean() < 0.03


def test_plate_video_is_averaged(tmp_path):
    import av

    rng = np.random.default_rng(1)
    with av.open(str(tmp_path / "plate.mkv"), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "bgr0"
        for _ in range(8):
            img = np.clip(WALL * 255 + rng.normal(0, 4, WALL.shape), 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    plate, _ = load_plate(tmp_path / "plate.mkv", W, H)
    err = np.abs(plate - WALL)
    assert err.mean() < 4 / 255 / np.sqrt(8) * 1.5  # noise averaged down


def test_phase_shift_subpixel():
    g = BG.mean(2)
    dy, dx, _ = phase_shift(np.roll(g, (3, -5), axis=(0, 1)), g)
    assert abs(dy - 3) < 0.1 and abs(dx + 5) < 0.1


# ---- what it does ---------------------------------------------------------------------------

@pytest.mark.parametrize("shake", [0, 3])
def test_poster_removed_foreground_better_alpha_no_worse(plate_png, shake):
    pf = PlateFilter(plate_png, W, H)
    mse0 = mse1 = mad0 = mad1 = 0.0
    for t in range(6):
        img, a, poster = frame(t, dx=shake * (t % 2))
        pha, fgr = network(img, a, poster)
        p2, f2 = pha.copy(), fgr.copy()
        pf(img[None], p2[None], f2[None])
        m = a > 0.05
        mse0 += float(((fgr - FG)[m] ** 2).mean())
        mse1 += float(((f2 - FG)[m] ** 2).mean())
        mad0 += float(np.abs(pha - a).mean())
        mad1 += float(np.abs(p2 - a).mean())
        assert p2[poster > 0.05].mean() <= 0.02       # the person on the poster is gone
        assert p2[a > 0.99].min() > 0.99              # the real person is whole
    assert mse1 <= 0.7 * mse0, (mse0, mse1)
    assert mad1 <= mad0
    assert not pf.warnings


def test_camera_motion_is_followed(plate_png):
    pf = PlateFilter(plate_png, W, H)
    img, a, poster = frame(0, dx=4)
    pha, fgr = network(img, a, poster)
    pf(img[None], pha[None], fgr[None])
    assert abs(pf.last["shift"][1] - 4) < 0.2 and abs(pf.last["shift"][0]) < 0.2


def test_plate_matching_nothing(tmp_path):
    other = np.random.default_rng(3).uniform(0, 1, (H, W, 3)).astype(np.float32)
    Image.fromarray((other * 255).astype(np.uint8)).save(tmp_path / "other.png")
    pf = PlateFilter(tmp_path / "other.png", W, H)
    img, a, poster = frame(0)
    pha, fgr = network(img, a, poster)
    with pytest.raises(InputError, match="matches nothing on the first frame"):
        pf(img[None], pha[None], fgr[None])


def test_plate_that_stops_matching_warns_and_leaves_frames_alone(plate_png):
    pf = PlateFilter(plate_png, W, H)
    img, a, poster = frame(0)
    pha, fgr = network(img, a, poster)
    pf(img[None], pha[None], fgr[None])
    # the light went off: a dark frame (gain beyond 2x) -- left as the network made it
    dark = (img // 8).astype(np.uint8)
    dark = np.clip(dark.astype(int) + np.random.default_rng(0).integers(0, 40, dark.shape), 0,
                   255).astype(np.uint8)
    pha, fgr = network(dark, a, poster)
    p2, f2 = pha.copy(), fgr.copy()
    pf(dark[None], p2[None], f2[None])
    assert np.array_equal(p2, pha) and np.array_equal(f2, fgr)
    assert len(pf.warnings) == 1 and "did not match 1 frame(s)" in pf.warnings[0]


def test_state_round_trip(plate_png):
    a = PlateFilter(plate_png, W, H)
    a.mismatched, a.first_mismatch, a.frame = 2, 5, 9
    b = PlateFilter(plate_png, W, H)
    b.load_state([np.array(x) for x in a.state_arrays()])
    assert (b.frame, b.mismatched, b.first_mismatch) == (9, 2, 5) and b.warnings == a.warnings


# ---- through convert_video ------------------------------------------------------------------

def _fake(alphas):
    import torch

    from rvmatte.inference.session import Matter
    from rvmatte.models.outputs import MattingOutput

    class _Fake(Matter):
        def __init__(self):
            super().__init__(device="cpu", backend="fused")

        def uint8_path(self, ratio):
            return False

        def step(self, src, state=None, downsample_ratio=None):
            n = 0 if state is None else int(state[0].reshape(-1)[0])
            T = src.shape[0]
            pha = torch.from_numpy(np.stack(alphas[n:n + T]))[:, None].float()
            return MattingOutput(src.float().clone(), pha,
                                 (torch.full((1, 1, 1, 1), float(n + T)),))

    return _Fake()


def _clip(tmp_path, n):
    folder = tmp_path / "in"
    folder.mkdir()
    alphas, truth = [], []
    for t in range(n):
        img, a, poster = frame(t)
        Image.fromarray(img).save(folder / f"{t:06d}.png")
        alphas.append(network(img, a, poster)[0])
        truth.append((a, poster))
    return folder, alphas, truth


def test_convert_video_with_plate_and_resume(tmp_path, plate_png):
    from rvmatte.inference.convert import convert_video

    n = 12
    clip, alphas, truth = _clip(tmp_path, n)
    kw = dict(background_plate=plate_png, seq_chunk=2, segment_frames=4)
    r = convert_video(clip, alpha=tmp_path / "whole", foreground=tmp_path / "fg",
                      model=_fake(alphas), progress=False, **kw)
    assert r.frames == n and not r.warnings
    for t, (a, poster) in enumerate(truth):
        out = np.asarray(Image.open(tmp_path / "whole" / f"{t:06d}.png"), np.float32) / 255
        assert out[poster > 0.05].mean() <= 0.02
    cancel = threading.Event()

    def progress(p):
        if p.done >= 7:
            cancel.set()

    with pytest.raises(Cancelled):
        convert_video(clip, alpha=tmp_path / "cut", model=_fake(alphas), progress=progress,
                      cancel=cancel, **kw)
    r2 = convert_video(clip, alpha=tmp_path / "cut", model=_fake(alphas), resume=True,
                       progress=False, **kw)
    assert 0 < r2.resumed_from < n
    for t in range(n):
        assert (Path(tmp_path / "whole" / f"{t:06d}.png").read_bytes()
                == Path(tmp_path / "cut" / f"{t:06d}.png").read_bytes()), t


def test_convert_video_refuses_a_plate_of_another_aspect(tmp_path):
    from rvmatte.inference.convert import convert_video

    clip, alphas, _ = _clip(tmp_path, 2)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "sq.png")
    with pytest.raises(InputError, match="another aspect ratio"):
        convert_video(clip, alpha=tmp_path / "a", model=_fake(alphas),
                      background_plate=tmp_path / "sq.png", progress=False)
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob("*.rvmatte-resume"))


def test_fused_path_plate_resume_exact(tmp_path, plate_png):
    """The bundled network on the fused CPU path with the plate: the poster person stays out
    of the matte, and cancel + resume writes the same bytes."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("numba")
    from rvmatte.inference.convert import convert_video

    n = 8
    clip, _, truth = _clip(tmp_path, n)
    kw = dict(backend="fused", device="cpu", downsample_ratio=0.5, seq_chunk=2,
              segment_frames=4, encode_workers=1, background_plate=plate_png)
    convert_video(clip, tmp_path / "w.mp4", alpha=tmp_path / "wa", **kw)
    for t, (a, poster) in enumerate(truth):
        out = np.asarray(Image.open(tmp_path / "wa" / f"{t:06d}.png"), np.float32) / 255
        assert out[poster > 0.05].mean() <= 0.02
    ev = threading.Event()
    with pytest.raises(Cancelled):
        convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "ca", cancel=ev,
                      progress=lambda p: p.done >= 5 and ev.set(), **kw)
    r = convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "ca", resume=True, **kw)
    assert r.resumed_from == 4
    for t in range(n):
        assert ((tmp_path / "wa" / f"{t:06d}.png").read_bytes()
                == (tmp_path / "ca" / f"{t:06d}.png").read_bytes())
    assert (tmp_path / "w.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
