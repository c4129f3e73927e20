"""rvmatte.io.encoder_process: segment encoders in child processes, driven through
SegmentedOutputs as convert_video drives them (real x264 through PyAV in real processes)."""

import os
import signal
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rvm_clips import frame_image

from rvmatte.errors import OutputError
from rvmatte.io import encoder_process
from rvmatte.io.encoder_process import EncoderProcesses
from rvmatte.io.segments import SegmentedOutputs, plan_encoding
from rvmatte.io.writers import SegmentWriter, plan_output

W, H = 128, 96


def _args(tmp_path, name="o.mp4"):
    spec = plan_output("composite", tmp_path / name, codec=None, transparent=False)

    def writer_args(kind, index, pts):
        return dict(spec=spec, path=tmp_path / f"{kind}_{index:04d}.mp4", width=W, height=H,
                    time_base=Fraction(1, 25), rate=Fraction(25), start_pts=pts, threads=1)
    return writer_args


def _decoded(path):
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def _one_segment(outs, n):
    """Encode ``n`` frames as one segment and finish: it must come back, then shut down."""
    for i in range(n):
        outs.write("composite", i, i, frame_image(i, W, H))
    outs.boundary("a")
    assert [p for _, p in outs.completed(block=True)] == ["a"]
    outs.shutdown(abort=False)


def test_processes_write_what_a_thread_writes(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], lambda *a: SegmentWriter(**args(*a)), workers=2,
                            threaded=True, writer_args=args, frame_bytes=W * H * 3, bound=6)
    assert outs.processes and len(outs.procs.children) == 2
    assert all(c.ring is not None for c in outs.procs.children)
    procs = [c.proc for c in outs.procs.children]
    for i in range(10):
        outs.write("composite", i, i, frame_image(i, W, H))
        if i % 5 == 4:
            outs.boundary(("checkpoint", i + 1))
    got = list(outs.completed(block=True))
    outs.shutdown(abort=False)
    assert [p for _, p in got] == [("checkpoint", 5), ("checkpoint", 10)]
    assert all(p.poll() is not None for p in procs)  # the children exited
    ref = SegmentWriter(**args("ref", 0, 0))
    for i in range(5):
        ref.write(frame_image(i, W, H), i)
    ref.close()
    first = got[0][0]["composite"]
    assert first == (tmp_path / "composite_0000.mp4", 0)
    a, b = _decoded(first[0]), _decoded(ref.path)
    assert len(a) == 5 and [p for p, _ in a] == [p for p, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert [p for p, _ in _decoded(got[1][0]["composite"][0])] == [p for p, _ in b]  # rebased


def test_an_encoder_error_in_a_child_is_one_line_and_leaves_no_file(tmp_path):
    args = _args(tmp_path)

    def bad(kind, index, pts):  # a folder that does not exist: the child cannot open the file
        return {**args(kind, index, pts), "path": tmp_path / "no_such_dir" / "x.mp4"}

    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=bad)
    with pytest.raises(OutputError, match="cannot write") as e:
        for i in range(3):
            outs.write("composite", i, i, frame_image(i, W, H))
            time.sleep(0.05)
        outs.boundary()
        list(outs.completed(block=True))
    assert "\n" not in str(e.value)
    outs.shutdown(abort=True)
    assert not (tmp_path / "no_such_dir").exists()


