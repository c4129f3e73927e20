"""The per-stage timings of a conversion (ConversionResult.stages / bottleneck) and the CLI's
line naming the stage that set the pace."""

import subprocess
import sys

from rvm_clips import make_clip
from rvmatte.inference.convert import convert_video
from rvmatte.inference.session import Matter


def test_a_conversion_reports_where_its_time_went(tmp_path, model):
    clip = make_clip(tmp_path / "in.mp4", w=64, h=48, n=12)
    r = convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "a.mp4",
                      model=Matter(model, backend="torch"), preset="ultrafast")
    st = r.stages
    assert set(st) == {"decode_s", "decode_blocked_s", "model_s", "model_waited_for_input_s",
                       "model_blocked_s", "finish_s", "finish_waited_for_input_s",
                       "finish_blocked_s", "encode_s", "encode_waited_for_input_s"}
    assert all(v >= 0 for v in st.values())
    assert st["model_s"] > 0 and st["decode_s"] > 0 and st["encode_s"] > 0
    assert st["finish_s"] == 0  # the tensor path has no finish thread
    # no stage is busy for longer than the run itself
    assert max(st["decode_s"], st["model_s"], st["encode_s"]) <= r.seconds
    busy = {k: st[f"{k}_s"] for k in ("decode", "model", "encode")}
    assert r.bottleneck == max(busy, key=busy.get)
    assert r.as_dict()["bottleneck"] == r.bottleneck and r.as_dict()["stages"]["model_s"] > 0


def test_the_cli_names_the_stage_that_set_the_pace(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", w=64, h=48, n=6)
    p = subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(clip), "-o",
                        str(tmp_path / "c.mp4"), "--preset", "ultrafast"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stderr.splitlines() if x.strip().startswith("busy:")]
    assert len(line) == 1 and "stage set the pace" in line[0]
    assert any(f"the {k} stage" in line[0] for k in ("decode", "model", "encode"))


def test_the_uint8_path_finishes_frames_on_its_own_thread(tmp_path):
    """On the fused CPU path the model thread runs the network and a finish thread makes the
    full-resolution outputs (and the post stage) from its coefficients: both are timed, and
    the outputs are those of one thread doing both (Matter.matte_uint8, frame by frame)."""
    import numpy as np

    from rvm_clips import video_frames

    clip = make_clip(tmp_path / "in.mp4", w=96, h=64, n=8)
    m = Matter(backend="fused", downsample_ratio=0.5)
    r = convert_video(clip, alpha=tmp_path / "a.mkv", codec="ffv1", model=m,
                      refine_foreground=True, stabilize=True)
    st = r.stages
    assert st["model_s"] > 0 and st["finish_s"] > 0
    assert max(st["model_s"], st["finish_s"]) <= r.seconds
    _, frames = video_frames(clip)
    _, got = video_frames(tmp_path / "a.mkv", fmt="gray")
    from rvmatte.post import PostChain, PostOptions, quality_processors

    post = PostChain(quality_processors(PostOptions(stabilize=True, refine_foreground=True)))
    state, want = None, []
    for f in frames:
        made, state = m.matte_uint8(f[None], state, 0.5, outputs=["alpha"], post=post)
        want.append(made["alpha"][0])
    assert np.array_equal(got.reshape(np.stack(want).shape), np.stack(want))


def test_an_error_in_the_finish_thread_fails_the_conversion(tmp_path, monkeypatch):
    """A failure while making the outputs (the finish thread) ends the conversion with that
    error: no hang, no output file."""
    import pytest

    from rvmatte.runtime.fused import FusedRunner

    clip = make_clip(tmp_path / "in.mp4", w=96, h=64, n=12)
    calls = []
    finish = FusedRunner.finish

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return finish(self, *a, **k)

    monkeypatch.setattr(FusedRunner, "finish", failing)
    with pytest.raises(Exception, match="disk full"):
        convert_video(clip, tmp_path / "c.mp4", model=Matter(backend="fused"),
                      downsample_ratio=0.5)
    assert len(calls) == 5 and not (tmp_path / "c.mp4").exists()
