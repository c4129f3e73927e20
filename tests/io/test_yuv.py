"""Colour conversion on the model's device (rvmatte.io.yuv) against libswscale, and the reader's
4:2:0 planes mode."""

import av
import numpy as np
import pytest
import torch

from rvm_clips import frame_image, make_clip
from rvmatte.io.readers import Source, probe
from rvmatte.io.yuv import (gray_to_yuv420, is_full_range, matrix_for, rgb_to_yuv420,
                            yuv420_to_rgb)


def _frame(rgb: np.ndarray, colorspace=None, color_range=None, fmt="yuv420p"):
    f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
    if colorspace is not None:
        f.colorspace = colorspace
    if color_range is not None:
        f.color_range = color_range
    return f


@pytest.mark.parametrize("colorspace,color_range", [(None, None), (1, 1), (5, 1), (1, 2)])
def test_yuv_to_rgb_matches_swscale(colorspace, color_range):
    rgb = np.stack([frame_image(i, 96, 64) for i in range(2)])
    rgb[:, 10:30, 10:40] = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3))
    frames = []
    for im in rgb:
        f = _frame(im)
        planes = f.to_ndarray()
        g = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        if colorspace is not None:
            g.colorspace, g.color_range = colorspace, color_range
        frames.append(g)
    ref = np.stack([g.to_ndarray(format="rgb24") for g in frames]).astype(int)
    planes = torch.from_numpy(np.stack([g.to_ndarray() for g in frames]))
    out = yuv420_to_rgb(planes, 64, 96, matrix=matrix_for(frames[0].colorspace),
                        full_range=is_full_range(frames[0].color_range))
    assert out.shape == (2, 3, 64, 96) and out.dtype == torch.float32
    mine = (out.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy().astype(int)
    d = np.abs(mine - ref)
    # libswscale's fixed-point tables truncate (about +1 level of bias); the matrix is right
    # when the error stays this small (a wrong matrix gives 10+ on saturated colours)
    assert d.mean() < 2.0 and d.max() <= 4, (d.mean(), d.max())


def test_wrong_matrix_would_be_caught():
    im = np.zeros((32, 32, 3), np.uint8)
    im[..., 0] = 255
    f = _frame(im)
    planes = torch.from_numpy(f.to_ndarray())[None]
    ref = f.to_ndarray(format="rgb24").astype(int)
    wrong = (yuv420_to_rgb(planes, 32, 32, matrix="bt709")[0].permute(1, 2, 0) * 255).numpy()
    assert np.abs(wrong - ref).max() > 10


def test_rgb_and_gray_to_yuv_match_swscale():
    rgb = frame_image(3, 64, 48)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    mine = rgb_to_yuv420(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    assert mine.shape == ref.shape == (72, 64) and mine.dtype == np.uint8
    d = np.abs(mine.astype(int) - ref)
    assert d[:48].max() <= 1 and d[48:].mean() < 1.0
    gray = rgb[..., 2]
    ref = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p").to_ndarray()
    mine = gray_to_yuv420(torch.from_numpy(gray)[None].float() / 255)[0].numpy()
    assert np.array_equal(mine, ref)


def test_round_trip_and_half_precision():
    g = torch.Generator().manual_seed(0)  # smooth colours: 4:2:0 keeps them
    rgb = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 6, generator=g) * 0.8 + 0.1,
                                          size=(32, 48), mode="bilinear", align_corners=False)
    planes = rgb_to_yuv420(rgb.half())
    back = yuv420_to_rgb(planes, 32, 48, dtype=torch.float16)
    assert back.dtype == torch.float16
    # 4:2:0 loses chroma detail; luma survives: compare BT.601 luma
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert ((back.float() * w).sum(1) - (rgb * w).sum(1)).abs().max() < 0.01


@pytest.mark.parametrize("bad", [(2, 3, 31, 48), (2, 3, 32, 47)])
def test_odd_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420(torch.rand(*bad))
    with pytest.raises(ValueError):
        yuv420_to_rgb(torch.zeros(1, 30, 48, dtype=torch.uint8), 21, 48)


def test_matrix_and_range_rules():
    assert matrix_for(1) == "bt709" and matrix_for(2) == "bt601" and matrix_for(6) == "bt601"
    assert matrix_for(9) == "bt2020" and matrix_for(None) == "bt601"
    assert is_full_range(2) and not is_full_range(1) and not is_full_range(None)


