"""The alpha stream of H.264/H.265 outputs: 4:2:0 (default, two presets faster than the
composite) or one plane (``alpha_format="gray"``, 4:0:0); what cannot take one plane keeps its
old encoding; the streams decode in PyAV (and in Chromium where it is installed) to the alpha
within a bound."""

from __future__ import annotations

import dataclasses
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rvmatte.errors import OutputError
from rvmatte.io.segments import SegmentedOutputs
from rvmatte.io.writers import (ALPHA_FORMATS, DEFAULT_ALPHA_FORMAT, SegmentWriter, assemble,
                                encoder_options, pix_fmt_for, plan_output)

W, H, N = 192, 108, 12
RATE = Fraction(25)
TB = Fraction(1, 25)


def matte(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A moving soft-edged disc with a hair-like fringe: uint8 (H, W), 0 / 255 and ramps."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - (w * 0.3 + 3 * i), yy - h / 2)
    a = np.clip((h * 0.35 - r) / 6.0, 0.0, 1.0)
    a *= 1.0 - 0.3 * (np.sin(xx * 0.9 + i) > 0.6) * (a < 1.0)
    return np.round(a * 255).astype(np.uint8)


def limited_yuv(alpha: np.ndarray) -> np.ndarray:
    """What the fused kernel hands a 4:2:0 alpha stream: Y = alpha in limited range, U = V = 128."""
    h, w = alpha.shape
    y = (alpha.astype(np.float32) * (219 / 255) + 16.5).astype(np.uint8)
    return np.concatenate([y, np.full((h // 2, w), 128, np.uint8)])


def h264_chroma_format(path: Path) -> tuple:
    """``(profile_idc, chroma_format_idc)`` of the stream's SPS (FFmpeg reports 4:0:0 H.264 as
    yuvj420p with flat chroma, so the decoded pixel format does not tell): the benchmark's
    reader, benchmarks/alpha_encode.py::sps_chroma_format."""
    return _benchmark().sps_chroma_format(path)


def _benchmark():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import alpha_encode

    return alpha_encode


def alpha_spec(path: Path, codec=None, fmt=None, **kw):
    return plan_output("alpha", path, codec=codec, transparent=None, alpha_format=fmt, **kw)


def encode(spec, path: Path, frames, *, w=W, h=H) -> SegmentWriter:
    yuv = pix_fmt_for(spec, w, h) == "yuv420p"
    writer = SegmentWriter(spec, path, w, h, TB, RATE, 0, yuv=yuv)
    for i, a in enumerate(frames):
        writer.write(limited_yuv(a) if yuv else a, i)
    writer.close()
    return writer


def decode(path: Path) -> tuple:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = (s.codec_context.name, s.codec_context.profile, s.codec_context.color_range)
        frames = np.stack([f.to_ndarray(format="gray") for f in c.decode(s)])
    return frames, info


def delta(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.abs(got.astype(np.int16) - want.astype(np.int16))


FRAMES = [matte(i) for i in range(N)]
WANT = np.stack(FRAMES)


# ---- the plan: which stream, which preset, bad values ---------------------------------------

def test_default_alpha_stream_is_420_two_presets_faster(tmp_path):
    a = alpha_spec(tmp_path / "a.mp4")
    assert a.alpha_format == DEFAULT_ALPHA_FORMAT == "yuv420" and not a.gray
    assert pix_fmt_for(a, W, H) == "yuv420p"
    assert a.encode_preset == "ultrafast" and encoder_options(a)["preset"] == "ultrafast"
    for user, stream in [("medium", "faster"), ("superfast", "ultrafast"),
                         ("veryslow", "slow")]:
        assert dataclasses.replace(a, preset=user).encode_preset == stream
    comp = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=None)
    assert comp.encode_preset == "veryfast"           # the composite keeps --preset
    h265 = alpha_spec(tmp_path / "a.mp4", codec="h265")
    assert h265.encode_preset == "veryfast"            # x265's presets were not measured so


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_gray_alpha_format_is_one_plane_at_any_size(tmp_path, codec):
    a = alpha_spec(tmp_path / "a.mkv", codec=codec, fmt="gray")
    assert a.gray and a.describe() == f"{codec} gray"
    assert pix_fmt_for(a, W, H) == pix_fmt_for(a, W + 1, H + 1) == "gray"


@pytest.mark.parametrize("path,codec,old", [
    ("a.webm", None, "yuv420p"),           # VP9 has no monochrome profile
    ("a.mov", None, "yuv444p10le"),        # ProRes 4444
    ("a.mov", "qtrle", "rgb24"),
    ("a.mkv", "ffv1", "gray"),             # already one plane
    ("frames", None, "gray"),              # PNG
])
def test_gray_falls_back_to_the_old_encoding_where_it_cannot_apply(tmp_path, path, codec, old):
    a = alpha_spec(tmp_path / path, codec=codec, fmt="gray")
    b = alpha_spec(tmp_path / path, codec=codec)
    assert pix_fmt_for(a, W, H) == pix_fmt_for(b, W, H) == old
    assert not a.gray and encoder_options(a) == encoder_options(b)


def test_gray_with_nvenc_keeps_420(tmp_path):
    a = dataclasses.replace(alpha_spec(tmp_path / "a.mp4", fmt="gray"), encoder="h264_nvenc")
    assert not a.gray and pix_fmt_for(a, W, H) == "yuv420p"
    assert encoder_options(a)["preset"] == "p2"       # NVENC keeps the --preset mapping


def test_gray_is_for_the_alpha_only(tmp_path):
    comp = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=None,
                       alpha_format="gray")
    assert not comp.gray and pix_fmt_for(comp, W, H) == "yuv420p"


@pytest.mark.parametrize("bad", ["grey", "yuv444", "", 3])
def test_bad_alpha_format_is_one_line(tmp_path, bad):
    with pytest.raises(OutputError) as e:
        alpha_spec(tmp_path / "a.mp4", fmt=bad)
    msg = str(e.value)
    assert "\n" not in msg and "unknown alpha format" in msg
    assert all(f in msg for f in ALPHA_FORMATS)


def test_alpha_format_names_are_case_insensitive(tmp_path):
    assert alpha_spec(tmp_path / "a.mp4", fmt=" GRAY ").alpha_format == "gray"


# ---- the streams decode to the alpha --------------------------------------------------------

# Bounds at the default CRF (18 for H.264, 22 for H.265) on this synthetic matte (a hard
# fringe at 192x108), as measured: the H.264 alpha at ultrafast max 17 / mean 0.16 (gray: 14 /
# 0.14), the stream before (veryfast) 43 / 0.39; H.265 4:2:0 83 / 0.28, gray 64 / 0.27. On a
# real 1080p matte (benchmarks/alpha_encode.py) the H.264 streams at ultrafast reach 7-11.
BOUND_MAX, BOUND_MEAN = 20, 0.25
BOUND_MAX_H265, BOUND_MEAN_H265 = 90, 0.35


def old_h264_error(tmp_path) -> np.ndarray:
    """|dalpha| of the stream as it was before: 4:2:0 at --preset (veryfast)."""
    spec = alpha_spec(tmp_path / "old.mp4")
    spec = dataclasses.replace(spec, preset="fast")     # fast - 2 = veryfast
    assert spec.encode_preset == "veryfast"
    encode(spec, spec.path, FRAMES)
    return delta(decode(spec.path)[0], WANT)


def test_default_h264_alpha_decodes_in_pyav(tmp_path):
    path = tmp_path / "a.mp4"
    encode(alpha_spec(path), path, FRAMES)
    got, (name, profile, rng) = decode(path)
    assert name == "h264" and got.shape == WANT.shape
    assert profile == "Constrained Baseline" and h264_chroma_format(path) == (66, 1)
    d, old = delta(got, WANT), old_h264_error(tmp_path)
    assert d.max() <= BOUND_MAX and d.mean() <= BOUND_MEAN
    assert d.max() <= old.max() and d.mean() <= old.mean()   # more exact than before


def test_gray_h264_alpha_is_400_and_decodes_in_pyav(tmp_path):
    path = tmp_path / "a.mp4"
    writer = encode(alpha_spec(path, fmt="gray"), path, FRAMES)
    assert writer.stream.pix_fmt == "gray"
    got, (name, profile, rng) = decode(path)
    assert name == "h264" and profile == "High" and got.shape == WANT.shape
    assert h264_chroma_format(path) == (100, 0)       # High profile, monochrome
    assert rng == 2                                   # full range: Y is the alpha itself
    assert np.array_equal(got[:, 0, 0], WANT[:, 0, 0])     # 0 stays 0
    d = delta(got, WANT)
    assert d.max() <= BOUND_MAX and d.mean() <= BOUND_MEAN


def test_gray_h265_alpha_decodes_in_pyav(tmp_path):
    path = tmp_path / "a.mp4"
    encode(alpha_spec(path, codec="h265", fmt="gray"), path, FRAMES)
    got, (name, profile, rng) = decode(path)
    assert name == "hevc" and profile == "Rext" and got.shape == WANT.shape
    d = delta(got, WANT)
    assert d.max() <= BOUND_MAX_H265 and d.mean() <= BOUND_MEAN_H265


def test_gray_alpha_keeps_an_odd_size(tmp_path):
    path = tmp_path / "a.mp4"
    frames = [matte(i, W + 1, H + 1) for i in range(4)]
    encode(alpha_spec(path, fmt="gray"), path, frames, w=W + 1, h=H + 1)
    got, _ = decode(path)
    assert got.shape == (4, H + 1, W + 1)
    assert delta(got, np.stack(frames)).max() <= BOUND_MAX


def test_gray_stream_refuses_420_planes(tmp_path):
    spec = alpha_spec(tmp_path / "a.mp4", fmt="gray")
    with pytest.raises(OutputError, match="gray output cannot be fed YUV 4:2:0 planes"):
        SegmentWriter(spec, tmp_path / "a.mp4", W, H, TB, RATE, 0, yuv=True)


@pytest.mark.parametrize("fmt", ["yuv420", "gray"])
def test_alpha_segments_join_into_one_stream(tmp_path, fmt):
    """Two segments (each from a key frame), joined by assemble: every frame, in order."""
    spec = alpha_spec(tmp_path / "alpha.mp4", fmt=fmt)
    yuv = pix_fmt_for(spec, W, H) == "yuv420p"

    def make(kind, index, pts):
        return SegmentWriter(spec, tmp_path / f"seg_{index:03d}.mp4", W, H, TB, RATE, pts,
                             yuv=yuv)

    outs = SegmentedOutputs(["alpha"], make)
    segments = []
    for i, a in enumerate(FRAMES):
        outs.write("alpha", i, i, limited_yuv(a) if yuv else a)
        if i == N // 2 - 1:
            outs.boundary()
    outs.boundary()
    for done, _ in outs.completed(block=True):
        segments.append(done["alpha"])
    outs.shutdown(abort=False)
    assert len(segments) == 2
    assemble(spec, segments, spec.path, time_base=TB, rate=RATE, audio=None)
    got, _ = decode(spec.path)
    with av.open(str(spec.path)) as c:
        tb = c.streams.video[0].time_base
        times = sorted(p.pts * tb for p in c.demux(video=0) if p.size)
    assert got.shape == WANT.shape and times == [i * TB for i in range(N)]
    assert delta(got, WANT).max() <= BOUND_MAX


def test_gray_alpha_in_encoder_processes_is_what_a_thread_writes(tmp_path):
    """One-plane frames through the encoder processes' shared ring: the same stream."""
    spec = alpha_spec(tmp_path / "alpha.mp4", fmt="gray")

    def args(kind, index, pts):
        return dict(spec=spec, path=tmp_path / f"{kind}_{index:03d}.mp4", width=W, height=H,
                    time_base=TB, rate=RATE, start_pts=pts, threads=1)

    outs = SegmentedOutputs(["alpha"], lambda *a: SegmentWriter(**args(*a)), workers=2,
                            threaded=True, writer_args=args, frame_bytes=W * H, bound=N + 1)
    assert outs.processes
    for i, a in enumerate(FRAMES):
        outs.write("alpha", i, i, a)
    outs.boundary()
    (done, _), = list(outs.completed(block=True))
    outs.shutdown(abort=False)
    ref = SegmentWriter(**{**args("ref", 0, 0), "path": tmp_path / "ref.mp4"})
    for i, a in enumerate(FRAMES):
        ref.write(a, i)
    ref.close()
    got, want = decode(done["alpha"][0])[0], decode(ref.path)[0]
    assert got.shape == WANT.shape and np.array_equal(got, want)


# ---- in a browser ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("fmt", ["yuv420", "gray"])
def test_h264_alpha_plays_in_chromium(tmp_path, fmt):
    """Headless Chromium (Debian's build, software decoding) shows the first frame of both
    H.264 alpha streams; the red channel is the alpha within the bound."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}); apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    browser_first_frames = _benchmark().browser_first_frames

    path = tmp_path / "a.mp4"
    encode(alpha_spec(path, fmt=fmt), path, FRAMES)
    shown = browser_first_frames([path], CHROMIUM)[str(path)]
    assert isinstance(shown, np.ndarray), shown
    assert shown.shape == (H, W) and delta(shown, WANT[0]).max() <= BOUND_MAX
