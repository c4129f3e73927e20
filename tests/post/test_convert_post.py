"""The post stage in convert_video: foreground estimation on by default on the CPU; with
stabilisation and foreground estimation on, a cancelled job resumed from its checkpoint writes
the same bytes as an uninterrupted one, on the tensor path and on the fused CPU path."""

import threading

import numpy as np
import pytest
from PIL import Image

from rvm_clips import make_clip, tiny_model

from rvmatte.errors import Cancelled
from rvmatte.inference.convert import convert_video

# x264 (core 165 in PyAV 18.1) with its AVX-512 code now and then coded the same 64x48 or
# 96x48 frames differently (docs/SPEED.md, "The cause"); rvmatte opens it without that code
# now. Byte comparisons still use a size that was reproducible even with it.
BYTE_STABLE = dict(w=192, h=108)


def _same_video(a, b):
    """The same bytes (x264 runs without its AVX-512 code, with which it now and then coded
    the same frames differently: scripts/x264_determinism.py). A failure says which frames
    and rows differ (decoded)."""
    if a.read_bytes() == b.read_bytes():
        return
    import av

    def frames(p):
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]

    fa, fb = frames(a), frames(b)
    diffs = [(i, np.nonzero(np.abs(x - y).max(axis=(1, 2)))[0], int(np.abs(x - y).max()))
             for i, (x, y) in enumerate(zip(fa, fb)) if not np.array_equal(x, y)]
    report = (f"{a.name} != {b.name}: {len(fa)} / {len(fb)} frames; differing "
              f"(frame, rows, max): {[(i, r.tolist(), m) for i, r, m in diffs]}")
    raise AssertionError(report)


def _same_pngs(d1, d2, n):
    for i in range(n):
        assert np.array_equal(np.asarray(Image.open(d1 / f"{i:06d}.png")),
                              np.asarray(Image.open(d2 / f"{i:06d}.png")))


def test_foreground_estimation_is_on_by_default_on_the_cpu(tmp_path):
    """convert_video's default on the CPU is foreground estimation on (it wins on the post
    benchmark within the CPU budget): the same bytes as asking for it, other composites than
    with it off, the same alpha either way (it changes only the foreground)."""
    clip = make_clip(tmp_path / "in.mp4", n=4, audio=False, w=96, h=64)
    kw = dict(model=tiny_model(), seq_chunk=2, encode_workers=1)
    for name, extra in (("default", {}), ("on", dict(refine_foreground=True)),
                        ("off", dict(refine_foreground=False, stabilize=False))):
        convert_video(clip, tmp_path / f"{name}_c", alpha=tmp_path / f"{name}_a", **kw,
                      **extra)
    _same_pngs(tmp_path / "default_c", tmp_path / "on_c", 4)
    _same_pngs(tmp_path / "default_a", tmp_path / "off_a", 4)
    differ = [not np.array_equal(np.asarray(Image.open(tmp_path / "default_c" / f"{i:06d}.png")),
                                 np.asarray(Image.open(tmp_path / "off_c" / f"{i:06d}.png")))
              for i in range(4)]
    assert all(differ)


def test_the_automatic_foreground_choice():
    """ConvertRequest.for_device: on for a CPU network when an output shows the foreground;
    off for alpha alone, with a background plate (it gives the colours) and on a GPU (cost
    not measured there); an explicit choice stays."""
    from rvmatte.inference.plan import ConvertRequest

    def choice(device="cpu", **kw):
        kw.setdefault("output", "o.mp4")
        req = ConvertRequest.make("in.mp4", kw.pop("output"), **kw).for_device(device)
        return req.refine_foreground, req.post_options.refine_foreground

    assert choice() == (True, True)
    assert choice(output=None, foreground="f.mov") == (True, True)
    assert choice(output=None, alpha="a.mp4") == (False, False)
    assert choice("cuda") == (False, False)
    assert choice(plate="plate.png") == (False, False)
    assert choice(refine_foreground=False) == (False, False)
    assert choice("cuda", refine_foreground=True) == (True, True)


def _fused_kw():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("numba")
    return dict(backend="fused", device="cpu", downsample_ratio=0.5)


@pytest.mark.parametrize("path", ["tensor", "fused"])
def test_cancel_then_resume_is_exact_with_post(tmp_path, path):
    clip = make_clip(tmp_path / "in.mp4", n=12, audio=False, **BYTE_STABLE)
    model_kw = dict(model=tiny_model()) if path == "tensor" else _fused_kw()
    kw = dict(seq_chunk=2, segment_frames=4, encode_workers=1, stabilize=True,
              refine_foreground=True, **model_kw)
    whole = convert_video(clip, tmp_path / "w.mp4", alpha=tmp_path / "wa",
                          foreground=tmp_path / "wf.webm", **kw)
    ev = threading.Event()
    with pytest.raises(Cancelled):
        convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "ca",
                      foreground=tmp_path / "cf.webm", cancel=ev,
                      progress=lambda p: p.done >= 6 and ev.set(), **kw)
    job = tmp_path / "c.mp4.rvmatte-resume"
    with np.load(job / "state.npz") as z:
        assert any(k.startswith("post/stabilize/") for k in z.files)
    r = convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "ca",
                      foreground=tmp_path / "cf.webm", resume=True, **kw)
    assert r.resumed_from in (4, 8) and r.frames == whole.frames == 12
    _same_pngs(tmp_path / "wa", tmp_path / "ca", 12)
    _same_video(tmp_path / "w.mp4", tmp_path / "c.mp4")
    _same_video(tmp_path / "wf.webm", tmp_path / "cf.webm")


def test_post_option_is_part_of_the_fingerprint(tmp_path):
    from rvmatte.inference.plan import ConvertRequest

    a = ConvertRequest.make(tmp_path / "in.mp4", tmp_path / "o.mp4")
    b = ConvertRequest.make(tmp_path / "in.mp4", tmp_path / "o.mp4", stabilize=True)
    assert "post" not in a.identity() and a.identity() != b.identity()