def test_abort_discards_segments_in_children(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args)
    for i in range(8):
        outs.write("composite", i, i, frame_image(i, W, H))
        if i == 3:
            outs.boundary("a")
    outs.abort_open()
    assert [p for _, p in outs.completed(block=True)] == ["a"]
    outs.shutdown(abort=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["composite_0000.mp4"]


def test_shutdown_with_abort_removes_unkept_files_and_ends_the_children(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=3, threaded=True, writer_args=args)
    procs = [c.proc for c in outs.procs.children]
    for i in range(9):
        outs.write("composite", i, i, frame_image(i, W, H))
        if i % 3 == 2:
            outs.boundary()
    outs.in_flight["composite"][0].wait(threading.Event())  # encoded, never handed back
    outs.shutdown(abort=True)
    assert not list(tmp_path.iterdir())
    assert all(p.poll() is not None for p in procs)


def test_a_child_that_dies_gives_a_one_line_error_not_a_hang(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args)
    outs.write("composite", 0, 0, frame_image(0, W, H))
    for c in outs.procs.children:
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait()
    done = threading.Event()
    err = []

    def run():
        try:
            for i in range(1, 40):
                outs.write("composite", i, i, frame_image(i, W, H))
            outs.boundary()
            list(outs.completed(block=True))
        except OutputError as e:
            err.append(str(e))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(20), "hung after the encoder process died"
    assert err and "encoder process stopped unexpectedly" in err[0] and "\n" not in err[0]
    outs.shutdown(abort=True)


def test_without_an_interpreter_to_start_threads_take_over(tmp_path, monkeypatch):
    args = _args(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(OutputError, match="could not start"):
        EncoderProcesses(2)
    outs = SegmentedOutputs(["composite"], lambda *a: SegmentWriter(**args(*a)), workers=2,
                            threaded=True, writer_args=args)
    assert not outs.processes and outs.pool is not None
    _one_segment(outs, 4)


def test_a_child_that_cannot_start_python_is_reported(tmp_path, monkeypatch):
    """An interpreter that exits at once (here: a module that does not import) counts as not
    started: the caller falls back to threads."""
    monkeypatch.setattr(encoder_process, "_START_TIMEOUT", 20.0)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (tmp_path / "numpy.py").write_text("raise ImportError('broken numpy (test)')\n")
    with pytest.raises(OutputError, match="could not start"):
        EncoderProcesses(1)


def test_the_plan_uses_processes_only_when_asked_and_with_several_workers():
    hd = 3 * 1920 * 1080
    assert not plan_encoding(2, frame_bytes=hd, rate=30, cores=16, memory=128 << 30).processes
    p = plan_encoding(2, frame_bytes=hd, rate=30, cores=16, memory=128 << 30, processes=True)
    assert p.workers > 1 and p.processes
    assert not plan_encoding(2, frame_bytes=hd, rate=30, cores=2, processes=True).processes


def test_frames_larger_than_a_ring_slot_go_through_the_pipe(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=16, bound=4)  # slots far smaller than a frame
    assert all(c.ring is not None for c in outs.procs.children)
    for i in range(6):
        outs.write("composite", i, i, frame_image(i, W, H))
    outs.boundary("a")
    got = list(outs.completed(block=True))
    outs.shutdown(abort=False)
    assert [p for _, p in got] == ["a"]
    assert len(_decoded(got[0][0]["composite"][0])) == 6


def test_a_ring_of_few_slots_waits_for_the_child_and_loses_nothing(tmp_path):
    """Two slots per child: the producer waits for the child to release them; every frame
    arrives, in order, with its own pixels."""
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=2)
    for i in range(24):
        outs.write("composite", i, i, frame_image(i, W, H))
        if i % 12 == 11:
            outs.boundary(i)
    got = list(outs.completed(block=True))
    outs.shutdown(abort=False)
    assert [p for _, p in got] == [11, 23]
    ref = SegmentWriter(**args("ref", 0, 0))
    for i in range(12, 24):
        ref.write(frame_image(i, W, H), i)
    ref.close()
    a, b = _decoded(got[1][0]["composite"][0]), _decoded(ref.path)
    assert len(a) == 12 and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))


# ---- regressions found in review ----------------------------------------------------------

class ParentOnlyPath(type(Path())):
    """Importable in this test process only: a child cannot unpickle it."""


