"""Inputs whose muxer wrote broken timestamps (every frame at pts 0) keep all their frames."""

from __future__ import annotations

import av
import numpy as np

from rvmatte.io.readers import Source, probe


def _write(path, frames):
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for f in frames:
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def _clip_with_zero_pts(tmp_path, n=12):
    good = tmp_path / "good.mp4"
    _write(good, (av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
                  for i in range(n)))
    bad = tmp_path / "zero_pts.mp4"
    with av.open(str(good)) as src:
        # A decoded frame re-encoded with pts None keeps its time base: libx264 stamps it 0.
        decoded = [f.reformat(format="yuv420p") for f in src.decode(video=0)]
        for f in decoded:
            f.pts = None
        _write(bad, decoded)
    return bad


def test_zero_pts_frames_are_kept_with_increasing_timestamps(tmp_path):
    clip = _clip_with_zero_pts(tmp_path)
    with av.open(str(clip)) as c:
        raw = [f.pts for f in c.decode(video=0)]
    assert len(raw) == 12 and len(set(raw)) < 12  # the input really is broken
    frames = list(Source(probe(clip)).frames())
    assert len(frames) == 12
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
