"""The stages of convert_video, each on its own (plan, checkpoint, finalize, pipeline), and the
user-facing fixes they carry: 16-bit video alpha and tiny ratios refused up front, a truncated
file reported, resumed frames not counted as this run's, no resume folder a job cannot use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rvm_clips import make_clip, tiny_model, truncated_faststart_mp4
from rvmatte.errors import Cancelled, InputError, OutputError
from rvmatte.inference import checkpoint as ck
from rvmatte.inference.convert import convert_video
from rvmatte.inference.finalize import ConversionResult, audio_plan, shortfall
from rvmatte.inference.plan import (MIN_WORKING_SIDE, ConvertRequest, check_working_size,
                                    expected_frames, plan_outputs, plan_targets,
                                    segment_length)
from rvmatte.io.readers import FrameRange, SourceInfo, parse_range
from rvmatte.io.segments import EncodePlan
from rvmatte.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("stages") / "in.mp4", n=12)


def _request(clip, tmp_path, **kw) -> ConvertRequest:
    kw.setdefault("output", tmp_path / "c.mp4")
    return ConvertRequest.make(clip, kw.pop("output"), **kw)


def _leftovers(tmp_path) -> list:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(ck.RESUME_SUFFIX))


# ---- the request ------------------------------------------------------------------------------

def test_request_checks_and_normalises(tmp_path, clip):
    with pytest.raises(InputError, match="no output requested"):
        ConvertRequest.make(clip)
    with pytest.raises(InputError, match="invalid seq_chunk"):
        _request(clip, tmp_path, seq_chunk=0)
    with pytest.raises(OutputError, match="unknown preset"):
        _request(clip, tmp_path, preset="warp")
    r = _request(clip, tmp_path, alpha=tmp_path / "a", start="2f", encode_workers="auto")
    assert r.outputs == (("composite", tmp_path / "c.mp4"), ("alpha", tmp_path / "a"))
    assert r.preset == "veryfast" and r.encode_workers is None and r.range.unit == "f"
    # what does not change the bytes is not part of its identity
    assert (_request(clip, tmp_path, resume=True, overwrite=True, strict=True).identity()
            == _request(clip, tmp_path).identity())


# ---- plan ---------------------------------------------------------------------------------

def test_targets_and_plan_on_the_cpu(tmp_path, clip):
    req = _request(clip, tmp_path, alpha=tmp_path / "a", foreground=tmp_path / "f.webm")
    t = plan_targets(req)
    assert [s.kind for s in t.specs] == ["composite", "alpha", "foreground"]
    assert t.ratio == 1.0 and t.background.rgb == (0, 255, 0)  # 64x48: auto is 1; green
    asked = []
    plan = plan_outputs(req, t, device_type="cpu", uint8_path=lambda r: asked.append(r))
    assert asked == [1.0]  # the session was asked, and said no
    assert plan.keys == {"composite": "rgb:composite", "alpha": "gray:alpha",
                         "foreground": "rgba:foreground"}
    assert not plan.uint8 and not plan.yuv_in and plan.seq_chunk == 1
    assert plan.expected_frames == 12 and plan.segment_frames == 250  # 10 s at 25 fps
    assert set(plan.frame_bytes) == {"composite", "foreground"}
    blur = _request(clip, tmp_path, background="blur")  # the uint8 path composites colours
    plan_outputs(blur, plan_targets(blur), device_type="cpu",
                 uint8_path=lambda r: pytest.fail("asked"))


def test_plan_of_the_uint8_path_and_of_a_gpu(tmp_path, clip):
    req = _request(clip, tmp_path, alpha=tmp_path / "a.mp4", background="#336699",
                   segment_frames=5, seq_chunk=2)
    t = plan_targets(req)
    plan = plan_outputs(req, t, device_type="cpu", uint8_path=lambda r: True)
    assert plan.uint8 and plan.uint8_outputs == ("alpha_yuv", "composite_yuv")
    assert plan.keys == {"composite": "yuv:composite", "alpha": "yuv:alpha"}
    assert plan.uint8_background == (0x33 / 255, 0x66 / 255, 0x99 / 255)
    assert plan.segment_frames == 6  # rounded up to whole model calls
    # a CUDA model: decoded 4:2:0 frames go up (so no uint8 path), chunks of frames
    gpu = plan_outputs(_request(clip, tmp_path, encoder="software"), t, device_type="cuda",
                       uint8_path=lambda r: pytest.fail("asked"))
    assert gpu.yuv_in and gpu.keys["composite"] == "yuv:composite" and gpu.seq_chunk == 12


def test_segment_length_and_expected_frames():
    enc = EncodePlan(1, None, False, 10.0)
    assert segment_length(None, 1, enc, 25.0) == 250
    assert segment_length(None, 12, enc, 25.0) == 252
    assert segment_length(7, 4, enc, 25.0) == 8
    info = SourceInfo(Path("x.mp4"), "video", 64, 48, Fraction(1, 25), Fraction(25),
                      frames=100, duration=4.0)
    assert expected_frames(info, FrameRange()) == 100
    assert expected_frames(info, parse_range("10f", "30f")) == 20
    assert expected_frames(info, parse_range("90f", None)) == 10
    assert expected_frames(info, parse_range(1.0, 2.0)) == 25
    assert expected_frames(info, parse_range(3.0, 9.0)) == 25


def test_working_size_minimum():
    check_working_size(1.0, 8, 8)          # frames used as they are: always allowed
    check_working_size(0.25, 360, 640)     # 90x160
    check_working_size(16 / 360, 360, 640)
    for ratio in (0.001, 1e-9, 0.04):
        with pytest.raises(InputError, match="below 16 px") as e:
            check_working_size(ratio, 360, 640)
        assert "at least 0.045" in str(e.value)
    with pytest.raises(InputError, match="use 1"):
        check_working_size(0.5, 12, 40)
    assert MIN_WORKING_SIDE == 16


# ---- checkpoint -------------------------------------------------------------------------------

def _fp(clip, tmp_path, **kw) -> str:
    req = _request(clip, tmp_path, **kw)
    t = plan_targets(req)
    return ck.fingerprint(req, plan_outputs(req, t, device_type="cpu", uint8_path=lambda r: False))


def test_fingerprint_follows_request_spec_plan_and_input(tmp_path, clip):
    base = _fp(clip, tmp_path)
    assert _fp(clip, tmp_path, resume=True, overwrite=True) == base
    assert _fp(clip, tmp_path, spec=ModelSpec(variant="resnet50")) != base
    assert _fp(clip, tmp_path, spec=ModelSpec(backend="torch")) != base
    assert _fp(clip, tmp_path, spec=ModelSpec(weights=None)) != base
    assert _fp(clip, tmp_path, spec=ModelSpec(downsample=0.5)) != base  # and the plan's ratio
    assert _fp(clip, tmp_path, quality=30) != base
    assert _fp(clip, tmp_path, start="1f") != base
    assert _fp(clip, tmp_path, segment_frames=4) != base
    req = _request(clip, tmp_path)
    plan = plan_outputs(req, plan_targets(req), device_type="cpu", uint8_path=lambda r: False)
    assert ck.fingerprint(req, plan, model="model:MattingNetwork") != base
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    assert _fp(copy, tmp_path) != base  # another file
    before = _fp(copy, tmp_path)
    os.utime(copy, ns=(0, 0))
    assert _fp(copy, tmp_path) != before  # the same file, changed


def test_checkpoint_round_trip_and_pruning(tmp_path):
    d = ck.CheckpointDir(ck.job_dir_for(tmp_path / "o.mp4"), "abc", input="in.mp4")
    assert d.path.name == "o.mp4.rvmatte-resume"
    assert d.open(resume=True) == (None, None) and d.segments_dir.is_dir() and not d.saved
    seg = d.segments_dir / "composite_000000000.mp4"
    seg.write_bytes(b"segment")
    state = [np.full((1, 16, 2, 3), k, np.float32) for k in range(4)]
    d.save(ck.Checkpoint(8, 1234, 0, {"composite": [(seg, 0)], "alpha": []}, state))
    assert d.saved
    (d.segments_dir / "composite_000000008.mp4").write_bytes(b"written after the checkpoint")
    got, note = ck.CheckpointDir(d.path, "abc").open(resume=True)
    assert note is None and (got.done, got.last_pts, got.range_offset) == (8, 1234, 0)
    assert got.segments == {"composite": [(seg, 0)], "alpha": []}
    assert len(got.state) == 4 and all(np.array_equal(a, b) for a, b in zip(got.state, state))
    assert sorted(p.name for p in d.segments_dir.iterdir()) == [seg.name]
    meta = json.loads((d.path / "job.json").read_text())
    assert meta["fingerprint"] == "abc" and meta["segments"]["composite"] == [[seg.name, 0]]


def test_checkpoint_of_other_settings_or_unreadable_is_discarded(tmp_path):
    d = ck.CheckpointDir(tmp_path / "o.mp4.rvmatte-resume", "abc")
    d.open(resume=False)
    d.save(ck.Checkpoint(4, 10, 0, {"composite": []}, []))
    other = ck.CheckpointDir(d.path, "other")
    assert other.open(resume=True) == (None, ck.DISCARDED_NOTE)
    assert not other.saved and other.segments_dir.is_dir()
    d.open(resume=False)
    d.save(ck.Checkpoint(4, 10, 0, {"composite": []}, []))
    (d.path / "state.npz").write_bytes(b"not a zip")
    assert d.open(resume=True) == (None, ck.UNREADABLE_NOTE)
    d.discard_unless_saved()
    assert not d.path.exists()


# ---- finalize ---------------------------------------------------------------------------------

def _info(**kw) -> SourceInfo:
    base = dict(path=Path("in.mp4"), kind="video", width=64, height=48,
                time_base=Fraction(1, 1000), rate=Fraction(25), frames=100, duration=4.0,
                start_pts=500, audio={"index": 1})
    return SourceInfo(**{**base, **kw})


def test_audio_arithmetic():
    assert audio_plan(_info(audio=None), FrameRange(), range_offset=0, last_pts=None) is None
    whole = audio_plan(_info(), FrameRange(), range_offset=0, last_pts=4460)
    assert (whole.index, whole.start, whole.end, whole.offset) == (1, None, None, 0.0)
    secs = audio_plan(_info(), parse_range(1.0, 2.5), range_offset=1500, last_pts=2960)
    assert (secs.start, secs.end, secs.offset) == (1.5, 3.0, 1.5)  # stream starts at 0.5 s
    frames = audio_plan(_info(), parse_range("10f", "20f"), range_offset=900, last_pts=1260)
    assert frames.start == 0.9 and frames.offset == 0.9
    assert frames.end == pytest.approx(1.26 + 0.04)  # to the end of the last frame
    open_end = audio_plan(_info(), parse_range("10f", None), range_offset=900, last_pts=4460)
    assert (open_end.start, open_end.end) == (0.9, None)


def test_shortfall_of_declared_frames():
    info = _info(frames=60, duration=2.4, start_pts=0)

    def short(declared, done, last_pts, first_pts=0, i=info, rng=FrameRange()):
        return shortfall(i, rng, declared, done, first_pts=first_pts, last_pts=last_pts)

    last = lambda n: (n - 1) * 40  # noqa: E731 - pts (ms) of the n-th frame at 25 fps
    assert short(None, 22, last(22)) is None
    assert short(60, 60, last(60)) is None
    assert short(60, 59, last(59)) is None  # within one frame
    assert short(60, 22, last(22)) == ("only 22 of 60 frames declared by the container could "
                                       "be decoded")
    # Matroska VFR: 100 "declared" from 4.0 s x 25 fps, 20 frames up to 3.61 s (0.37 s apart
    # at the end): the frames reach the end, the count was an estimate
    vfr = _info(frames=100, duration=4.003, start_pts=0)
    assert short(100, 20, 3610, i=vfr) is None
    assert short(100, 10, 810, i=vfr) is not None  # cut after 0.8 s: truncated after all
    # a range: the frames of 1-2 s, decoding stopped at 1.4 s
    assert short(25, 10, 1400, first_pts=1000, rng=parse_range(1.0, 2.0)) is not None
    assert short(25, 25, 1960, first_pts=1000, rng=parse_range(1.0, 2.0)) is None
    images = _info(kind="images", audio=None)
    assert "only 50 of 100" in short(100, 50, 49, i=images)


def test_result_counts_this_runs_frames():
    r = ConversionResult(frames=30, seconds=2.0, fps=5.0, resumed_from=20, warnings=["w"],
                         frames_declared=30)
    assert r.frames_this_run == 10
    d = r.as_dict()
    assert d["frames_this_run"] == 10 and d["warnings"] == ["w"] and d["frames_declared"] == 30


# ---- pipeline -----------------------------------------------------------------------------

def test_pipeline_runs_a_plan_on_its_own(tmp_path, clip, model):
    """The decode / model / encode stage without convert_video: frames into segments and
    checkpoints, nothing assembled."""
    from rvmatte.inference.pipeline import Pipeline
    from rvmatte.inference.session import Matter

    req = _request(clip, tmp_path, alpha=tmp_path / "a", seq_chunk=2, segment_frames=4)
    matter = Matter(model=model, backend="torch")
    plan = plan_outputs(req, plan_targets(req), device_type=matter.device_type,
                        uint8_path=matter.uint8_path)
    d = ck.CheckpointDir(ck.job_dir_for(plan.specs[0].path), "fp")
    d.open(resume=False)
    seen = []
    run = Pipeline(plan, matter, d, progress=seen.append).run()
    assert run.done == 12 and run.resumed_from == 0 and run.range_offset == 0
    assert [p.done for p in seen] == [2, 4, 6, 8, 10, 12] and seen[-1].total == 12
    assert [pts for _, pts in run.segments["composite"]] == [0, 2048, 4096]  # 12800/s
    assert all(p.is_file() for p, _ in run.segments["composite"])
    assert len(list((d.path / "alpha_frames").glob("*.png"))) == 12
    assert json.loads((d.path / "job.json").read_text())["done"] == 12
    assert set(run.stages) >= {"decode_s", "model_s", "encode_s"}


# ---- the fixes, through convert_video ---------------------------------------------------------

def test_16_bit_alpha_into_a_video_is_refused_up_front(tmp_path, clip):
    for name in ("a.mp4", "a.mov", "a.webm", "a.mkv"):
        with pytest.raises(InputError, match="--alpha-bits 16 needs PNG") as e:
            convert_video(clip, None, alpha=tmp_path / name, alpha_bits=16, model=tiny_model())
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    r = convert_video(clip, None, alpha=tmp_path / "a", alpha_bits=16, model=tiny_model(),
                      end="2f")
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "a" / "000000.png")).dtype == np.uint16
    assert r.frames == 2


@pytest.mark.parametrize("ratio", [0.001, 1e-9])
def test_a_tiny_ratio_is_refused_before_the_model_runs(tmp_path, ratio):
    sample = REPO / "examples" / "sample_talking_head_640x360.mp4"
    with pytest.raises(InputError, match="working image") as e:
        convert_video(sample, tmp_path / "c.mp4", downsample_ratio=ratio, end="2f")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_file_is_reported_and_strict_refuses_it(tmp_path, model):
    cut = truncated_faststart_mp4(tmp_path)
    r = convert_video(cut, tmp_path / "o.mp4", model=model)
    assert r.frames_declared == 60 and 0 < r.frames < 40
    assert r.warnings == [f"only {r.frames} of 60 frames declared by the container could be "
                          "decoded"]
    assert r.as_dict()["warnings"] == r.warnings
    with pytest.raises(InputError, match="of 60 frames declared") as e:
        convert_video(cut, tmp_path / "s.mp4", model=model, strict=True)
    assert "\n" not in str(e.value)
    assert not any(p.name.startswith("s.mp4") for p in tmp_path.iterdir())
    whole = convert_video(tmp_path / "full.mp4", tmp_path / "w.mp4", model=model, strict=True)
    assert whole.frames == whole.frames_declared == 60 and whole.warnings == []


def test_resume_counts_this_runs_frames_and_notes_a_discarded_checkpoint(tmp_path, clip, model):
    kw = dict(model=model, seq_chunk=2, segment_frames=4, encode_workers=1)
    ev = threading.Event()
    with pytest.raises(Cancelled, match="resume to continue"):
        convert_video(clip, tmp_path / "c.mp4", cancel=ev,
                      progress=lambda p: p.done >= 6 and ev.set(), **kw)
    r = convert_video(clip, tmp_path / "c.mp4", resume=True, **kw)
    assert r.resumed_from in (4, 8) and r.frames == 12
    assert r.frames_this_run == 12 - r.resumed_from and r.notes == []
    # a checkpoint of other settings: started over, and said so
    with pytest.raises(Cancelled):
        ev.clear()
        convert_video(clip, tmp_path / "d.mp4", cancel=ev,
                      progress=lambda p: p.done >= 6 and ev.set(), **kw)
    r = convert_video(clip, tmp_path / "d.mp4", resume=True, quality=30, **kw)
    assert r.resumed_from == 0 and r.frames_this_run == 12
    assert r.notes == [ck.DISCARDED_NOTE]
    assert _leftovers(tmp_path) == []


class _FailingMatter:
    """A session whose model fails at its ``at``-th call (after ``at - 1`` good ones)."""

    def __new__(cls, model, at: int):
        from rvmatte.inference.session import Matter

        class Failing(Matter):
            calls = 0

            def step(self, *a, **k):
                Failing.calls += 1
                if Failing.calls >= at:
                    raise RuntimeError("the model broke")
                return super().step(*a, **k)

        return Failing(model=model, backend="torch")


def test_failed_runs_leave_a_resume_folder_only_when_it_can_be_resumed(tmp_path, clip, model):
    kw = dict(seq_chunk=2, segment_frames=4, encode_workers=1)
    # before the first checkpoint: nothing to resume, nothing left
    with pytest.raises(RuntimeError, match="the model broke"):
        convert_video(clip, tmp_path / "a.mp4", alpha=tmp_path / "a",
                      model=_FailingMatter(model, 2), **kw)
    ev = threading.Event()
    with pytest.raises(Cancelled) as e:
        convert_video(clip, tmp_path / "b.mp4", model=model, cancel=ev,
                      progress=lambda p: ev.set(), **kw)
    assert "resume" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # after a checkpoint: the folder stays, and resuming finishes the job
    with pytest.raises(RuntimeError):
        convert_video(clip, tmp_path / "c.mp4", model=_FailingMatter(model, 5), **kw)
    assert _leftovers(tmp_path) == ["c.mp4.rvmatte-resume"]
    r = convert_video(clip, tmp_path / "c.mp4", model=_FailingMatter(model, 10**6), resume=True,
                      **kw)
    assert r.resumed_from in (4, 8) and r.frames == 12 and _leftovers(tmp_path) == []


def test_the_stage_modules_do_not_import_torch():
    code = ("import sys\nimport rvmatte.inference.convert, rvmatte.inference.plan, "
            "rvmatte.inference.checkpoint, rvmatte.inference.pipeline, "
            "rvmatte.inference.finalize\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
