"""rvmatte.io.segments: how many encoders, and segments encoded side by side."""

import dataclasses
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from rvm_clips import frame_image, video_frames

from rvmatte.errors import OutputError
from rvmatte.io.segments import (PARALLEL_SEGMENT_SECONDS, SEGMENT_SECONDS, SegmentedOutputs,
                                 check_count, plan_encoding)
from rvmatte.io.writers import SegmentWriter, plan_output

HD = 1920 * 1080


# ---- plan_encoding -------------------------------------------------------------------------

def test_plan_keeps_one_encoder_per_output_on_small_machines():
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=2)
    assert (p.workers, p.threads, p.threaded, p.segment_seconds) == (1, None, False, SEGMENT_SECONDS)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=4)  # outputs side by side
    assert (p.workers, p.threads, p.threaded) == (1, None, True)
    p = plan_encoding(1, frame_bytes=3 * HD, rate=30, cores=4)  # nothing to run side by side
    assert (p.workers, p.threaded) == (1, False)


def test_plan_on_many_cores_shares_them_among_segment_encoders():
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, memory=128 << 30)
    assert (p.workers, p.threads, p.threaded, p.segment_seconds) == (4, 2, True,
                                                                    PARALLEL_SEGMENT_SECONDS)
    p = plan_encoding(1, frame_bytes=3 * HD, rate=30, cores=64, memory=128 << 30)
    assert p.workers == 8 and p.threads == 8  # at most 8 per output; the rest as threads


def test_plan_with_the_model_on_a_gpu_uses_small_machines_too():
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=4, gpu=True, memory=16 << 30)
    assert (p.workers, p.threads, p.threaded, p.segment_seconds) == (2, 1, True,
                                                                    PARALLEL_SEGMENT_SECONDS)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, gpu=True, memory=128 << 30)
    assert (p.workers, p.threads) == (4, 2)  # as on the CPU from 8 cores
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=1, gpu=True)
    assert (p.workers, p.threaded) == (1, False)
    # NVENC: one session per output unless asked (consumer GPUs allow only a few at a time)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, gpu=True, hardware=True)
    assert (p.workers, p.threads, p.segment_seconds) == (1, None, SEGMENT_SECONDS)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, hardware=True, workers=2)
    assert p.workers == 2


def test_plan_limits_held_frames_by_memory():
    # 4K 4:2:0, two outputs: 2 s at 30 fps hold 1.5 GB per worker; 8 GiB of RAM allows 1 GiB
    p = plan_encoding(2, frame_bytes=2 * int(1.5 * 4 * HD), rate=30, cores=16, memory=8 << 30)
    assert p.workers == 1 and p.segment_seconds == SEGMENT_SECONDS and p.threaded
    p = plan_encoding(2, frame_bytes=2 * int(1.5 * 4 * HD), rate=30, cores=16, memory=128 << 30)
    assert p.workers == 2  # 4 GiB at most: two 1.5 GB workers


def test_plan_budgets_memory_for_the_segment_length_asked_for():
    # 1080p, two outputs, 16 cores: 4 workers for 2 s segments, fewer for 30 s ones
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, memory=128 << 30)
    assert p.workers == 4
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, cores=16, memory=128 << 30,
                      segment_frames=900)
    assert p.workers == 1  # 900 frames x 6.2 MB = 5.6 GB > 4 GiB for one worker already


def test_plan_takes_explicit_counts():
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, workers=3, threads=1, cores=2)
    assert (p.workers, p.threads, p.threaded, p.segment_seconds) == (3, 1, True, 2.0)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, workers="2", cores=16)
    assert (p.workers, p.threads) == (2, 4)
    p = plan_encoding(2, frame_bytes=3 * HD, rate=30, workers=1, threads="3", cores=16)
    assert (p.workers, p.threads, p.segment_seconds) == (1, 3, SEGMENT_SECONDS)


@pytest.mark.parametrize("bad", [0, -2, "x", "2.5", 1.5, "", True])
def test_bad_counts_are_one_line_errors(bad):
    with pytest.raises(OutputError, match="positive integer or auto"):
        check_count(bad, "number of encode workers")


