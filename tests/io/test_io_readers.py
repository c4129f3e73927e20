from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from rvm_clips import frame_image, make_clip
from rvmatte.errors import InputError
from rvmatte.io.readers import Source, parse_position, parse_range, probe, read_frames


@pytest.mark.parametrize("text,expected", [("12.5", (12.5, "s")), ("12.5s", (12.5, "s")),
                                           ("1:02.5", (62.5, "s")), ("01:00:01", (3601.0, "s")),
                                           ("150f", (150.0, "f")), (3, (3.0, "s")), (None, (None, "s"))])
def test_parse_position(text, expected):
    assert parse_position(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "1:2:3:4", "f", "-5f"])
def test_parse_position_invalid(text):
    with pytest.raises(InputError):
        parse_position(text)


def test_mixed_units_refused():
    with pytest.raises(InputError, match="both"):
        parse_range("1.0", "30f")


def test_probe_video_rotation_and_frames(tmp_path):
    clip = make_clip(tmp_path / "r.mp4", n=5, rotation=90, audio=True)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    assert info.frames == 5 and info.rate == 25 and info.audio["codec"] == "aac"
    frames = list(Source(info).frames())
    assert [f.index for f in frames] == list(range(5))
    assert frames[0].image.shape == (64, 48, 3)
    # the upright frame is the stored one turned 90 degrees counter-clockwise
    ref = np.rot90(frame_image(0, 64, 48))
    assert np.abs(frames[0].image.astype(int) - ref).mean() < 12


def test_resume_position_and_vfr(tmp_path):
    pts = [0, 30, 90, 100, 170, 260]
    clip = make_clip(tmp_path / "v.mkv", n=6, pts=pts, time_base=Fraction(1, 1000), audio=False)
    info = probe(clip)
    src = Source(info)
    assert [f.pts for f in src.frames()] == pts
    tail = list(src.frames(resume_index=3, resume_pts=pts[2] + 1))
    assert [(f.index, f.pts) for f in tail] == [(3, 100), (4, 170), (5, 260)]
    ranged = Source(info, parse_range("0.05", "0.2"))
    assert [f.pts for f in ranged.frames()] == [90, 100, 170]


def test_image_folder_and_pattern(tmp_path):
    for i in (3, 1, 2):
        Image.fromarray(np.full((10, 12, 3), i * 50, np.uint8)).save(tmp_path / f"f_{i:02d}.png")
    (tmp_path / "readme.txt").write_text("ignored")
    info = probe(tmp_path)
    assert info.kind == "images" and info.frames == 3 and (info.width, info.height) == (12, 10)
    vals = [int(f.image[0, 0, 0]) for f in Source(info).frames()]
    assert vals == [50, 100, 150]
    info = probe(tmp_path / "f_%02d.png")
    assert info.frames == 3
    with pytest.raises(InputError, match="no images match"):
        probe(tmp_path / "g_%02d.png")
    assert probe(tmp_path / "f_01.png").kind == "image"


def _png_declaring(path, width: int, height: int) -> None:
    """A real 2x2 PNG whose header (IHDR) then claims ``width`` x ``height``, CRC fixed, as a
    crafted "decompression bomb" file would."""
    import struct
    import zlib

    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    # signature (8) | length (4) | b"IHDR" | width (4) | height (4) | 5 more bytes | CRC (4)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_one_line(tmp_path):
    import subprocess
    import sys

    big = tmp_path / "big.png"
    _png_declaring(big, 60000, 60000)
    with pytest.raises(InputError, match="big.png"):
        probe(big)
    r = subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(big), "-o",
                        str(tmp_path / "out.png")], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("rvmatte: error: ") and "big.png" in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_read_frames_video_range_and_rotation(tmp_path):
    clip = make_clip(tmp_path / "r.mp4", n=6, rotation=90, audio=False)
    every = read_frames(clip)
    assert every.shape == (6, 64, 48, 3) and every.dtype == np.uint8  # upright
    want = np.stack([f.image for f in Source(probe(clip)).frames()])
    np.testing.assert_array_equal(every, want)
    np.testing.assert_array_equal(read_frames(clip, "2f", "5f"), want[2:5])
    np.testing.assert_array_equal(read_frames(clip, end=0.12), want[:3])  # 25 fps: 0, 0.04, 0.08
    np.testing.assert_array_equal(read_frames(clip, max_frames=2), want[:2])
    assert read_frames(clip, "10f").shape == (0, 64, 48, 3)  # past the end: no frames


def test_read_frames_images_and_public_name(tmp_path):
    import rvmatte

    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), i * 50, np.uint8)).save(tmp_path / f"f_{i:02d}.png")
    frames = rvmatte.read_frames(tmp_path)
    assert rvmatte.read_frames is read_frames
    assert frames.shape == (3, 10, 12, 3) and frames[:, 0, 0, 0].tolist() == [0, 50, 100]
    assert rvmatte.read_frames(tmp_path / "f_01.png").shape == (1, 10, 12, 3)


def test_read_frames_bad_input_is_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_frames(tmp_path / "missing.mp4")
    clip = make_clip(tmp_path / "c.mp4", n=2, audio=False)
    with pytest.raises(InputError, match="max_frames"):
        read_frames(clip, max_frames=-1)
    with pytest.raises(InputError, match="invalid position"):
        read_frames(clip, end="abc")
