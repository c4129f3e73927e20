"""``rvmatte.cluster`` without Ray: the batch here, one clip after another (``cluster=None``),
the split plan and join, the manifest, skip and resume, the shared-storage check."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_clips import SPEC, alpha_of, make_clip, stream_info, video_frames  # noqa: E402

from rvmatte.cluster import DEFAULT_WARMUP, SEAM_BOUND, convert_many, seam_note  # noqa: E402
from rvmatte.cluster import split as sp  # noqa: E402
from rvmatte.cluster import work  # noqa: E402
from rvmatte.errors import Cancelled, InputError, OutputError, RvmatteError  # noqa: E402
from rvmatte.inference.convert import convert_video  # noqa: E402
from rvmatte.io.readers import probe  # noqa: E402


def test_top_level_convert_many_is_the_cluster_one_and_needs_no_ray():
    import subprocess

    code = ("import sys, rvmatte, rvmatte.cluster; "
            "assert rvmatte.convert_many is rvmatte.cluster.convert_many; "
            "assert 'convert_many' in dir(rvmatte); print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"  # Ray is imported only when a cluster is used


def test_batch_here_manifest_skip_and_bad_clip(tmp_path):
    """Three clips and a bad one: the bad one is a failed line, the others equal
    convert_video's; a re-run skips the finished ones and reports the bad one again."""
    clips = [make_clip(tmp_path / f"c{i}.mp4", w=128, h=64, n=6 + i, audio=i == 0)
             for i in range(3)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 10)
    out, man = tmp_path / "out", tmp_path / "m.jsonl"
    res = convert_many([clips[0], bad, *clips[1:]], out, alpha=out, spec=SPEC, manifest=man)
    lines = [json.loads(x) for x in man.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["done", "failed", "done", "done"]
    assert lines == res.records and not res.ok and len(res.failed) == 1
    assert "bad.mp4" in lines[1]["error"] and lines[1]["frames"] == 0
    for r in lines:
        assert set(r) >= {"input", "outputs", "frames", "seconds", "status", "error"}
    for c in clips:
        ref = convert_video(c, tmp_path / "ref.mp4", alpha=tmp_path / "ref_a.mp4", spec=SPEC,
                            overwrite=True)
        assert np.array_equal(alpha_of(out / f"{c.stem}_alpha.mp4"), alpha_of(ref.outputs["alpha"]))
    again = convert_many([*clips, bad], out, alpha=out, spec=SPEC, manifest=man)
    assert [r["status"] for r in again.records] == ["skipped"] * 3 + ["failed"]
    assert [r["frames"] for r in again.records[:3]] == [6, 7, 8]
    assert len(man.read_text().splitlines()) == 4


def test_rerun_resumes_a_partial_clip(tmp_path):
    """A batch stopped mid-clip keeps the clip's checkpoint; the same call again resumes it
    and gives the uninterrupted run's output."""
    # 128x64, not 64x48: x264 with its AVX-512 code differed from run to run on up to 1 % of
    # 64x48 encodes (scripts/x264_determinism.py; rvmatte now opens it without that code),
    # and this compares 80 segments' bytes with one run's
    clip = make_clip(tmp_path / "c.mp4", w=128, h=64, n=400, audio=False)
    out = tmp_path / "out"
    stop = threading.Event()

    def progress(p):
        if p.done >= 12 and (out / "c.mp4.rvmatte-resume" / "job.json").exists():
            stop.set()

    with pytest.raises(Cancelled):
        convert_many([clip], out, spec=SPEC, segment_frames=5, progress=progress, cancel=stop)
    assert not (out / "c.mp4").exists() and (out / "c.mp4.rvmatte-resume").is_dir()
    res = convert_many([clip], out, spec=SPEC, segment_frames=5)
    (r,) = res.records
    assert r["status"] == "done" and r["resumed_from"] >= 10 and r["frames"] == 400
    convert_video(clip, tmp_path / "ref.mp4", spec=SPEC, segment_frames=5)
    got, want = video_frames(out / "c.mp4"), video_frames(tmp_path / "ref.mp4")
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert not (out / "c.mp4.rvmatte-resume").exists()


@pytest.mark.parametrize("post", [{}, {"stabilize": True, "refine_foreground": True}],
                         ids=["plain", "post"])
def test_split_equals_sequential_where_warmup_reaches_the_start(tmp_path, post):
    """With a warm-up back to the clip's first frame each part is the sequential run: the
    joined alpha is identical (lossless), with its timestamps and its one audio track. With
    temporal post-processing too: its state is carried from the warm-up into the part."""
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=30)
    # split parts run the float network (auto: fused, not int8)
    ref = convert_video(clip, tmp_path / "ref.mkv", alpha=tmp_path / "ref_a.mkv",
                        codec="ffv1", spec=SPEC.replace(backend="fused"), **post)
    res = convert_many([clip], tmp_path / "s.mkv", alpha=tmp_path / "s_a.mkv", codec="ffv1",
                       spec=SPEC, split=3, warmup=30, **post)
    (r,) = res.records
    assert r["status"] == "done" and r["parts"] == 3 and r["frames"] == 30
    assert r["seam_bound"] == SEAM_BOUND and r["warmup"] == 30
    for kind in ("composite", "alpha"):
        got, want = video_frames(r["outputs"][kind]), video_frames(ref.outputs[kind])
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
    a, b = stream_info(tmp_path / "s.mkv"), stream_info(ref.outputs["composite"])
    assert a["audio"] == b["audio"] and a["time_base"] == b["time_base"]
    assert not list(tmp_path.glob("*.rvmatte-parts")) and not list(tmp_path.glob("*resume*"))


