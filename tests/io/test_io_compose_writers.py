from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rvm_clips import make_clip
from rvmatte.errors import InputError, OutputError
from rvmatte.io.compose import (BlurBackground, ColorBackground, ImageBackground,
                                VideoBackground, composite, composite_frames, cover,
                                load_background, parse_background, parse_color,
                                safe_background_spec, to_uint8)
from rvmatte.io.writers import plan_output


def test_colors():
    assert parse_color("#ff8000") == (255, 128, 0)
    assert parse_color("#fff") == (255, 255, 255)
    assert parse_color("green") == (0, 255, 0)
    assert parse_color("navy") == (0, 0, 128)
    assert parse_color("#12345") is None and parse_color("nocolour") is None


def test_to_uint8_rounds():
    x = torch.tensor([0.0, 0.5 / 255, 1.0, 1.5, -1.0])
    assert to_uint8(x).tolist() == [0, 1, 255, 255, 0]


def test_to_uint8_numpy_equals_torch():
    x = np.random.default_rng(0).uniform(-0.2, 1.2, (4, 8, 8, 3)).astype(np.float32)
    x[0, 0, 0] = [0.5 / 255, 254.5 / 255, 1.0]  # rounding boundaries
    got = to_uint8(x)
    assert got.dtype == np.uint8 and np.array_equal(got, to_uint8(torch.from_numpy(x)).numpy())
    assert np.array_equal(to_uint8(x.copy(), inplace=True), got)


def test_composite_one_formula_for_numpy_and_torch():
    """The numpy composite (live) is torch.lerp's formula (convert): equal to float rounding,
    exact at pha 0 and 1, and the same uint8 frame within one level."""
    rng = np.random.default_rng(1)
    fgr = rng.random((2, 16, 16, 3), dtype=np.float32)
    pha = rng.random((2, 16, 16, 1), dtype=np.float32)
    pha[0, :4] = 0.0
    pha[0, 4:8] = 1.0
    bg = np.array([0.0, 1.0, 0.25], np.float32)
    got = composite(fgr, pha, bg)
    ref = composite(torch.from_numpy(fgr).permute(0, 3, 1, 2),
                    torch.from_numpy(pha).permute(0, 3, 1, 2),
                    torch.from_numpy(bg).view(1, 3, 1, 1)).permute(0, 2, 3, 1).numpy()
    assert got.shape == fgr.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-6
    assert np.array_equal(got[0, :4], np.broadcast_to(bg, got[0, :4].shape))
    assert np.array_equal(got[0, 4:8], fgr[0, 4:8])
    assert np.abs(to_uint8(got).astype(int) - to_uint8(torch.from_numpy(ref)).numpy()).max() <= 1


def test_composite_frames(tmp_path):
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 12, 16, 3), dtype=np.uint8)
    fgr = rng.random((2, 12, 16, 3), dtype=np.float32)
    pha = rng.random((2, 12, 16), dtype=np.float32)
    red = composite_frames(frames, fgr, pha, load_background("#ff0000"))
    want = to_uint8(fgr * pha[..., None] + np.array([1, 0, 0], np.float32) * (1 - pha[..., None]))
    assert red.shape == (2, 12, 16, 3) and red.dtype == np.uint8
    assert np.abs(red.astype(int) - want).max() <= 1
    rgba = composite_frames(frames, fgr, pha, load_background("transparent"))
    assert rgba.shape == (2, 12, 16, 4)
    assert np.array_equal(rgba[..., 3], to_uint8(pha)) and np.array_equal(rgba[..., :3],
                                                                         to_uint8(fgr))
    # backgrounds made from the frames or from files: the torch Background, viewed as numpy
    blurred = composite_frames(frames, fgr, np.zeros_like(pha), load_background("blur:4"))
    ref = to_uint8(BlurBackground(4).get(torch.from_numpy(frames).permute(0, 3, 1, 2).float()
                                         / 255, 0)).permute(0, 2, 3, 1).numpy()
    assert np.abs(blurred.astype(int) - ref).max() <= 1
    Image.fromarray(np.full((5, 9, 3), 40, np.uint8)).save(tmp_path / "bg.png")
    img = composite_frames(frames, fgr, np.zeros_like(pha), load_background(tmp_path / "bg.png"))
    assert (img == 40).all()


