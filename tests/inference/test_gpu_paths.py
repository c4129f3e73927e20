"""The GPU-oriented parts of the pipeline, exercised on the CPU (CI has no GPU): colour
conversion on the model's device, encoder choice with its software fallback, x264 presets,
the CUDA-graph runner's fallback, and half precision with the Fast Guided Filter."""

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from rvm_clips import make_clip, tiny_model
from rvmatte.errors import OutputError
from rvmatte.inference.convert import convert_video
from rvmatte.inference.session import Matter
from rvmatte.runtime import auto_backend
from rvmatte.io.writers import hardware_encoder_error, pick_encoder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("gpu") / "in.mp4", w=96, h=64, n=10)


def _frames(path, fmt):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)]).astype(int)


def test_device_colour_conversion_matches_the_cpu_path(tmp_path, clip):
    """device_yuv=True (the CUDA default) converts colours with torch; forced here on the CPU.
    Same frames, same timing, colours within a few levels of libswscale's."""
    m = tiny_model()
    outs = {}
    for flag in (False, True):
        d = tmp_path / str(flag)
        d.mkdir()
        r = convert_video(clip, d / "c.mp4", alpha=d / "a.mp4", foreground=d / "f.mp4",
                          model=Matter(m, backend="torch"), device_yuv=flag, preset="ultrafast")
        outs[flag] = d
        assert r.frames == 10 and r.audio == "copy"
        assert r.encoders == {"composite": "libx264", "alpha": "libx264", "foreground": "libx264"}
    for name, fmt, limit in (("c.mp4", "rgb24", 3.0), ("a.mp4", "gray", 2.0), ("f.mp4", "rgb24", 3.0)):
        a, b = _frames(outs[False] / name, fmt), _frames(outs[True] / name, fmt)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < limit, (name, np.abs(a - b).mean())
    with av.open(str(outs[False] / "c.mp4")) as x, av.open(str(outs[True] / "c.mp4")) as y:
        assert [f.pts for f in x.decode(video=0)] == [f.pts for f in y.decode(video=0)]


def test_device_colour_chunks_are_filled_in_place(tmp_path, clip):
    """With 4:2:0 input the decode thread writes each frame into its chunk (4 + 4 + a last 2
    here): the same mattes as one frame per chunk, every frame in its place."""
    from PIL import Image

    m = tiny_model()
    for chunk in (1, 4):
        convert_video(clip, tmp_path / f"a{chunk}", model=Matter(m, backend="torch"),
                      device_yuv=True, seq_chunk=chunk)
    one, four = ([np.asarray(Image.open(p), dtype=int) for p in sorted((tmp_path / d).iterdir())]
                 for d in ("a1", "a4"))
    assert len(one) == len(four) == 10
    assert max(np.abs(a - b).max() for a, b in zip(one, four)) <= 1
    assert np.abs(one[0] - one[-1]).mean() > 0.5  # frames differ, so a misplaced one would show


def test_device_colour_falls_back_for_rgba_and_odd_sizes(tmp_path):
    odd = make_clip(tmp_path / "odd.mp4", w=63, h=47, n=3, pix_fmt="yuv444p", audio=False)
    r = convert_video(odd, tmp_path / "o.mp4", alpha=tmp_path / "oa.mp4",
                      foreground=tmp_path / "of.webm", model=tiny_model(), device_yuv=True)
    assert r.frames == 3
    with av.open(str(tmp_path / "o.mp4")) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.codec_context.pix_fmt) == (63, 47, "yuv444p")
    with av.open(str(tmp_path / "of.webm")) as c:
        assert c.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")


def test_presets_change_the_encoding(tmp_path, clip):
    sizes = {}
    for p in ("ultrafast", "slow"):
        convert_video(clip, tmp_path / f"{p}.mp4", model=tiny_model(), preset=p)
        sizes[p] = (tmp_path / f"{p}.mp4").stat().st_size
        assert len(_frames(tmp_path / f"{p}.mp4", "rgb24")) == 10
    assert sizes["ultrafast"] != sizes["slow"]


def test_unknown_preset_and_encoder_choice_fail_before_writing(tmp_path, clip):
    for kw, match in (({"preset": "warp"}, "unknown preset"),
                      ({"encoder": "quantum"}, "unknown encoder choice")):
        with pytest.raises(OutputError, match=match) as ei:
            convert_video(clip, tmp_path / "o.mp4", model=tiny_model(), **kw)
        assert "\n" not in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_hardware_encoder_probe_and_fallback():
    err = hardware_encoder_error("h264_nvenc")
    if err is None:
        pytest.skip("this machine has a working NVENC")
    assert "h264_nvenc" in err and "\n" not in err
    assert hardware_encoder_error("h264_nvenc") is err  # cached
    assert pick_encoder("h264", "auto", gpu=False) == (None, None)      # CPU: software, silently
    enc, note = pick_encoder("h264", "auto", gpu=True)                 # GPU without NVENC
    assert enc is None and note.endswith("using libx264")
    assert pick_encoder("h264", "software", gpu=True) == (None, None)
    assert pick_encoder("vp9", "auto", gpu=True) == (None, None)       # no hardware VP9 encoder
    with pytest.raises(OutputError, match="use --encoder software"):
        pick_encoder("h264", "hardware")
    with pytest.raises(OutputError, match="no hardware encoder for vp9"):
        pick_encoder("vp9", "hardware")