@pytest.mark.parametrize("start,end", [("7f", "31f"), (0.3, 1.3), (None, "20f")])
def test_split_of_a_range_keeps_timestamps_and_audio(tmp_path, start, end):
    """A range in frames or seconds, split: the frames, timestamps and audio of the
    sequential run of that range."""
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=40)
    ref = convert_video(clip, tmp_path / "ref.mp4", spec=SPEC, start=start, end=end)
    res = convert_many([clip], tmp_path / "s.mp4", spec=SPEC, split=2, warmup=3,
                       start=start, end=end)
    (r,) = res.records
    assert r["status"] == "done", r["error"]
    assert r["frames"] == ref.frames
    assert video_frames(tmp_path / "s.mp4")[0] == video_frames(tmp_path / "ref.mp4")[0]
    a, b = stream_info(tmp_path / "s.mp4")["audio"], stream_info(tmp_path / "ref.mp4")["audio"]
    assert a["samples"] == b["samples"] and a["start"] == b["start"]


def test_bad_numbers_of_actors_are_one_line(tmp_path, capsys):
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=4, audio=False)
    for bad in (-1, True, 1.5):
        with pytest.raises(InputError, match="invalid number of actors"):
            convert_many([clip], tmp_path / "o", spec=SPEC, actors=bad)
    from rvmatte.cli import main

    assert main(["convert", str(clip), "-o", str(tmp_path / "o"), "--actors", "-2"]) != 0
    err = capsys.readouterr().err
    assert "invalid number of actors" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_split_parts_run_the_float_network():
    """``auto`` picks int8 where it wins, but not for a split part: its seam bound holds for
    the float network (docs/CLUSTER.md)."""
    from rvmatte.runtime import auto_backend

    s = work.session(SPEC)
    whole = s.backend_for(0.5)
    assert whole == auto_backend("cpu", "float32", 0.5, bundled=True)
    s.float_state = True
    assert s.backend_for(0.5) == auto_backend("cpu", "float32", 0.5, bundled=False) != "int8"
    assert work.session(SPEC).backend_for(0.5) == whole  # a new task: the usual rule
    pinned = work.session(SPEC.replace(backend="int8"))
    pinned.float_state = True
    assert pinned.backend_for(0.5) == "int8"  # asked for by name: kept


def test_split_plan_parts_cover_the_range(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=50, audio=False)
    info = probe(clip)
    outs = [("alpha", str(tmp_path / "a.mp4"))]
    p = sp.plan_split(info, outs, count=4, warmup=5)
    assert [(x.first, x.stop) for x in p.parts] == [(0, 12), (12, 25), (25, 37), (37, 50)]
    assert [x.warm_frames for x in p.parts] == [0, 5, 5, 5]
    assert p.parts[0].start is None and p.parts[-1].end is None and p.frames == 50
    p = sp.plan_split(info, outs, seconds=0.6, warmup=20, start="10f")  # 25 fps: 15 frames
    assert [(x.first, x.stop) for x in p.parts] == [(10, 25), (25, 40), (40, 50)]
    assert [x.warm_frames for x in p.parts] == [0, 15, 20]
    assert p.range_offset == 10 * 512  # the clip's time base is 1/12800 at 25 fps
    assert len(sp.plan_split(info, outs, count=80, warmup=0).parts) == 50
    with pytest.raises(InputError):
        sp.plan_split(info, outs, count=0)
    with pytest.raises(InputError):
        sp.plan_split(info, outs, seconds=-1)


def test_split_refuses_image_sequences_video_backgrounds_and_selection(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=4, audio=False)
    res = convert_many([clip], None, alpha=str(tmp_path / "{stem}_frames"), spec=SPEC, split=2)
    assert "image sequence" in res.records[0]["error"]
    bg = make_clip(tmp_path / "bg.mp4", w=64, h=48, n=4, audio=False)
    res = convert_many([clip], tmp_path / "o.mp4", spec=SPEC, split=2, background=str(bg))
    assert "video background" in res.records[0]["error"]
    res = convert_many([clip], tmp_path / "o.mp4", spec=SPEC, split=2, select=(32, 24))
    assert "person selection cannot be split" in res.records[0]["error"]
    assert not (tmp_path / "o.mp4").exists()