# ---- SegmentedOutputs ----------------------------------------------------------------------

W, H = 64, 48


class SlowWriter(SegmentWriter):
    """A real H.264 segment writer that takes ``delay`` seconds per frame."""

    delay = 0.0

    def write(self, image, pts):
        time.sleep(self.delay)
        super().write(image, pts)
        self.written = getattr(self, "written", 0) + 1

    def close(self):
        super().close()
        self.closed_at = time.perf_counter()


def _outputs(tmp_path, *, workers, threaded, slow_first=0.0, fail_at=None):
    spec = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=False)
    made = []

    def make(kind, index, pts):
        w = SlowWriter(spec, tmp_path / f"{kind}_{index:04d}.mp4", W, H, Fraction(1, 25),
                       Fraction(25), pts)
        w.delay = slow_first if index == 0 else 0.0
        if fail_at is not None and index == fail_at:
            w.write = lambda image, pts: (_ for _ in ()).throw(OutputError("disk full (test)"))
        w.created_at = time.perf_counter()
        made.append(w)
        return w

    return SegmentedOutputs(["composite"], make, workers=workers, threaded=threaded, bound=9), made


def _feed(outs, first, n):
    for i in range(first, first + n):
        outs.write("composite", i, i, frame_image(i, W, H))


@pytest.mark.parametrize("workers,threaded", [(1, False), (1, True), (3, True)])
def test_segments_come_back_in_order_with_their_checkpoints(tmp_path, workers, threaded):
    outs, _ = _outputs(tmp_path, workers=workers, threaded=threaded, slow_first=0.02)
    done = []
    for k in range(3):
        _feed(outs, 8 * k, 8)
        outs.boundary(("checkpoint", k))
        done += list(outs.completed())
    outs.write("composite", 24, 24, frame_image(24, W, H))
    outs.boundary()
    done += list(outs.completed(block=True))
    outs.shutdown(abort=False)
    assert [payload for _, payload in done] == [("checkpoint", 0), ("checkpoint", 1),
                                                ("checkpoint", 2), None]
    paths = [seg["composite"][0] for seg, _ in done]
    assert [seg["composite"][1] for seg, _ in done] == [0, 8, 16, 24]
    assert [len(video_frames(p)[0]) for p in paths] == [8, 8, 8, 1]
    _, frames = video_frames(paths[1])
    err = {i: np.abs(frames[0].astype(int) - frame_image(i, W, H)).mean() for i in (7, 8, 9)}
    assert min(err, key=err.get) == 8  # the second segment starts with frame 8


def test_later_segments_encode_while_the_first_is_still_busy(tmp_path):
    outs, made = _outputs(tmp_path, workers=3, threaded=True, slow_first=0.25)
    _feed(outs, 0, 8)
    outs.boundary("a")
    _feed(outs, 8, 8)
    outs.boundary("b")
    assert [w.start_pts for w in made] == [0, 8]
    assert list(outs.completed()) == []  # segment 1 may be done; its checkpoint waits for 0
    got = [p for _, p in outs.completed(block=True)]
    outs.shutdown(abort=False)
    assert got == ["a", "b"]
    # the producer opened segment 1 while segment 0 (8 x 0.25 s) was still being encoded,
    # and segment 1 was done first
    assert made[1].created_at < made[0].closed_at and made[1].closed_at < made[0].closed_at


def test_at_most_workers_segments_in_flight(tmp_path):
    outs, made = _outputs(tmp_path, workers=2, threaded=True, slow_first=0.05)
    for k in range(3):
        _feed(outs, 4 * k, 4)
        outs.boundary()
    assert len(list(outs.completed(block=True))) == 3
    outs.shutdown(abort=False)
    # the third segment was opened only once the first (4 x 0.05 s) was encoded
    assert made[2].created_at >= made[0].closed_at > made[1].created_at


