"""Backend ``fused``: ONNX Runtime for the network, rvmatte's numba kernel for full resolution.

Checked against the PyTorch path it replaces: the kernels' downsample / upsample arithmetic,
the uint8 outputs (within one level, almost everywhere identical), the float outputs through
``Matter``, and whole conversions.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("numba")
pytest.importorskip("onnxruntime")

from rvmatte.runtime import kernels  # noqa: E402
from rvmatte.errors import RvmatteError  # noqa: E402
from rvmatte.inference.session import Matter  # noqa: E402
from rvmatte.io.compose import composite, to_uint8  # noqa: E402
from rvmatte.models.guided_filter import apply_coefficients  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_talking_head_640x360.mp4"


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random frames (a blurred person-free scene: blobs, not noise)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=g), size=(h, w),
                      mode="bilinear", align_corners=False)
    return (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("h,w,ratio", [(1080, 1920, 0.25), (361, 643, 0.4), (45, 77, 0.5),
                                       (64, 64, 0.3)])
def test_downsample_is_the_networks(h, w, ratio):
    frame = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    want = F.interpolate(x, scale_factor=ratio, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)[0].numpy()
    got = kernels.downsample(frame, ratio)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6


def _reference(frame: np.ndarray, a: torch.Tensor, b: torch.Tensor, bg) -> dict:
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    res, pha = apply_coefficients(x, a[None], b[None])
    fgr, pha = (res + x).clamp(0, 1), pha.clamp(0, 1)
    c = composite(fgr, pha, torch.tensor(bg).view(1, 3, 1, 1).expand_as(fgr))
    hwc = lambda t: to_uint8(t)[0].permute(1, 2, 0).numpy()  # noqa: E731
    return {"composite": hwc(c), "foreground": hwc(fgr), "alpha": to_uint8(pha)[0, 0].numpy(),
            "rgba": hwc(torch.cat([fgr, pha], 1)), "fgr_float": fgr[0].numpy(),
            "pha_float": pha[0, 0].numpy()}


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("h,w,hl,wl", [(270, 480, 67, 120), (101, 77, 50, 38), (48, 64, 48, 64)])
def test_refine_matches_the_pytorch_steps(threads, h, w, hl, wl):
    """Upsampled coefficients, clamps, composite and 8-bit rounding as the PyTorch path
    (apply_coefficients, MattingNetwork.forward, composite, to_uint8) computes them."""
    g = torch.Generator().manual_seed(h + w)
    frame = _frames(1, h, w, seed=h)[0]
    a = torch.randn(4, hl, wl, generator=g) * 0.7
    b = torch.rand(4, hl, wl, generator=g) * 1.4 - 0.2  # outside [0, 1] too: the clamps matter
    bg = (0.2, 0.9, 0.35)
    want = _reference(frame, a, b, bg)
    ref = kernels.Refiner(threads)
    got = {"composite": np.empty((h, w, 3), np.uint8), "foreground": np.empty((h, w, 3), np.uint8),
           "alpha": np.empty((h, w), np.uint8), "rgba": np.empty((h, w, 4), np.uint8)}
    ref(frame, a.numpy(), b.numpy(), background=bg, **got)
    for k, v in got.items():
        d = np.abs(v.astype(int) - want[k])
        assert d.max() <= 1, k                     # float32 rounding at a .5 boundary at most
        assert (d > 0).mean() < 1e-3, k
    fgr, pha = np.empty((3, h, w), np.float32), np.empty((h, w), np.float32)
    src = np.ascontiguousarray(frame.transpose(2, 0, 1), np.float32) / 255
    ref.floats(src, a.numpy(), b.numpy(), fgr, pha)
    assert np.abs(fgr - want["fgr_float"]).max() < 1e-5
    assert np.abs(pha - want["pha_float"]).max() < 1e-5
    ref.close()


def test_refiner_used_after_close_still_writes_every_band():
    """close() stops the band threads; a later call starts them again (it used to compute
    the first band only and leave the other rows as they were)."""
    frame = _frames(1, 64, 48)[0]
    a = np.full((4, 16, 12), 0.25, np.float32)
    b = np.full((4, 16, 12), 0.5, np.float32)
    ref = kernels.Refiner(3)
    first, again = np.empty((64, 48), np.uint8), np.full((64, 48), 7, np.uint8)
    ref(frame, a, b, alpha=first)
    ref.close()
    ref(frame, a, b, alpha=again)
    ref.close()
    assert np.array_equal(first, again)
    pha, fgr = np.zeros((64, 48), np.float32), np.zeros((64, 48, 3), np.float32)
    ref.floats_u8(frame, a, b, fgr, pha)
    out = np.full((64, 48), 7, np.uint8)
    ref.compose(pha, fgr, alpha=out)
    ref.close()
    assert np.array_equal(out, first)


def test_outputs_not_asked_for_are_not_written():
    frame = _frames(1, 32, 48)[0]
    coef = np.zeros((4, 8, 12), np.float32)
    alpha = np.full((32, 48), 7, np.uint8)
    kernels.Refiner(1)(frame, coef, coef + 0.5, alpha=alpha)
    assert (alpha == 128).all()  # b = 0.5, a = 0


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_session_matches_eager(pretrained, ratio):
    """Matter(backend="fused") gives the eager model's float outputs, state carried on.

    Against ONNX Runtime's whole graph (the same network half) it agrees to float rounding;
    against eager PyTorch both ONNX Runtime paths differ by up to 1.1e-4 on these frames at
    ratio 0.5 (the guided filter's ``a * x + b`` amplifies the network's rounding where the
    image is flat and ``a`` is large), hence 2e-4 there."""
    frames = _frames(4, 96, 160, seed=3)
    eager = Matter(pretrained, downsample_ratio=ratio, backend="torch")
    whole = Matter(pretrained, downsample_ratio=ratio, backend="onnxruntime")
    fused = Matter(pretrained, downsample_ratio=ratio, backend="fused")
    for chunk in (frames[:2], frames[2:], frames[::-1]):
        fe, pe, _ = eager.process(chunk)
        fo, po, _ = whole.process(chunk)
        ff, pf, _ = fused.process(chunk)
        assert np.abs(pf - po).max() < 2e-5 and np.abs(ff - fo).max() < 2e-5
        assert np.abs(pf - pe).max() < 2e-4 and np.abs(ff - fe).max() < 2e-4
    assert "fused" in fused._runners


def test_clip_input_and_ratio_one(pretrained):
    """(B,T,3,H,W) clips; ratio 1 has no refiner and runs the whole exported graph."""
    from rvmatte.runtime.fused import FusedRunner

    runner = FusedRunner(model=pretrained)
    src = torch.from_numpy(_frames(3, 64, 96, seed=5)).permute(0, 3, 1, 2).float().div(255)[None]
    for r in (0.5, 1.0):
        with torch.inference_mode():
            want = pretrained(src, None, r)
        got = runner(src, None, r)
        assert got.pha.shape == want.pha.shape and got.fgr.shape == want.fgr.shape
        assert (got.pha - want.pha).abs().max() < 1e-4
        assert (got.fgr - want.fgr).abs().max() < 1e-4
        assert all(torch.allclose(s, t, atol=1e-4) for s, t in zip(got.state, want.state))
    with pytest.raises(ValueError, match="ratio below 1"):
        runner.network(_frames(1, 64, 96), None, 1.0)
    with pytest.raises(ValueError, match="uint8"):
        runner.network(_frames(1, 64, 96).astype(np.float32), None, 0.5)
    with pytest.raises(ValueError, match="unknown outputs"):
        runner.matte_uint8(_frames(1, 64, 96), None, 0.5, outputs=["depth"])


def test_matte_uint8_matches_the_float_path(pretrained):
    from rvmatte.runtime.fused import FusedRunner

    runner = FusedRunner(model=pretrained)
    frames = _frames(2, 72, 128, seed=7)
    made, state = runner.matte_uint8(frames, None, 0.5, outputs=["composite", "alpha"],
                                     background=(0.0, 1.0, 0.0))
    m = Matter(pretrained, downsample_ratio=0.5, backend="torch")
    fgr, pha, _ = m.process(frames)
    pha_t, fgr_t = torch.from_numpy(pha)[:, None], torch.from_numpy(fgr).permute(0, 3, 1, 2)
    comp = to_uint8(composite(fgr_t, pha_t, torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)))
    assert made["composite"].shape == (2, 72, 128, 3) and made["alpha"].shape == (2, 72, 128)
    assert np.abs(made["alpha"].astype(int) - to_uint8(pha_t)[:, 0].numpy()).max() <= 1
    assert np.abs(made["composite"].astype(int) - comp.permute(0, 2, 3, 1).numpy()).max() <= 1
    # the state comes back as numpy (file conversion runs without torch), the network's own
    assert len(state) == 4 and all(isinstance(s, np.ndarray) and s.dtype == np.float32
                                   for s in state)
    for ours, theirs in zip(state, m.state):
        assert ours.shape == tuple(theirs.shape)
        assert np.abs(ours - theirs.numpy()).max() < 1e-3


def test_refuses_gpu_and_half_precision():
    from rvmatte.runtime.fused import FusedRunner

    with pytest.raises(RvmatteError, match="CPU in float32"):
        FusedRunner(dtype="float16")


def test_without_numba_is_one_clear_error(monkeypatch):
    import importlib.util

    from rvmatte.runtime.fused import FusedRunner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real(name, *a))
    with pytest.raises(RvmatteError, match="needs numba"):
        FusedRunner()


def _decode(path: Path, fmt: str) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)]).astype(int)


def test_conversion_takes_the_fused_path_and_matches_torch(tmp_path):
    """The sample clip: the same PNG outputs (lossless) as eager PyTorch within one level, and
    H.264 outputs that decode to the same picture within codec noise."""
    from rvmatte.inference.convert import convert_video

    # the network's own outputs on both paths (foreground estimation, the CPU default, is
    # checked on the two paths in tests/post)
    kw = dict(downsample_ratio=0.25, end="12f", refine_foreground=False)
    auto = Matter(backend="fused", downsample_ratio=0.25)  # (auto may pick int8: see test_int8)
    convert_video(SAMPLE, tmp_path / "f.mp4", alpha=tmp_path / "fa/%04d.png",
                  foreground=tmp_path / "ff/%04d.png", model=auto, **kw)
    assert "fused" in auto._runners                   # it was the fused path that ran
    convert_video(SAMPLE, tmp_path / "t.mp4", alpha=tmp_path / "ta/%04d.png",
                  foreground=tmp_path / "tf/%04d.png", backend="torch", **kw)
    from PIL import Image

    for kind in ("a", "f"):
        names = sorted(p.name for p in (tmp_path / f"f{kind}").iterdir())
        assert len(names) == 12
        for n in names:
            f = np.asarray(Image.open(tmp_path / f"f{kind}" / n)).astype(int)
            t = np.asarray(Image.open(tmp_path / f"t{kind}" / n)).astype(int)
            assert np.abs(f - t).max() <= 1 and (f != t).mean() < 1e-3
    # the kernel makes the H.264 planes from the float composite, the torch path's writer
    # converts the rounded 8-bit RGB (rvmatte.io.yuv); both then go through a lossy encode
    f, t = _decode(tmp_path / "f.mp4", "rgb24"), _decode(tmp_path / "t.mp4", "rgb24")
    assert f.shape == t.shape == (12, 360, 640, 3)
    assert np.abs(f - t).mean() < 1.0


def test_conversion_transparent_and_image_background(tmp_path):
    """RGBA outputs come from the fused path; an image background (which it does not cover)
    takes the general path with the same session."""
    from PIL import Image

    from rvmatte.inference.convert import convert_video

    auto = Matter(backend="auto", downsample_ratio=0.25)
    convert_video(SAMPLE, tmp_path / "rgba/%04d.png", background="transparent", model=auto,
                  end="3f")
    first = sorted((tmp_path / "rgba").iterdir())[0].name
    rgba = np.asarray(Image.open(tmp_path / "rgba" / first))
    assert rgba.shape == (360, 640, 4) and 0 < rgba[..., 3].mean() < 255
    bg = tmp_path / "bg.png"
    Image.fromarray(np.full((90, 160, 3), (200, 30, 60), np.uint8)).save(bg)
    convert_video(SAMPLE, tmp_path / "img/%04d.png", background=str(bg), model=auto, end="3f")
    comp = np.asarray(Image.open(tmp_path / "img" / first)).astype(int)
    a = rgba[..., 3:].astype(float) / 255
    want = rgba[..., :3] * a + np.array([200, 30, 60]) * (1 - a)
    assert np.abs(comp - want).max() <= 2


def test_fused_conversion_resumes_bit_identically(tmp_path):
    """A cancelled fused conversion continues from its checkpoint (the state round-trips)."""
    import threading

    from rvmatte.errors import Cancelled
    from rvmatte.inference.convert import ProgressInfo, convert_video

    kw = dict(downsample_ratio=0.25, end="24f", segment_frames=8, backend="fused")
    convert_video(SAMPLE, alpha=tmp_path / "whole/%04d.png", **kw)
    ev = threading.Event()

    def progress(p: ProgressInfo):
        if p.done >= 10:
            ev.set()

    with pytest.raises(Cancelled):
        convert_video(SAMPLE, alpha=tmp_path / "part/%04d.png", cancel=ev, progress=progress, **kw)
    convert_video(SAMPLE, alpha=tmp_path / "part/%04d.png", resume=True, **kw)
    from PIL import Image

    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert len(names) == 24 and names == sorted(p.name for p in (tmp_path / "part").iterdir())
    for n in names:
        w = np.asarray(Image.open(tmp_path / "whole" / n))
        p = np.asarray(Image.open(tmp_path / "part" / n))
        assert np.array_equal(w, p), n


def test_cli_backend_fused_on_gpu_is_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(SAMPLE), "-o",
                        str(tmp_path / "o.mp4"), "--backend", "fused", "--dtype", "float16",
                        "--end", "2f"], capture_output=True, text=True)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "float32" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_malloc_tuning_is_applied_once_on_glibc():
    import sys

    from rvmatte.inference import convert

    applied = convert._tune_malloc()
    if sys.platform.startswith("linux"):
        import platform

        assert applied == (platform.libc_ver()[0] == "glibc")
    assert convert._tune_malloc() == applied  # idempotent


@pytest.mark.parametrize("threads", [1, 2])
def test_yuv_planes_match_rvmatte_io_yuv(threads):
    """The composite and alpha written straight as 4:2:0 planes, as rgb_to_yuv420 /
    gray_to_yuv420 (the conventions every YUV output of rvmatte follows) make them."""
    from rvmatte.io.yuv import gray_to_yuv420, rgb_to_yuv420

    h, w, hl, wl = 90, 124, 45, 62
    g = torch.Generator().manual_seed(11)
    frame = _frames(1, h, w, seed=11)[0]
    a = torch.randn(4, hl, wl, generator=g) * 0.5
    b = torch.rand(4, hl, wl, generator=g) * 1.2 - 0.1
    bg = (0.1, 0.8, 0.25)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    res, pha = apply_coefficients(x, a[None], b[None])
    fgr, pha = (res + x).clamp(0, 1), pha.clamp(0, 1)
    comp = composite(fgr, pha, torch.tensor(bg).view(1, 3, 1, 1).expand_as(fgr))
    want_c, want_a = rgb_to_yuv420(comp)[0].numpy(), gray_to_yuv420(pha)[0].numpy()
    cy, ay = np.empty((h * 3 // 2, w), np.uint8), np.empty((h * 3 // 2, w), np.uint8)
    rgb = np.empty((h, w, 3), np.uint8)
    kernels.Refiner(threads)(frame, a.numpy(), b.numpy(), background=bg, composite_yuv=cy,
                             alpha_yuv=ay, composite=rgb)
    for got, want in ((cy, want_c), (ay, want_a)):
        d = np.abs(got.astype(int) - want)
        assert d.max() <= 1 and (d > 0).mean() < 1e-3
    assert (ay[h:] == 128).all()
    # and the RGB written in the same pass is unchanged by it
    assert np.abs(rgb.astype(int) - _reference(frame, a, b, bg)["composite"]).max() <= 1
    with pytest.raises(ValueError, match="even size"):
        kernels.Refiner(1)(frame[:-1], a.numpy(), b.numpy(),
                           composite_yuv=np.empty(((h - 1) * 3 // 2, w), np.uint8))


def test_h264_outputs_are_made_as_yuv_by_the_kernel(tmp_path):
    """H.264 composite and alpha: 4:2:0 planes straight from the kernel by default; the same
    pictures as the libswscale conversion (device_yuv=False) within a level of rounding."""
    from rvmatte.inference.convert import convert_video

    kw = dict(downsample_ratio=0.25, end="6f", backend="fused")
    convert_video(SAMPLE, tmp_path / "k.mp4", alpha=tmp_path / "ka.mp4", **kw)
    convert_video(SAMPLE, tmp_path / "s.mp4", alpha=tmp_path / "sa.mp4", device_yuv=False, **kw)
    for a, b in (("k.mp4", "s.mp4"), ("ka.mp4", "sa.mp4")):
        with av.open(str(tmp_path / a)) as c1, av.open(str(tmp_path / b)) as c2:
            s1, s2 = c1.streams.video[0], c2.streams.video[0]
            assert s1.codec_context.name == "h264" and s1.format.name == "yuv420p"
            p1 = np.stack([f.to_ndarray() for f in c1.decode(s1)]).astype(int)
            p2 = np.stack([f.to_ndarray() for f in c2.decode(s2)]).astype(int)
        assert p1.shape == p2.shape == (6, 540, 640)
        assert np.abs(p1 - p2).mean() < 0.5


def test_one_session_serves_a_ratio_change(pretrained):
    """set_downsample_ratio restarts the state and keeps the backend (live mode's adaptive
    ratio): the frames after the change are those of a fresh session at the new ratio."""
    frames = _frames(3, 64, 96, seed=9)
    m = Matter(pretrained, downsample_ratio=0.5, backend="auto")
    m.process(frames[:2])
    runner = m._runners["fused"]
    m.set_downsample_ratio(0.25)
    assert m.state is None and m.ratio == 0.25
    got = m.process(frames[2:]).pha
    assert m._runners["fused"] is runner
    want = Matter(pretrained, downsample_ratio=0.25, backend="fused").process(frames[2:]).pha
    assert np.array_equal(got, want)


@pytest.mark.parametrize("how", ["env", "no-locator"])
def test_kernels_without_a_disk_cache(how):
    """Where numba finds no writable cache location (simulated: no locator classes) rvmatte
    compiles in the process (RVMATTE_NUMBA_CACHE=0, also settable by hand) instead of failing."""
    import os
    import subprocess
    import sys

    pre = ("import numba.core.caching as c; c.CacheImpl._locator_classes = []; "
           if how == "no-locator" else "")
    code = (pre + "import os, numpy as np; from rvmatte.runtime import kernels; "
            "f = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3); "
            "print(float(kernels.downsample(f, 0.5).sum()), os.environ['RVMATTE_NUMBA_CACHE'])")
    env = dict(os.environ)
    if how == "env":
        env["RVMATTE_NUMBA_CACHE"] = "0"
    else:
        env.pop("RVMATTE_NUMBA_CACHE", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    total, flag = r.stdout.split()
    f = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert abs(float(total) - float(kernels.downsample(f, 0.5).sum())) < 1e-3
    assert flag == "0"