def test_composite_frames_over_a_colour_is_torch_free():
    """Live mode's default (green) on the CPU path composites without importing PyTorch."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from rvmatte.io.compose import composite_frames, load_background\n"
            "f = np.zeros((1, 4, 4, 3), np.float32); a = np.zeros((1, 4, 4), np.float32)\n"
            "out = composite_frames(np.zeros((1, 4, 4, 3), np.uint8), f, a, load_background(None))\n"
            "assert out[0, 0, 0].tolist() == [0, 255, 0], out[0, 0, 0]\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_load_background_and_safe_spec(tmp_path):
    assert load_background(None).rgb == (0, 255, 0)       # no output format: green
    assert load_background("default", default="#0000ff").rgb == (0, 0, 255)
    assert load_background("transparent") is None
    assert safe_background_spec("Red") == "#ff0000"
    assert safe_background_spec(None) == "#00ff00"
    assert safe_background_spec("blur:7") == "blur:7" and safe_background_spec("alpha") == "transparent"
    Image.fromarray(np.zeros((5, 9, 3), np.uint8)).save(tmp_path / "bg.png")
    for bad in (str(tmp_path / "bg.png"), "/etc/passwd", "blur:x", "nocolour"):
        with pytest.raises(InputError):  # a remote client never names a server's file
            safe_background_spec(bad)


def test_cover_keeps_aspect_and_fills():
    img = torch.zeros(1, 3, 10, 40)
    img[..., 15:25] = 1  # a bright band in the middle
    out = cover(img, 20, 20)
    assert out.shape == (1, 3, 20, 20) and out.mean() > 0.4


def test_backgrounds(tmp_path):
    src = torch.rand(3, 3, 24, 32)
    assert ColorBackground((255, 0, 0)).get(src, 0)[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    b = BlurBackground(4).get(src, 0)
    assert b.shape == src.shape and b.std() < src.std()
    Image.fromarray(np.zeros((5, 9, 3), np.uint8)).save(tmp_path / "bg.png")
    assert ImageBackground(tmp_path / "bg.png").get(src, 0).shape == (1, 3, 24, 32)
    clip = make_clip(tmp_path / "bg.mp4", n=3, audio=False)
    vb = VideoBackground(clip)
    a = vb.get(src, 0)
    b = vb.get(src, 3)     # frames 3..5 loop back to 0..2
    assert a.shape == (3, 3, 24, 32) and torch.equal(a, b)
    vb.close()


def test_parse_background_specs(tmp_path):
    assert parse_background(None) is None
    assert parse_background("transparent") == "transparent"
    assert isinstance(parse_background("blur"), BlurBackground)
    assert parse_background("blur:7").sigma == 7
    with pytest.raises(InputError):
        parse_background("blur:x")
    with pytest.raises(InputError, match="directory"):
        parse_background(str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        parse_background(str(tmp_path / "missing.jpg"))


@pytest.mark.parametrize("path,kw,mode,codec,rgba", [
    ("o.mp4", {}, "video", "h264", False),
    ("o.mp4", {"codec": "h265"}, "video", "h265", False),
    ("o.mkv", {}, "video", "h264", False),
    ("o.mkv", {"transparent": True}, "video", "vp9", True),
    ("o.mov", {}, "video", "prores", True),
    ("o.mov", {"transparent": False}, "video", "prores", False),
    ("o.webm", {}, "video", "vp9", True),
    ("frames", {}, "images", "png", True),
    ("f/%06d.png", {}, "images", "png", True),
])
def test_plan_output_formats(path, kw, mode, codec, rgba):
    kw.setdefault("transparent", None)
    spec = plan_output("composite", Path(path), codec=kw.pop("codec", None), **kw)
    assert (spec.mode, spec.codec, spec.rgba) == (mode, codec, rgba)
    alpha = plan_output("alpha", Path(path), codec=None, transparent=None)
    assert alpha.channels == "gray"


def test_plan_output_errors():
    with pytest.raises(OutputError, match="transparency"):
        plan_output("composite", Path("o.mp4"), codec=None, transparent=True)
    with pytest.raises(OutputError, match="unknown codec"):
        plan_output("composite", Path("o.mp4"), codec="xvid", transparent=None)
    with pytest.raises(OutputError, match="alpha bit depth"):
        plan_output("alpha", Path("a"), codec=None, transparent=None, alpha_bits=12)
    with pytest.raises(OutputError, match="single image"):
        plan_output("composite", Path("o.mp4"), codec=None, transparent=None, still=True)