@pytest.mark.parametrize("workers,threaded", [(1, False), (2, True)])
def test_a_failing_encoder_raises_and_leaves_no_segment(tmp_path, workers, threaded):
    outs, _ = _outputs(tmp_path, workers=workers, threaded=threaded, fail_at=8)
    _feed(outs, 0, 8)
    outs.boundary("a")
    with pytest.raises(OutputError, match="disk full"):
        for _ in range(20):  # the worker's error comes back on a later call
            _feed(outs, 8, 8)
            outs.boundary("b")
            list(outs.completed(block=True))
    outs.shutdown(abort=True)
    assert not (tmp_path / "composite_0008.mp4").exists()


@pytest.mark.parametrize("threaded", [False, True])
def test_a_failure_at_a_boundary_stops_every_output(tmp_path, threaded):
    """Output A's encoder fails on the last frame of a segment; B's segment still has to be
    closed or discarded and its worker stopped (it used to be forgotten: a hang)."""
    spec = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=False)

    class FailLast(SlowWriter):
        def write(self, image, pts):
            if self.spec.kind == "composite" and pts == 3:
                raise OutputError("disk full (test)")
            super().write(image, pts)

    def make(kind, index, pts):
        return FailLast(dataclasses.replace(spec, kind=kind), tmp_path / f"{kind}_{index}.mp4",
                        W, H, Fraction(1, 25), Fraction(25), pts)

    stop = threading.Event()
    outs = SegmentedOutputs(["composite", "alpha"], make, workers=2, threaded=threaded,
                            bound=9, stop=stop)
    with pytest.raises(OutputError, match="disk full"):
        for i in range(4):
            for k in ("composite", "alpha"):
                outs.write(k, i, i, frame_image(i, W, H)[..., 0] if k == "alpha"
                           else frame_image(i, W, H))
        if threaded:  # let A's worker fail first: boundary() then meets the error
            outs.open["composite"].future.exception(timeout=10)
        outs.boundary("a")
        list(outs.completed(block=True))
    stop.set()  # what convert_video does when a thread fails
    done = threading.Event()
    threading.Thread(target=lambda: (outs.shutdown(abort=True), done.set()), daemon=True).start()
    assert done.wait(10), "shutdown hung"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # both segments discarded


def test_threaded_abort_removes_files_a_finished_worker_left(tmp_path):
    outs, _ = _outputs(tmp_path, workers=2, threaded=True)
    _feed(outs, 0, 4)
    outs.boundary("a")
    outs.in_flight["composite"][0].wait(threading.Event())  # encoded, not handed back
    outs.shutdown(abort=True)
    assert not list(tmp_path.iterdir())


def test_abort_discards_unfinished_segments(tmp_path):
    outs, _ = _outputs(tmp_path, workers=2, threaded=True, slow_first=0.05)
    _feed(outs, 0, 8)
    outs.boundary("a")
    _feed(outs, 8, 3)
    outs.abort_open()
    assert [p for _, p in outs.completed(block=True)] == ["a"]
    outs.shutdown(abort=True)
    assert (tmp_path / "composite_0000.mp4").exists()
    assert not (tmp_path / "composite_0008.mp4").exists()


def test_stop_ends_every_wait(tmp_path):
    stop = threading.Event()
    spec = plan_output("composite", tmp_path / "o.mp4", codec=None, transparent=False)

    writers = []

    def make(kind, index, pts):
        w = SlowWriter(spec, tmp_path / f"{index}.mp4", W, H, Fraction(1, 25), Fraction(25), pts)
        w.delay = 0.2
        writers.append(w)
        return w

    outs = SegmentedOutputs(["composite"], make, workers=1, threaded=True, bound=1, stop=stop)
    threading.Timer(0.3, stop.set).start()
    _feed(outs, 0, 30)  # the queue of 1 makes it wait on the encoder (0.2 s a frame)
    outs.boundary()
    assert list(outs.completed(block=True)) == []
    outs.shutdown(abort=True)
    # the waits ended at the stop: far fewer than the 30 frames were encoded, none kept
    assert len(writers) == 1 and getattr(writers[0], "written", 0) < 15
    assert not writers[0].path.exists()
