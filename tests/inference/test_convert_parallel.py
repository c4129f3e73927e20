"""convert_video with several segments of each video output encoded at a time.

The outputs are compared frame by frame and packet by packet, not byte by byte: at tiny
sizes such as these 64x48 clips, x264 in PyAV 18.1's FFmpeg is not always bit-reproducible
from run to run (0.3-2 % of encodes; a few levels in one or two frames; docs/SPEED.md).
"""

import json
import os
import subprocess
import sys
import threading

import av
import numpy as np
import pytest

from rvm_clips import make_clip, stream_info, tiny_model, video_frames
from rvmatte.errors import Cancelled, OutputError
from rvmatte.inference.convert import convert_video

KW = dict(seq_chunk=2, segment_frames=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", n=18)


def _packets(path):
    with av.open(str(path)) as c:
        return [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def _same_video(a, b, *, tol=1.0):
    """Same timestamps, key frames and frame count; pixels within ``tol`` on average."""
    assert _packets(a) == _packets(b)
    pa, fa = video_frames(a)
    pb, fb = video_frames(b)
    assert pa == pb and fa.shape == fb.shape
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() < tol


def _convert(tmp_path, name, clip, model, **kw):
    d = tmp_path / name
    d.mkdir()
    r = convert_video(clip, d / "c.mp4", alpha=d / "a.mp4", foreground=d / "f.webm",
                      model=model, **{**KW, **kw})
    return r, d


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_segments_write_what_one_encoder_writes(tmp_path, model, clip, processes):
    """Three segments of each output at a time, one thread per encoder, on threads or in
    encoder processes: the videos are the ones a single encoder per output writes (segments
    are independent encodes), each segment starting with a key frame."""
    r1, one = _convert(tmp_path, "one", clip, model, encode_workers=1, encoder_threads=1)
    r3, par = _convert(tmp_path, "par", clip, model, encode_workers=3, encoder_threads=1,
                       encode_processes=processes)
    assert r1.frames == r3.frames == 18 and r3.encoding["workers"] == 3
    assert r3.encoding["processes"] is processes and not r1.encoding["processes"]
    for name in ("c.mp4", "a.mp4", "f.webm"):
        _same_video(one / name, par / name, tol=0.25)
    assert [k for _, k in _packets(par / "c.mp4")][::4] == [True] * 5
    pts, frames = video_frames(par / "c.mp4")
    assert pts == video_frames(clip)[0] and frames.shape == (18, 48, 64, 3)
    assert stream_info(par / "c.mp4")["audio"] is not None
    assert not list(tmp_path.glob("*/*.rvmatte-*"))


def test_auto_plan_on_a_many_core_machine(tmp_path, model, clip, monkeypatch):
    """``encode_workers="auto"`` with 16 cores and 3 video outputs: 2 encoders of 2 threads
    per output (2 s segments by default); the video is the same up to the encoders' thread
    count."""
    r1, one = _convert(tmp_path, "one", clip, model, segment_frames=None)
    assert r1.encoding["workers"] == 1 and r1.encoding["segment_frames"] == 250  # 10 s
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    r2, auto = _convert(tmp_path, "auto", clip, model)
    assert r2.encoding == {"segment_frames": 4, "workers": 2, "threads": 2, "processes": False}
    assert r2.as_dict()["encoding"] == r2.encoding
    for name in ("c.mp4", "a.mp4"):
        p1, v1 = video_frames(one / name)
        p2, v2 = video_frames(auto / name)
        assert p1 == p2 and np.abs(v1.astype(int) - v2.astype(int)).mean() < 1.0
    assert [k for _, k in _packets(auto / "c.mp4")][::4] == [True] * 5


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_cancel_then_resume_equals_uninterrupted(tmp_path, model, clip, processes):
    _, whole = _convert(tmp_path, "whole", clip, model, encode_workers=3, encoder_threads=1)
    d = tmp_path / "cut"
    d.mkdir()
    ev = threading.Event()
    kw = dict(alpha=d / "a.mp4", model=model, encode_workers=3, encoder_threads=1,
              encode_processes=processes, **KW)
    with pytest.raises(Cancelled):
        convert_video(clip, d / "c.mp4", cancel=ev,
                      progress=lambda p: ev.set() if p.done >= 10 else None, **kw)
    assert not (d / "c.mp4").exists() and (d / "c.mp4.rvmatte-resume" / "job.json").exists()
    r = convert_video(clip, d / "c.mp4", resume=True, **kw)
    assert 4 <= r.resumed_from <= 12 and r.resumed_from % 4 == 0 and r.frames == 18
    _same_video(d / "c.mp4", whole / "c.mp4", tol=0.25)
    _same_video(d / "a.mp4", whole / "a.mp4", tol=0.25)


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_full_disk_is_a_one_line_error(tmp_path, clip, processes):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs (needs root)")
    try:
        big = make_clip(tmp_path / "noisy.mp4", w=160, h=120, n=12, audio=False)
        with pytest.raises(OutputError, match="disk full|cannot write|No space") as ei:
            convert_video(big, mnt / "o.mov", alpha=mnt / "a.mov", model=tiny_model(),
                          encode_workers=3, encode_processes=processes, **KW)
        assert "\n" not in str(ei.value)
        assert not (mnt / "o.mov").exists() and not (mnt / "a.mov").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("kw", [{"encode_workers": 0}, {"encode_workers": "many"},
                                {"encoder_threads": -1}])
def test_bad_worker_counts(tmp_path, clip, kw):
    with pytest.raises(OutputError, match="positive integer or auto"):
        convert_video(clip, tmp_path / "o.mp4", model=tiny_model(), **kw)
    assert not list(tmp_path.iterdir())


def test_cli_options(tmp_path, clip):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(clip), *args,
                               "--quiet"], capture_output=True, text=True)

    bad = cli("-o", str(tmp_path / "bad.mp4"), "--encode-workers", "0")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "encode workers" in bad.stderr
    ok = cli("-o", str(tmp_path / "ok.mp4"), "--encode-workers", "2", "--encoder-threads", "1",
             "--downsample", "0.5", "--seq-chunk", "2")
    assert ok.returncode == 0, ok.stderr
    assert len(video_frames(tmp_path / "ok.mp4")[0]) == 18
    procs = subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(clip), "-o",
                            str(tmp_path / "pr.mp4"), "--encode-workers", "2", "--seq-chunk", "2",
                            "--encode-processes", "--json"], capture_output=True, text=True)
    assert procs.returncode == 0, procs.stderr
    assert json.loads(procs.stdout)["encoding"]["processes"] is True
    assert len(video_frames(tmp_path / "pr.mp4")[0]) == 18