def _wait(fn, timeout=20):
    """Run ``fn`` on a thread; (finished, error)."""
    box = {}

    def go():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["e"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("e")


def test_a_message_the_child_cannot_read_is_an_error_not_a_hang(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, frame_bytes=W * H * 3,
                            bound=4, writer_args=lambda *a: {**args(*a),
                                                              "path": ParentOnlyPath(args(*a)["path"])})

    def job():
        for i in range(12):
            outs.write("composite", i, i, frame_image(i, W, H))
        outs.boundary()
        list(outs.completed(block=True))

    finished, err = _wait(job)
    assert finished, "hung on a child that could not read its message"
    assert isinstance(err, OutputError) and "stopped unexpectedly" in str(err)
    outs.shutdown(abort=True)
    assert not list(tmp_path.glob("composite_*"))


def test_an_argument_that_cannot_be_sent_is_one_line(tmp_path):
    class Local(type(Path())):  # a local class cannot be pickled at all
        pass

    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True,
                            writer_args=lambda *a: {**args(*a), "path": Local(args(*a)["path"])})
    with pytest.raises(OutputError, match="cannot hand a segment to an encoder process"):
        outs.write("composite", 0, 0, frame_image(0, W, H))
    assert all(c.busy is None for c in outs.procs.children)
    outs.shutdown(abort=True)


def test_a_stopping_job_is_not_held_up_by_a_frozen_child(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=3)
    outs.write("composite", 0, 0, frame_image(0, W, H))
    child = outs.open["composite"].writer.child
    time.sleep(0.5)
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: [outs.write("composite", i, i, frame_image(i, W, H))
                                             for i in range(1, 10)], daemon=True)
        t.start()
        time.sleep(0.5)
        outs.stop.set()  # another thread failed
        t.join(5)
        assert not t.is_alive(), "write kept waiting for a slot after the job stopped"
    finally:
        os.kill(child.proc.pid, signal.SIGKILL)
    outs.shutdown(abort=True)


def test_losing_an_idle_child_is_reported_as_such(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=4)
    for c in outs.procs.children:
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait()
    with pytest.raises(OutputError, match=r"stopped unexpectedly \(exit code -9\)"):
        outs.write("composite", 0, 0, frame_image(0, W, H))
    outs.shutdown(abort=True)


def test_what_an_import_prints_does_not_break_the_children(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('hello from sitecustomize' * 20)\n")
    monkeypatch.setenv("PYTHONPATH", str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(encoder_process, "_START_TIMEOUT", 20.0)
    out = tmp_path / "out"
    out.mkdir()
    args = _args(out)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=4)
    assert outs.processes
    _one_segment(outs, 4)


def test_modules_in_the_working_directory_are_not_imported_by_children(tmp_path, monkeypatch):
    (tmp_path / "numpy.py").write_text("raise ImportError('the working directory (test)')\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True,
                            writer_args=_args(out), frame_bytes=W * H * 3, bound=4)
    assert outs.processes
    _one_segment(outs, 1)


def test_shutdown_without_abort_lets_closed_segments_finish(tmp_path):
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=41)
    for i in range(40):
        outs.write("composite", i, i, frame_image(i, W, H))
    outs.boundary()
    outs.shutdown(abort=False)  # without waiting for completed() first
    assert len(_decoded(tmp_path / "composite_0000.mp4")) == 40


def test_the_ring_reuses_the_most_recently_freed_slot(tmp_path):
    """Slots freed last are reused first, so a ring of many slots touches few pages when the
    child keeps up (oldest-first reuse made every slot resident)."""
    args = _args(tmp_path)
    outs = SegmentedOutputs(["composite"], None, workers=2, threaded=True, writer_args=args,
                            frame_bytes=W * H * 3, bound=30)
    outs.write("composite", 0, 0, frame_image(0, W, H))
    child = outs.open["composite"].writer.child
    used, send = [], child.send
    child.send = lambda header, payload=None: (used.append(header[-1]) if header[0] == "frame"
                                               else None, send(header, payload))[1]
    for i in range(1, 10):
        with child.cond:  # the child has given every slot back
            while len(child.free) < 30:
                child.cond.wait(0.1)
        outs.write("composite", i, i, frame_image(i, W, H))
    assert len(set(used)) == 1
    outs.boundary()
    list(outs.completed(block=True))
    outs.shutdown(abort=False)