def test_reader_yields_planes(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=5, audio=False)
    info = probe(clip)
    assert info.yuv420_ok and info.pix_fmt == "yuv420p"
    rgb = [f.image for f in Source(info).frames()]
    yuv = [f.image for f in Source(info).frames(yuv=True)]
    assert len(yuv) == len(rgb) == 5 and yuv[0].shape == (72, 64)
    conv = yuv420_to_rgb(torch.from_numpy(np.stack(yuv)), 48, 64)
    mine = (conv.permute(0, 2, 3, 1) * 255).round().numpy()
    assert np.abs(mine - np.stack(rgb)).mean() < 2.0


@pytest.mark.parametrize("w,h", [(64, 48), (202, 118)])  # 202: rows padded in the decoder
def test_planes_are_copied_straight_into_the_callers_chunk(tmp_path, w, h):
    """``into``: each frame's planes land in the caller's array, exactly PyAV's
    ``to_ndarray()`` layout; a frame of another size or format is converted first."""
    from rvmatte.io.readers import _to_yuv420

    clip = make_clip(tmp_path / "c.mp4", w=w, h=h, n=4, audio=False)
    info = probe(clip)
    with av.open(str(clip)) as c:
        ref = [f.to_ndarray() for f in c.decode(video=0)]
    chunk = np.full((4, h * 3 // 2, w), 7, np.uint8)
    slots = iter(range(4))
    got = [f.image for f in Source(info).frames(yuv=True, into=lambda: chunk[next(slots)])]
    assert all(g.base is chunk or g.base is chunk.base for g in got)  # written in place
    assert all(np.array_equal(chunk[i], ref[i]) for i in range(4))
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0))
        if w == 202:
            assert frame.planes[0].line_size > w  # the padded case is really exercised
        assert np.array_equal(_to_yuv420(frame, w, h), ref[0])
        rgb = frame.reformat(format="rgb24")
        conv = _to_yuv420(rgb, w, h)  # converted by libswscale first
        assert conv.shape == ref[0].shape and np.abs(conv.astype(int) - ref[0]).mean() < 2
        with pytest.raises(ValueError, match="C-contiguous"):
            _to_yuv420(frame, w, h, out=np.empty((h * 3 // 2, w * 2), np.uint8)[:, ::2])


def test_reader_refuses_planes_when_not_possible(tmp_path):
    clip = make_clip(tmp_path / "r.mp4", w=64, h=48, n=2, audio=False, rotation=90)
    info = probe(clip)
    assert not info.yuv420_ok
    with pytest.raises(ValueError, match="YUV"):
        next(Source(info).frames(yuv=True))
    odd = probe(make_clip(tmp_path / "o.mp4", w=63, h=47, n=2, audio=False, pix_fmt="yuv444p"))
    assert not odd.yuv420_ok


@pytest.mark.parametrize("ext,yuv", [("mp4", False), ("mp4", True), ("webm", True), ("mov", False)])
def test_outputs_are_tagged_with_the_matrix_they_were_made_with(tmp_path, ext, yuv):
    """Both ways of making 4:2:0 (libswscale from RGB, rvmatte.io.yuv on the device) use
    BT.601 limited range, and the stream says so: a player that honours the tag gets pure red
    back (tagged BT.709 or guessed as BT.709, the green channel would read about 23)."""
    from fractions import Fraction

    from rvmatte.io.writers import SegmentWriter, plan_output

    spec = plan_output("composite", tmp_path / f"o.{ext}", codec=None, transparent=False,
                       quality=0 if ext == "mp4" else None)
    seg = tmp_path / f"seg.{ext}"
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    frame = (rgb_to_yuv420(torch.from_numpy(red).permute(2, 0, 1)[None].float() / 255)[0].numpy()
             if yuv else red)
    w = SegmentWriter(spec, seg, 64, 48, Fraction(1, 25), Fraction(25), 0, yuv=yuv)
    for i in range(3):
        w.write(frame, i)
    w.close()
    with av.open(str(seg)) as c:
        s = c.streams.video[0]
        assert (int(s.codec_context.colorspace), int(s.codec_context.color_range)) == (6, 1)
        f = next(c.decode(s))
        assert int(f.colorspace) == 6
        rgb = f.to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb - [255, 0, 0]).max() <= (3 if ext == "mp4" else 12)