def test_hardware_encoder_request_is_a_clear_error(tmp_path, clip):
    if hardware_encoder_error("h264_nvenc") is None:
        pytest.skip("this machine has a working NVENC")
    with pytest.raises(OutputError, match="h264_nvenc cannot encode") as ei:
        convert_video(clip, tmp_path / "o.mp4", model=tiny_model(), encoder="hardware")
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "o.mp4").exists()


def test_cli_encoder_and_preset(tmp_path, clip):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "rvmatte", "convert", str(clip), "--weights", "none",
            "--device", "cpu"]
    p = subprocess.run(base + ["-o", str(tmp_path / "o.mp4"), "--preset", "ultrafast", "--json"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["encoders"] == {"composite": "libx264"} and out["frames"] == 10
    p = subprocess.run(base + ["-o", str(tmp_path / "h.mp4"), "--encoder", "hardware"],
                       capture_output=True, text=True, env=env)
    if hardware_encoder_error("h264_nvenc") is not None:
        assert p.returncode != 0
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert "h264_nvenc" in p.stderr and not (tmp_path / "h.mp4").exists()
    p = subprocess.run(base + ["-o", str(tmp_path / "x.mp4"), "--preset", "warp"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_cudagraph_backend_runs_eagerly_off_cuda(clip):
    from rvmatte.runtime import make_runner

    m = tiny_model()
    r = make_runner("cudagraph", m)
    assert r.fallback_reason == "not a CUDA device"
    x = torch.rand(1, 2, 3, 64, 96)
    a, b = r(x, None, 0.5), make_runner("torch-fast", m)(x, None, 0.5)
    assert torch.equal(a.pha, b.pha) and torch.equal(a.fgr, b.fgr)
    s = Matter(m, backend="cudagraph", downsample_ratio=0.5)
    fgr, pha, _ = s.process(np.zeros((2, 64, 96, 3), np.uint8))
    assert pha.shape == (2, 64, 96)


def test_auto_backend_rules():
    """Device types come resolved (rvmatte.hardware.resolve_device refuses a CUDA device where
    there is none), so the rule itself needs no torch."""
    assert auto_backend("cpu", "float32", 0.25) in ("fused", "onnxruntime", "torch-fast")
    assert auto_backend("cpu", "bfloat16", 0.25) == "torch"
    assert auto_backend("cuda", "float16", 0.25) == "cudagraph"


def test_half_precision_fast_guided_filter_is_accurate():
    """In fp16 the guided filter's ``cov / (var + eps)`` used to cancel (alpha errors up to 1.0
    at ratio 0.5); its statistics are now float32."""
    import rvmatte

    m32 = rvmatte.load_model(device="cpu")
    m16 = rvmatte.load_model(device="cpu", dtype="float16")
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 16, generator=g), size=(72, 128),
                                        mode="bilinear", align_corners=False)[None]
    with torch.inference_mode():
        p32 = m32(x, None, 0.5).pha
        p16 = m16(x.half(), None, 0.5).pha.float()
    assert (p16 - p32).abs().max() < 0.05


def test_gpu_chunk_size_follows_the_frame_size():
    from rvmatte.inference.plan import default_seq_chunk

    assert default_seq_chunk("cpu", 2160, 3840) == 1
    assert default_seq_chunk("cuda", 1080, 1920) == 12
    assert default_seq_chunk("cuda", 720, 1280) == 12
    assert default_seq_chunk("cuda", 2160, 3840) == 3
    assert default_seq_chunk("cuda", 4320, 7680) == 1


def test_out_of_gpu_memory_is_one_clear_line(tmp_path, clip, monkeypatch):
    """CI has no GPU to exhaust: the model call raises the error CUDA would raise."""
    m = Matter(tiny_model(), backend="torch")

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(m, "step", oom)
    from rvmatte.errors import RvmatteError

    with pytest.raises(RvmatteError, match="out of GPU memory at 1 frame") as ei:
        convert_video(clip, tmp_path / "o.mp4", model=m)
    assert "\n" not in str(ei.value) and not (tmp_path / "o.mp4").exists()