def test_a_node_that_does_not_see_the_files_fails_its_task(tmp_path):
    """The driver's marker missing from an output folder, or the input missing: a failed
    record that says why (shared storage), nothing written."""
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=2, audio=False)
    out = tmp_path / "out"
    out.mkdir()
    markers = {str(out): (str(out / ".rvmatte-cluster-x"), "x")}  # never written
    job = work.ClipJob(str(clip), [("composite", str(out / "c.mp4"))], SPEC, markers=markers)
    with pytest.raises(OutputError, match="shared storage"):
        work.check_storage(job, wait_s=0)
    job.input = str(tmp_path / "elsewhere.mp4")
    rec = work.convert_clip(job)
    assert rec["status"] == "failed" and "input not found on" in rec["error"]
    assert list(out.iterdir()) == []
    good = work.write_markers([out], "y")
    job = work.ClipJob(str(clip), [("composite", str(out / "c.mp4"))], SPEC, markers=good)
    work.check_storage(job, wait_s=0)
    work.remove_markers(good)
    assert list(out.iterdir()) == []


def test_outputs_of_several_inputs(tmp_path):
    a, b = (make_clip(tmp_path / d / "same.mp4", w=64, h=48, n=2, audio=False)
            for d in ("x", "y") if (tmp_path / d).mkdir() is None)
    with pytest.raises(OutputError, match="both write"):
        convert_many([a, b], tmp_path / "out", spec=SPEC)
    with pytest.raises(InputError, match="no output"):
        convert_many([a], None, spec=SPEC)
    with pytest.raises(InputError, match="not both"):
        convert_many([a], tmp_path / "o", spec=SPEC, split=2, split_seconds=1)


def test_without_ray_a_cluster_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "rvmatte.cluster.remote", raising=False)
    clip = make_clip(tmp_path / "c.mp4", w=64, h=48, n=2, audio=False)
    with pytest.raises(RvmatteError, match=r"pip install 'rvmatte\[cluster\]'"):
        convert_many([clip], tmp_path / "o", spec=SPEC, cluster="local")


def test_seam_note_says_the_bound():
    assert "2/255" in seam_note(DEFAULT_WARMUP) and "5e-04" in seam_note(DEFAULT_WARMUP)
    assert DEFAULT_WARMUP == 120 and SEAM_BOUND == {"mean": 5e-4, "p99": 2 / 255}
    assert "below the default" in seam_note(0)


def test_cli_several_inputs_without_a_cluster(tmp_path, capsys):
    """``rvmatte convert A B BAD -o OUT``: one after another here, a manifest in OUT, exit 1
    for the bad clip with its one line; ``--split`` of one input to a file prints the bound."""
    from rvmatte.cli import main

    a = make_clip(tmp_path / "a.mp4", w=64, h=48, n=5, audio=False)
    b = make_clip(tmp_path / "b.mp4", w=64, h=48, n=6, audio=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk" * 20)
    out = tmp_path / "out"
    rc = main(["convert", str(a), str(b), str(bad), "-o", str(out), "--threads", "1",
               "--downsample", "0.5", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "rvmatte: error: bad.mp4: " in err and "Traceback" not in err
    lines = [json.loads(x) for x in (out / "rvmatte-manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["done", "done", "failed"]
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "rvmatte-manifest.jsonl"]
    rc = main(["convert", str(b), "-o", str(tmp_path / "whole.mp4"), "--split", "2",
               "--warmup", "2", "--threads", "1", "--downsample", "0.5"])
    err = capsys.readouterr().err
    assert rc == 0 and "split: warm-up 2 frames per part" in err
    assert len(video_frames(tmp_path / "whole.mp4")[0]) == 6
    assert (tmp_path / "rvmatte-manifest.jsonl").exists()


def test_server_jobs_sent_to_a_cluster_keep_their_options(tmp_path):
    """``serve --cluster``: a job's quality, selection and plate options reach the task's
    conversion (paths absolute: a worker's working folder is not the server's)."""
    from types import SimpleNamespace

    from rvmatte.cluster import ClusterRunner
    from rvmatte.post.people import Selection

    job = SimpleNamespace(input=Path("in.mp4"), outputs={"alpha": Path("a.mp4")},
                          background="green", downsample_ratio="auto", stabilize=True,
                          foreground_estimation=True, plate=Path("plate.png"),
                          select=Selection(mask="mask.png", frame=2))
    clip = ClusterRunner(SPEC, cluster="local").job(job)
    o = clip.options
    assert o["stabilize"] is True and o["refine_foreground"] is True
    assert o["background_plate"] == str(Path("plate.png").absolute())
    assert o["select"] == Selection(mask=str(Path("mask.png").absolute()), frame=2)
    plain = ClusterRunner(SPEC, cluster="local").job(SimpleNamespace(
        input=Path("in.mp4"), outputs={"alpha": Path("a.mp4")}, background="green",
        downsample_ratio="auto"))
    assert plain.options == {"background": "green"}
