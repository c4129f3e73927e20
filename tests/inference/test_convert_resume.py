"""A job killed with SIGKILL resumes from its checkpoint; the result equals an uninterrupted run.

These tests compare file bytes, so they keep one encoder per output (``encode_workers=1``)
whatever the machine: x264 running concurrently with other encoders is, rarely, not
bit-reproducible (docs/SPEED.md); tests/inference/test_convert_parallel.py covers resuming
with several encoders.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rvm_clips import make_clip, stream_info, video_frames

# Runs in a subprocess: the same random-init model (seed 0); SIGKILLs itself once the
# checkpoint at frame 8 exists, i.e. in the middle of the job.
SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, {helpers!r})
from rvm_clips import tiny_model
from rvmatte.inference.convert import convert_video
out = {out!r}
def progress(p):
    if p.done >= 10 and os.path.exists(out + ".rvmatte-resume/job.json"):
        import json
        if json.load(open(out + ".rvmatte-resume/job.json"))["done"] >= 8:
            os.kill(os.getpid(), signal.SIGKILL)
convert_video({clip!r}, out, alpha={alpha!r}, foreground={fgr!r}, model=tiny_model(),
              seq_chunk=2, segment_frames=4, progress=progress, encode_workers=1)
"""


def _run(tmp, name, clip, kill):
    out, alpha, fgr = str(tmp / f"{name}.mp4"), str(tmp / f"{name}_alpha"), str(tmp / f"{name}.webm")
    if kill:
        code = SCRIPT.format(helpers=str(Path(__file__).parents[1] / "io"), out=out,
                             clip=str(clip), alpha=alpha, fgr=fgr)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert not os.path.exists(out) and not os.path.exists(fgr)
        meta = json.loads(Path(out + ".rvmatte-resume/job.json").read_text())
        assert meta["done"] >= 8
    from rvm_clips import tiny_model

    from rvmatte.inference.convert import convert_video

    r = convert_video(clip, out, alpha=alpha, foreground=fgr, model=tiny_model(), seq_chunk=2,
                      segment_frames=4, resume=True, encode_workers=1)
    return r, Path(out), Path(alpha), Path(fgr)


def test_kill9_then_resume_equals_uninterrupted(tmp_path):
    # 192x108: x264 is not always bit-reproducible at 64x48 (docs/SPEED.md)
    clip = make_clip(tmp_path / "in.mp4", n=14, w=192, h=108)
    r1, out1, a1, f1 = _run(tmp_path, "whole", clip, kill=False)
    r2, out2, a2, f2 = _run(tmp_path, "killed", clip, kill=True)
    assert r1.resumed_from == 0 and r2.resumed_from >= 8 and r1.frames == r2.frames == 14
    # alpha values equal, frames and timing equal
    for n in range(14):
        assert np.array_equal(np.asarray(Image.open(a1 / f"{n:06d}.png")),
                              np.asarray(Image.open(a2 / f"{n:06d}.png")))
    p1, v1 = video_frames(out1)
    p2, v2 = video_frames(out2)
    assert p1 == p2 == video_frames(clip)[0]
    assert np.array_equal(v1, v2)
    assert out1.read_bytes() == out2.read_bytes()
    assert f1.read_bytes() == f2.read_bytes()
    i1, i2 = stream_info(out1), stream_info(out2)
    assert i1["audio"] == i2["audio"] and i1["time_base"] == i2["time_base"]
    assert not list(tmp_path.glob("*.rvmatte-resume"))


def test_resume_with_changed_options_starts_over(tmp_path):
    from rvm_clips import tiny_model

    from rvmatte.inference.convert import convert_video

    clip = make_clip(tmp_path / "in.mp4", n=4, audio=False)
    job = tmp_path / "o.mp4.rvmatte-resume"
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"fingerprint": "other job", "done": 2}))
    (job / "state.pt").write_bytes(b"garbage")
    r = convert_video(clip, tmp_path / "o.mp4", model=tiny_model(), resume=True, seq_chunk=2)
    assert r.resumed_from == 0 and r.frames == 4 and not job.exists()


def test_cancel_resume_on_sample_clip_with_bframes(tmp_path):
    """The bundled sample (x264 with B-frames, AAC): resume seeks into the file correctly."""
    import threading

    import pytest

    from rvm_clips import tiny_model

    from rvmatte.errors import Cancelled
    from rvmatte.inference.convert import convert_video

    sample = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"
    if not sample.exists():
        pytest.skip("sample clip missing")
    kw = dict(model=tiny_model(), downsample_ratio=0.25, seq_chunk=2, segment_frames=4,
              start="20f", end="32f", encode_workers=1)
    whole = convert_video(sample, tmp_path / "w.mp4", alpha=tmp_path / "wa", **kw)
    ev = threading.Event()
    with pytest.raises(Cancelled):
        convert_video(sample, tmp_path / "c.mp4", alpha=tmp_path / "ca", cancel=ev,
                      progress=lambda p: p.done >= 6 and ev.set(), **kw)
    r = convert_video(sample, tmp_path / "c.mp4", alpha=tmp_path / "ca", resume=True, **kw)
    assert r.resumed_from in (4, 8) and r.frames == whole.frames == 12
    for n in range(12):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "wa" / f"{n:06d}.png")),
                              np.asarray(Image.open(tmp_path / "ca" / f"{n:06d}.png")))
    assert (tmp_path / "w.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
    assert video_frames(tmp_path / "w.mp4")[0][0] == 0
    assert stream_info(tmp_path / "c.mp4")["audio"]["end"] < 0.9
