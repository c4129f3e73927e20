from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rvm_clips import make_clip
from rvmatte.errors import InputError, OutputError
from rvmatte.io.compose import (BlurBackground, ColorBackground, ImageBackground,
                                VideoBackground, cover, parse_background, parse_color, to_uint8)
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
