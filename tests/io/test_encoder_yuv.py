"""The video writer makes the encoder's 4:2:0 frames itself (rvmatte.io.yuv.image_to_yuv420),
not libswscale: the fused path's colour conventions; and opens x264 without its AVX-512 code.

(No test encodes the same frames many times to catch x264's occasional difference with
AVX-512: at about 0.1 % of 96x48 encodes it cannot fail reliably; scripts/x264_determinism.py
measures it.)
"""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from rvm_clips import frame_image
from rvmatte.io.writers import (SegmentWriter, _yuv420_frame, encoder_options, pix_fmt_for,
                                plan_output, x264_cpu)
from rvmatte.io.yuv import gray_to_yuv420, image_to_yuv420, rgb_to_yuv420

TB, RATE = Fraction(1, 25), Fraction(25)


def _pictures(w=64, h=48):
    """Gradients with a moving block, and a patch of noise (every chroma case)."""
    frames = [frame_image(i, w, h) for i in range(3)]
    frames[1][4:20, 6:30] = np.random.default_rng(1).integers(0, 256, (16, 24, 3), np.uint8)
    return frames


def test_image_to_yuv420_is_the_device_conversion():
    """The same planes as rvmatte.io.yuv's torch conversion (the GPU path's, whose conventions
    the fused kernel shares) to within one level of rounding; gray exactly, every value."""
    for rgb in _pictures():
        mine = image_to_yuv420(rgb).astype(int)
        ref = rgb_to_yuv420(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
        d = np.abs(mine - ref.numpy())
        assert mine.shape == (72, 64) and d.max() <= 1 and (d > 0).mean() < 0.01
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    want = gray_to_yuv420(torch.from_numpy(gray)[None].float() / 255)[0].numpy()
    assert np.array_equal(image_to_yuv420(gray), want)
    swscale = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
    assert np.array_equal(image_to_yuv420(gray), swscale.to_ndarray())


def test_image_to_yuv420_takes_views_and_fills_out():
    rgba = np.random.default_rng(2).integers(0, 256, (10, 14, 4), np.uint8)
    out = np.full((15, 14), 7, np.uint8)
    assert image_to_yuv420(rgba[..., :3], out=out) is out
    assert np.array_equal(out, image_to_yuv420(np.ascontiguousarray(rgba[..., :3])))


@pytest.mark.parametrize("image,out", [
    (np.zeros((48, 63, 3), np.uint8), None),          # odd
    (np.zeros((47, 64), np.uint8), None),
    (np.zeros((48, 64, 4), np.uint8), None),          # RGBA: the caller passes its RGB
    (np.zeros((48, 64, 3), np.float32), None),
    (np.zeros((48, 64, 3), np.uint8), np.zeros((72, 62), np.uint8)),
    (np.zeros((48, 64, 3), np.uint8), np.zeros((72, 128), np.uint8)[:, ::2]),
])
def test_image_to_yuv420_refuses_what_it_cannot_convert(image, out):
    with pytest.raises(ValueError):
        image_to_yuv420(image, out=out)


def _encode(spec, path, frames, *, yuv=False, w=64, h=48):
    writer = SegmentWriter(spec, path, w, h, TB, RATE, 0, yuv=yuv)
    for i, image in enumerate(frames):
        writer.write(image, i)
    writer.close()
    return path


@pytest.mark.parametrize("kind,ext", [("composite", "mp4"), ("composite", "webm"),
                                      ("alpha", "mp4")])
def test_rgb_frames_are_encoded_as_the_planes_image_to_yuv420_makes(tmp_path, kind, ext):
    """An RGB (gray) picture written to a 4:2:0 stream gives the very packets its
    image_to_yuv420 planes give (libswscale's chroma is not the 2x2 mean: without the
    writer's own conversion the H.264 / VP9 packets differ)."""
    spec = plan_output(kind, tmp_path / f"o.{ext}", codec=None, transparent=False)
    assert pix_fmt_for(spec, 64, 48) == "yuv420p"
    pictures = _pictures() if kind == "composite" else [p[..., 2].copy() for p in _pictures()]
    a = _encode(spec, tmp_path / f"rgb.{ext}", pictures)
    b = _encode(spec, tmp_path / f"yuv.{ext}", [image_to_yuv420(p) for p in pictures], yuv=True)
    assert _packets(a) == _packets(b)


def _packets(path) -> list:
    """The stream's packets (a segment's WebM header holds a random UID)."""
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


@pytest.mark.parametrize("w", [64, 66])  # 66: padded rows in the frame (line size 80)
def test_rgba_frames_become_yuva_planes_with_the_alpha_as_it_is(w):
    rgba = np.concatenate([frame_image(2, w, 48),
                           np.arange(48 * w, dtype=np.uint32).reshape(48, w, 1).astype(np.uint8)],
                          axis=2)
    frame = _yuv420_frame(rgba, "yuva420p")
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
              for p in frame.planes]
    want = image_to_yuv420(rgba[..., :3])
    chroma = want[48:].reshape(2, 24, w // 2)
    assert frame.format.name == "yuva420p" and (frame.width, frame.height) == (w, 48)
    for got, ref in zip(planes, (want[:48], chroma[0], chroma[1], rgba[..., 3])):
        assert np.array_equal(got, ref)


def _colour_chart() -> np.ndarray:
    """8x8 patches (whole 4:2:0 chroma blocks): primaries, secondaries, greys, skin tones,
    a saturated and a dark corner of the cube."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255),
               (255, 0, 255), (255, 255, 255), (0, 0, 0), (128, 128, 128), (64, 64, 64),
               (192, 192, 192), (230, 190, 170), (198, 134, 66), (141, 85, 36), (255, 128, 0),
               (20, 40, 90), (250, 10, 120), (90, 200, 60), (12, 12, 12), (243, 243, 243),
               (100, 30, 30), (30, 100, 30), (30, 30, 100), (200, 180, 40)]
    chart = np.zeros((32, 48, 3), np.uint8)
    for k, c in enumerate(colours):
        chart[8 * (k // 6):8 * (k // 6) + 8, 8 * (k % 6):8 * (k % 6) + 8] = c
    return chart


def test_rgb_path_and_fused_planes_give_the_same_colours_and_tags(tmp_path):
    """A colour chart through the RGB path (SegmentWriter converts) and as the fused kernel's
    composite planes (Refiner.compose, alpha 1): lossless H.264 of each decodes to the same
    colours (within a level) and to the chart's (within 3: 8-bit limited-range YUV), and both
    streams carry the same tags, BT.601 limited range."""
    pytest.importorskip("numba")
    from rvmatte.runtime.kernels import Refiner

    chart = _colour_chart()
    h, w = chart.shape[:2]
    fused = np.empty((h * 3 // 2, w), np.uint8)
    refiner = Refiner()
    try:
        refiner.compose(np.ones((h, w), np.float32), chart.astype(np.float32) / 255,
                        composite_yuv=fused)
    finally:
        refiner.close()
    spec = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=False, quality=0)
    paths = (_encode(spec, tmp_path / "rgb.mp4", [chart] * 2, w=w, h=h),
             _encode(spec, tmp_path / "fused.mp4", [fused] * 2, yuv=True, w=w, h=h))
    decoded, tags = [], []
    for p in paths:
        with av.open(str(p)) as c:
            cc = c.streams.video[0].codec_context
            tags.append((int(cc.colorspace), int(cc.color_range), int(cc.color_primaries),
                         int(cc.color_trc)))
            f = next(c.decode(video=0))
            decoded.append((f.to_ndarray().astype(int), f.to_ndarray(format="rgb24").astype(int)))
    assert tags[0] == tags[1] and tags[0][:2] == (6, 1)
    (yuv_rgb, rgb), (yuv_fused, from_fused) = decoded
    assert np.abs(yuv_rgb - yuv_fused).max() <= 1
    assert np.abs(rgb - from_fused).max() <= 2
    assert np.abs(rgb - chart).max() <= 3 and np.abs(from_fused - chart).max() <= 3


def test_x264_is_opened_without_its_avx512_code(tmp_path):
    """H.264 outputs tell libx264 the CPU capabilities it detects here less AVX-512 (with it,
    the same frames now and then encode differently); x264 takes them (its log line lists
    them); where x264 uses no AVX-512 the options are left alone."""
    import av.logging

    cpu = x264_cpu()
    for kind in ("composite", "alpha"):
        opts = encoder_options(plan_output(kind, tmp_path / "o.mp4", codec=None,
                                           transparent=False))
        assert opts.get("x264-params") == (None if cpu is None else f"asm={cpu}")
    if cpu is None:
        return
    assert "AVX2" in cpu and "AVX512" not in cpu.upper()
    with av.logging.Capture() as logs:
        level = av.logging.get_level()
        av.logging.set_level(av.logging.INFO)
        try:
            cc = av.CodecContext.create("libx264", "w")
            cc.width, cc.height, cc.pix_fmt, cc.time_base = 64, 48, "yuv420p", TB
            cc.options = {"x264-params": f"asm={cpu}"}
            cc.open()
        finally:
            av.logging.set_level(level)
    line = next(m for _, _, m in logs if "using cpu capabilities" in m)
    assert line.split(":", 1)[1].split() == cpu.split(",")
