"""convert_video outputs: formats, timing, audio, alpha channels, ranges, inputs of all kinds."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from rvm_clips import (assert_composite, asymmetric_image, make_clip, png_frames, standin_alpha,
                       standin_model, stream_info, video_frames)
from rvmatte.errors import Cancelled
from rvmatte.inference.convert import ConversionResult, ProgressInfo, convert_video

KW = dict(seq_chunk=2, segment_frames=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", n=10)


def test_composite_alpha_pngs_timing_and_audio(tmp_path, model, clip):
    progress = []
    r = convert_video(clip, tmp_path / "out.mp4", alpha=tmp_path / "alpha", model=model,
                      progress=progress.append, **KW)
    assert isinstance(r, ConversionResult) and r.frames == 10 and r.audio == "copy"
    assert set(r.outputs) == {"composite", "alpha"}
    assert progress and isinstance(progress[-1], ProgressInfo) and progress[-1].done == 10
    assert progress[-1].total == 10
    src, out = stream_info(clip), stream_info(tmp_path / "out.mp4")
    assert out["time_base"] == src["time_base"] and out["rate"] == src["rate"]
    assert (out["width"], out["height"]) == (64, 48) and out["codec"] == "h264"
    in_pts, _ = video_frames(clip)
    out_pts, comp = video_frames(tmp_path / "out.mp4")
    assert out_pts == in_pts
    assert out["audio"]["codec"] == "aac"
    assert out["audio"]["samples"] == src["audio"]["samples"]
    assert abs(out["audio"]["end"] - src["audio"]["end"]) < 1e-3
    pngs = sorted((tmp_path / "alpha").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(10)]
    a = np.asarray(Image.open(pngs[0]))
    assert a.ndim == 2 and a.dtype == np.uint8 and a.shape == (48, 64)
    assert not list(tmp_path.glob("*.rvmatte-*"))  # checkpoint and temp files are gone


def test_transparent_mov_webm_png_have_alpha(tmp_path, clip):
    """The stand-in network's matte is 0 on the clip's background and 1 on its box: the
    ProRes 4444 and VP9 outputs are transparent and opaque exactly there."""
    convert_video(clip, tmp_path / "out.mov", alpha=tmp_path / "a/%04d.png",
                  foreground=tmp_path / "fgr.webm", model=standin_model(), **KW)
    alpha = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "a").iterdir())])
    assert alpha.shape == (10, 48, 64)
    zero, one = alpha == 0, alpha == 255
    assert zero.mean() > 0.5 and one.mean() > 0.1  # the matte reaches both ends
    _, src = video_frames(clip)
    assert np.abs(alpha - standin_alpha(src) * 255).max() <= 1  # and is the known one
    _, mov = video_frames(tmp_path / "out.mov", fmt="rgba")
    assert stream_info(tmp_path / "out.mov")["codec"] == "prores"
    assert stream_info(tmp_path / "out.mov")["audio"] is not None
    np.testing.assert_allclose(mov[..., 3].astype(int), alpha.astype(int), atol=2)
    assert (mov[..., 3][zero] <= 1).all() and (mov[..., 3][one] >= 254).all()
    info = stream_info(tmp_path / "fgr.webm")
    assert {k.lower(): v for k, v in info["metadata"].items()}.get("alpha_mode") == "1"
    _, webm = video_frames(tmp_path / "fgr.webm", fmt="rgba", decoder="libvpx-vp9")
    np.testing.assert_allclose(webm[..., 3].astype(int), alpha.astype(int), atol=12)
    assert webm[..., 3][zero].mean() < 3 and webm[..., 3][one].mean() > 252


def test_foreground_png_rgba_and_16bit_alpha(tmp_path, model):
    clip = make_clip(tmp_path / "c.mkv", n=4, audio=False)
    convert_video(clip, foreground=tmp_path / "f/%06d.png", alpha=tmp_path / "a16",
                  alpha_bits=16, model=model, **KW)
    f = Image.open(tmp_path / "f" / "000000.png")
    assert f.mode == "RGBA"
    a = np.asarray(Image.open(tmp_path / "a16" / "000003.png"))
    assert a.dtype in (np.uint16, np.int32) and a.max() > 255


@pytest.fixture(scope="module")
def bg_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("bg") / "c.mp4", n=5, audio=False)


def _background(kind: str, tmp_path, frames: np.ndarray):
    """``kind`` -> (the background argument, the background each frame gets (uint8 levels;
    None for transparent), convert_video keywords)."""
    n, h, w, _ = frames.shape
    if kind.startswith("colour"):
        kw = {"downsample_ratio": 0.5, "backend": "torch" if kind == "colour-tensor" else "auto",
              "refine_foreground": kind == "colour-fused-estimate"}
        return "#3366cc", np.broadcast_to(np.array([0x33, 0x66, 0xcc]), frames.shape), kw
    if kind == "white":
        return "white", np.full(frames.shape, 255), {}
    if kind == "image":
        Image.fromarray(asymmetric_image(h, w)).save(tmp_path / "bg.png")
        return str(tmp_path / "bg.png"), np.broadcast_to(asymmetric_image(h, w), frames.shape), {}
    if kind == "video":  # lossless (FFV1, RGB), 3 different frames: looped over the clip's 5
        bgf = np.stack([asymmetric_image(h, w) // (k + 1) for k in range(3)])
        _write_ffv1(tmp_path / "bg.mkv", bgf)
        return str(tmp_path / "bg.mkv"), bgf[np.arange(n) % 3], {}
    if kind == "blur":
        import torch

        from rvmatte.io.compose import BlurBackground

        src = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        blurred = BlurBackground(3).get(src, 0).permute(0, 2, 3, 1).numpy() * 255
        return "blur:3", blurred, {}
    return "transparent", None, {}


@pytest.mark.parametrize("kind", ["colour-fused", "colour-fused-estimate", "colour-tensor",
                                  "white", "image", "video", "blur", "transparent"])
def test_composite_pixels_over_every_background(tmp_path, bg_clip, kind, monkeypatch):
    """The composite (FFV1, lossless) is fgr * alpha + bg * (1 - alpha) within 2 levels, with
    fgr and alpha the conversion's own lossless outputs, over each kind of background, on the
    fused CPU path (a colour below ratio 1) and the tensor path; the stand-in network's
    alpha is 0 on the background and 1 on the box, so each side is checked. The network's
    own foreground (the frame) unless the kind names the estimate (foreground estimation,
    the CPU default, off elsewhere here: then fgr is the frame only where alpha is 1)."""
    from rvmatte.runtime.fused import FusedRunner

    _, frames = video_frames(bg_clip)
    spec, bg, kw = _background(kind, tmp_path, frames)
    calls = []
    fused = FusedRunner.network
    monkeypatch.setattr(FusedRunner, "network",
                        lambda self, *a, **k: calls.append(1) or fused(self, *a, **k))
    kw.setdefault("refine_foreground", False)
    r = convert_video(bg_clip, tmp_path / "comp.mkv", codec="ffv1", alpha=tmp_path / "a",
                      foreground=tmp_path / "f", background=spec, model=standin_model(),
                      seq_chunk=2, segment_frames=4, **kw)
    assert r.frames == 5
    assert bool(calls) == kind.startswith("colour-fused")  # which path made it
    alpha, fgr = png_frames(tmp_path / "a"), png_frames(tmp_path / "f")
    assert (alpha == 0).mean() > 0.5 and (alpha == 255).mean() > 0.1  # both ends reached
    diff = np.abs(fgr[..., :3].astype(int) - frames).max(-1)
    if kw["refine_foreground"]:  # the estimate: the frame where alpha is 1, not elsewhere
        # (alpha 255 may be 0.998 in float: solved, not copied, near the edge)
        assert (diff[alpha == 255] <= 1).mean() > 0.95 and diff[alpha == 0].max() > 10
    else:
        assert diff.max() <= 1   # the network's: the frame itself
    assert np.array_equal(fgr[..., 3], alpha)
    _, comp = video_frames(tmp_path / "comp.mkv", fmt="rgba" if bg is None else "rgb24")
    if bg is None:  # transparent: the foreground and alpha themselves
        assert np.abs(comp.astype(int) - fgr).max() <= 1
        return
    assert_composite(comp, fgr[..., :3], alpha, bg)


def _write_ffv1(path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img),
                                                          format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_opaque_colour_in_mov_has_no_alpha(tmp_path, model, bg_clip):
    """A transparent background in .mov keeps alpha; an opaque colour in .mov does not."""
    convert_video(bg_clip, tmp_path / "op.mov", background="black", model=model, **KW)
    with av.open(str(tmp_path / "op.mov")) as c:
        assert "a" not in c.streams.video[0].codec_context.pix_fmt.replace("yuv", "")


def test_rational_rate_and_vfr_are_kept(tmp_path, model):
    ntsc = make_clip(tmp_path / "ntsc.mp4", n=6, rate=Fraction(24000, 1001),
                     time_base=Fraction(1, 24000), pts=[i * 1001 for i in range(6)])
    convert_video(ntsc, tmp_path / "o.mp4", model=model, **KW)
    a, b = stream_info(ntsc), stream_info(tmp_path / "o.mp4")
    assert b["rate"] == Fraction(24000, 1001) and b["time_base"] == a["time_base"]
    assert video_frames(tmp_path / "o.mp4")[0] == video_frames(ntsc)[0]
    vfr_pts = [0, 40, 100, 120, 200, 230, 300, 400]
    vfr = make_clip(tmp_path / "vfr.mkv", n=8, time_base=Fraction(1, 1000), pts=vfr_pts)
    convert_video(vfr, tmp_path / "o.mkv", alpha=tmp_path / "a.webm", model=model, **KW)
    assert video_frames(tmp_path / "o.mkv")[0] == video_frames(vfr)[0] == vfr_pts
    assert video_frames(tmp_path / "a.webm")[0] == vfr_pts
    assert stream_info(tmp_path / "o.mkv")["audio"] is not None


def test_odd_size_rotation_10bit_444(tmp_path, model):
    odd = make_clip(tmp_path / "odd.mp4", w=65, h=49, n=3, audio=False, pix_fmt="yuv444p10le")
    convert_video(odd, tmp_path / "o.mp4", alpha=tmp_path / "a.mov", model=model, **KW)
    info = stream_info(tmp_path / "o.mp4")
    assert (info["width"], info["height"]) == (65, 49)
    rot = make_clip(tmp_path / "rot.mp4", w=64, h=48, n=3, audio=False, rotation=90)
    convert_video(rot, tmp_path / "r.mp4", alpha=tmp_path / "ra", model=model, **KW)
    info = stream_info(tmp_path / "r.mp4")
    assert (info["width"], info["height"]) == (48, 64)  # upright, no rotation flag needed
    assert np.asarray(Image.open(tmp_path / "ra" / "000000.png")).shape == (64, 48)


def test_ranges_by_time_and_frame(tmp_path, model, clip):
    r = convert_video(clip, tmp_path / "t.mp4", start=0.08, end=0.24, model=model, **KW)
    assert r.frames == 4
    pts, _ = video_frames(tmp_path / "t.mp4")
    assert pts[0] == 0 and len(pts) == 4
    info = stream_info(tmp_path / "t.mp4")
    assert info["audio"] is not None and info["audio"]["end"] < 0.3
    r = convert_video(clip, tmp_path / "f.mp4", start="2f", end="5f", model=model, **KW)
    assert r.frames == 3


def test_image_inputs(tmp_path, model):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((30, 41, 3), 60 * i, np.uint8)).save(folder / f"img_{i:03d}.png")
    r = convert_video(folder, tmp_path / "o.mp4", alpha=tmp_path / "a", model=model, **KW)
    assert r.frames == 3 and len(list((tmp_path / "a").iterdir())) == 3
    r = convert_video(folder / "img_%03d.png", tmp_path / "o2.webm", model=model, **KW)
    assert r.frames == 3
    r = convert_video(folder / "img_001.png", tmp_path / "one.png", alpha=tmp_path / "one_a.png",
                      model=model)
    assert r.frames == 1 and Image.open(tmp_path / "one.png").mode == "RGBA"
    assert Image.open(tmp_path / "one_a.png").size == (41, 30)


def test_gif_input(tmp_path, model):
    frames = [Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=80)
    r = convert_video(tmp_path / "a.gif", tmp_path / "o.mp4", model=model, **KW)
    assert r.frames == 4


def test_cancel_keeps_checkpoint_and_no_output(tmp_path, model, clip):
    import threading

    ev = threading.Event()

    def progress(p):
        if p.done >= 4:
            ev.set()

    outs = dict(alpha=tmp_path / "a", model=model, **KW)
    with pytest.raises(Cancelled):
        convert_video(clip, tmp_path / "o.mp4", progress=progress, cancel=ev, **outs)
    assert not (tmp_path / "o.mp4").exists()
    assert (tmp_path / "o.mp4.rvmatte-resume" / "job.json").exists()
    r = convert_video(clip, tmp_path / "o.mp4", resume=True, **outs)
    assert r.resumed_from == 4 and r.frames == 10
    assert len(video_frames(tmp_path / "o.mp4")[0]) == 10
    # the resumed run carried on from the saved recurrent state: every frame is the one an
    # uninterrupted run makes (the random network's output depends on its state): the same
    # lossless alpha, the same H.264 composite, byte for byte
    convert_video(clip, tmp_path / "u.mp4", alpha=tmp_path / "ua", model=model, **KW)
    assert np.array_equal(png_frames(tmp_path / "a"), png_frames(tmp_path / "ua"))
    got, want = video_frames(tmp_path / "o.mp4")[1], video_frames(tmp_path / "u.mp4")[1]
    assert np.array_equal(got, want)
    assert (tmp_path / "o.mp4").read_bytes() == (tmp_path / "u.mp4").read_bytes()


def test_batch_folder_skips_failures(tmp_path, model):
    from rvmatte.inference.convert import convert_folder

    src = tmp_path / "clips"
    src.mkdir()
    make_clip(src / "a.mp4", n=2, audio=False)
    make_clip(src / "b.mkv", n=2, audio=False)
    (src / "broken.mp4").write_bytes(b"not a video at all")
    res = convert_folder(src, tmp_path / "out", alpha=tmp_path / "out" / "{stem}_matte.webm",
                         model=model, **KW)
    assert set(map(lambda p: p.split("/")[-1], res.results)) == {"a.mp4", "b.mkv"}
    assert list(res.failed) == [str(src / "broken.mp4")] and not res.ok
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.mp4", "a_matte.webm", "b.mp4", "b_matte.webm"]


def test_h265_ffv1_and_mkv_alpha(tmp_path, model):
    clip = make_clip(tmp_path / "c.mp4", n=3)
    r = convert_video(clip, tmp_path / "o.mp4", codec="h265", alpha=tmp_path / "a.mkv",
                      foreground=tmp_path / "f.mkv", model=model, **KW)
    assert r.audio == "copy"
    assert stream_info(tmp_path / "o.mp4")["codec"] == "hevc"
    assert len(video_frames(tmp_path / "o.mp4")[0]) == 3
    assert stream_info(tmp_path / "f.mkv")["audio"] is not None  # foreground keeps the audio
    assert stream_info(tmp_path / "a.mkv")["audio"] is None
    convert_video(clip, tmp_path / "t.mkv", codec="ffv1", background="transparent",
                  model=model, **KW)
    _, rgba = video_frames(tmp_path / "t.mkv", fmt="rgba")
    assert stream_info(tmp_path / "t.mkv")["codec"] == "ffv1" and rgba.shape == (3, 48, 64, 4)


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_alpha_format_gray_through_convert_video(tmp_path, backend):
    """alpha_format="gray": the H.264 alpha is one plane (4:0:0), on the tensor path and on
    the fused uint8 path, and decodes to the 4:2:0 stream's alpha within a few levels; it is
    part of the resume fingerprint; a bad name is one line before anything is written."""
    from rvmatte.errors import OutputError
    from rvmatte.inference.plan import ConvertRequest

    clip = make_clip(tmp_path / "in.mp4", w=192, h=108, n=6, audio=False)
    kw = dict(backend=backend, device="cpu", downsample_ratio=0.5, seq_chunk=2)
    gray = convert_video(clip, alpha=tmp_path / "g.mp4", alpha_format="gray", **kw)
    convert_video(clip, alpha=tmp_path / "y.mp4", **kw)
    from test_alpha_stream import h264_chroma_format  # the SPS: FFmpeg decodes both 4:2:0

    assert h264_chroma_format(gray.outputs["alpha"])[1] == 0   # 4:0:0
    assert h264_chroma_format(tmp_path / "y.mp4")[1] == 1      # 4:2:0
    g, y = (_gray_frames(p) for p in (gray.outputs["alpha"], tmp_path / "y.mp4"))
    assert g.shape == y.shape == (6, 108, 192)
    assert np.abs(g - y).mean() < 1.0
    a = ConvertRequest.make(clip, alpha=tmp_path / "a.mp4")
    b = ConvertRequest.make(clip, alpha=tmp_path / "a.mp4", alpha_format="gray")
    assert a.identity() != b.identity()
    with pytest.raises(OutputError, match="unknown alpha format 'grey'"):
        convert_video(clip, alpha=tmp_path / "bad.mp4", alpha_format="grey", **kw)
    assert not (tmp_path / "bad.mp4").exists()


def _gray_frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray").astype(int) for f in c.decode(video=0)])
