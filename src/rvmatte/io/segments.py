"""Video outputs encoded segment by segment, several segments of one output at a time.

Every video output is cut into segments: fixed frame ranges, each encoded by its own encoder
into its own file (:class:`~rvmatte.io.writers.SegmentWriter`) and remuxed at the end. An
encoder needs its frames in order, but two segments are independent streams (each starts
with a key frame). So where there are cores to spare, consecutive segments of one output are
encoded side by side on worker threads (PyAV releases the GIL while the encoder works): the
producer runs ahead into the next segment while the previous ones are still being encoded.

Why: x264's own threading scales poorly. On a 2-core machine two single-threaded encoders
on two halves of a 1080p clip encode 1.35x as many frames per second as one encoder using
both cores (ultrafast; 1.24x with veryfast). On a GPU, where the network is no longer the
limit, the encoders are.

Memory: at most ``workers`` segments of one output are in flight (open or still encoding);
their frames are held until encoded. Segments complete out of order; :meth:`completed`
hands them back in order, so the job's checkpoints are written only once every segment
before them is complete.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from ..errors import OutputError
from .encoder_process import EncoderProcesses, RemoteSegmentWriter
from .writers import SegmentWriter

_CLOSE = object()
_POLL = 0.1  # seconds between checks of the stop / abort flags while waiting


class _Segment:
    """One segment of one output: its writer, fed inline or through a queue by a worker.
    The worker stops (and discards the file) when the segment is aborted or ``stop`` is set."""

    def __init__(self, writer: SegmentWriter, pool: Optional[ThreadPoolExecutor], bound: int,
                 stop: threading.Event) -> None:
        self.writer = writer
        self.remote = isinstance(writer, RemoteSegmentWriter)  # encoded in another process
        self.stop = stop
        self.aborted = threading.Event()
        self.kept = False  # handed back by SegmentedOutputs.completed(): never discarded
        self.q: Optional[queue.Queue] = None
        self.future: Optional[Future] = None
        if pool is not None:
            self.q = queue.Queue(maxsize=max(1, bound))
            self.future = pool.submit(self._work)

    # -- worker side -----------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while not self.aborted.is_set() and not self.stop.is_set():
                try:
                    item = self.q.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if item is _CLOSE:
                    self.writer.close()
                    return
                self.writer.write(*item)
        except BaseException:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        self.writer.abort()
        self.writer.path.unlink(missing_ok=True)

    # -- producer side ---------------------------------------------------------------------
    def _send(self, item, stop: threading.Event) -> None:
        while True:
            if stop.is_set() or self.aborted.is_set():
                return
            if self.future.done():
                self.future.result()  # the worker failed: raise its error here
                return
            try:
                self.q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def write(self, image: np.ndarray, pts: int, stop: threading.Event) -> None:
        if self.remote:
            self.writer.write(image, pts, stop)
        elif self.future is None:
            self.writer.write(image, pts)
        else:
            self._send((image, pts), stop)

    def close(self, stop: threading.Event) -> None:
        if self.future is None:
            self.writer.close()
        else:
            self._send(_CLOSE, stop)

    def abort(self) -> None:
        """Discard the segment (inline: now; threaded: the worker stops and discards it, and
        :meth:`SegmentedOutputs.shutdown` removes what a finished worker left)."""
        if self.kept:
            return
        self.aborted.set()
        if self.future is None:
            self._discard()

    def done(self) -> bool:
        if self.remote:
            return self.writer.done()
        return self.future is None or self.future.done()

    def wait(self, stop: threading.Event) -> None:
        """Until the segment is encoded (raises the worker's error) or ``stop`` is set."""
        if self.remote:
            self.writer.wait(stop)
            return
        if self.future is None:
            return
        while not stop.is_set():
            try:
                self.future.result(timeout=_POLL)
                return
            except FutureTimeout:
                continue


@dataclass
class _Boundary:
    closed: list                       # [(kind, _Segment)] that end here
    payload: object                    # handed back by completed() (a checkpoint), or None


class SegmentedOutputs:
    """Routes each video output's frames to its current segment and runs the segments'
    encoders inline (``threaded=False``: in the caller's thread, one after the other) or on
    worker threads, up to ``workers`` segments per output at a time.

    ``make_writer(kind, first_index, start_pts)`` opens the writer of a new segment.
    ``bound``: frames queued per segment before :meth:`write` waits (threaded only).
    ``stop``: set when the job fails; every wait gives up when it is set.
    ``writer_args(kind, first_index, start_pts)``: the keyword arguments of that segment's
    :class:`~rvmatte.io.writers.SegmentWriter`; given with several ``workers``, each segment
    is encoded in an encoder process (:mod:`rvmatte.io.encoder_process`) instead of on a
    thread, its frames handed over through a shared ring of ``bound`` slots of
    ``frame_bytes``. If the processes cannot start, threads are used (:attr:`processes` is
    False).
    """

    def __init__(self, kinds, make_writer: Callable[[str, int, int], SegmentWriter], *,
                 workers: int = 1, threaded: bool = False, bound: int = 8,
                 stop: Optional[threading.Event] = None,
                 writer_args: Optional[Callable[[str, int, int], dict]] = None,
                 frame_bytes: int = 0) -> None:
        kinds = list(kinds)
        self.make_writer, self.writer_args = make_writer, writer_args
        self.workers = max(1, int(workers))
        self.bound = bound
        self.stop = stop if stop is not None else threading.Event()
        self.procs: Optional[EncoderProcesses] = None
        if writer_args is not None and self.workers > 1 and kinds:
            try:
                self.procs = EncoderProcesses(self.workers * len(kinds), frame_bytes=frame_bytes,
                                              slots=max(1, bound))
            except OutputError:
                self.procs = None
        self.processes = self.procs is not None
        self.pool = (ThreadPoolExecutor(self.workers * len(kinds), thread_name_prefix="rvmatte-enc")
                     if threaded and kinds and self.procs is None else None)
        self.open: dict[str, _Segment] = {}
        self.in_flight = {k: collections.deque() for k in kinds}
        self.pending: collections.deque[_Boundary] = collections.deque()

    def write(self, kind: str, index: int, pts: int, image: np.ndarray) -> None:
        """Frame ``index`` (timestamp ``pts``) of output ``kind``; opens a segment if needed."""
        seg = self.open.get(kind)
        if seg is None:
            flight = self.in_flight[kind]
            while flight and flight[0].done():
                flight.popleft()
            while len(flight) >= self.workers and not self.stop.is_set():
                flight[0].wait(self.stop)  # the oldest segment of this output must finish first
                flight.popleft()
            if self.stop.is_set():
                return
            writer = (self.procs.open(**self.writer_args(kind, index, pts))
                      if self.procs is not None else self.make_writer(kind, index, pts))
            seg = self.open[kind] = _Segment(writer, self.pool, self.bound, self.stop)
            flight.append(seg)
        seg.write(image, pts, self.stop)

    def boundary(self, payload=None) -> None:
        """The open segments end here. ``payload`` (a checkpoint) comes back from
        :meth:`completed` once they and every earlier segment are encoded."""
        closed = list(self.open.items())
        self.open.clear()
        self.pending.append(_Boundary(closed, payload))  # first: tracked even if a close fails
        for _, seg in closed:
            seg.close(self.stop)

    def completed(self, block: bool = False) -> Iterator[tuple[dict, object]]:
        """``(segments, payload)`` for each boundary whose segments are all encoded, in order;
        ``segments`` maps each output to ``(path, start_pts)`` of its segment ending there.
        ``block``: wait for every boundary so far. Raises a worker's error."""
        while self.pending and not self.stop.is_set():
            b = self.pending[0]
            if not block and not all(seg.done() for _, seg in b.closed):
                return
            for _, seg in b.closed:
                seg.wait(self.stop)
            if self.stop.is_set():
                return
            self.pending.popleft()
            for _, seg in b.closed:
                seg.kept = True
            yield ({kind: (seg.writer.path, seg.writer.start_pts) for kind, seg in b.closed},
                   b.payload)

    def abort_open(self) -> None:
        """Discard the segments that have not reached a boundary (a cancelled job)."""
        for seg in self.open.values():
            seg.abort()
        self.open.clear()

    def shutdown(self, *, abort: bool) -> None:
        """Stop the workers; ``abort``: discard every segment not yet handed back."""
        doomed = []
        if abort:
            segs = list(self.open.values()) + [seg for b in self.pending for _, seg in b.closed]
            segs += [seg for flight in self.in_flight.values() for seg in flight]
            doomed = list({id(seg): seg for seg in segs if not seg.kept}.values())
            self.open.clear()
            for seg in doomed:
                seg.abort()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.procs is not None:  # each child drops what it was told to, then exits
            if not abort:  # as pool.shutdown(wait=True) does: closed segments finish first
                for b in self.pending:
                    for _, seg in b.closed:
                        try:
                            seg.wait(self.stop)
                        except OutputError:
                            pass
            self.procs.shutdown()
        for seg in doomed:  # a worker may have finished its file before it saw the abort
            seg.writer.path.unlink(missing_ok=True)


# ---- how many encoders ---------------------------------------------------------------------

SEGMENT_SECONDS = 10.0           # one encoder per output: a checkpoint every ~10 s of video
PARALLEL_SEGMENT_SECONDS = 2.0   # several: 2 s segments (a key frame every 2 s: +0.1-2.8 %
                                 # size at CRF 18 for 1080p, ultrafast / veryfast)
_AUTO_MIN_CORES = 8              # below this the CPUs are busy with the model (on the CPU)
_AUTO_MIN_CORES_GPU = 2          # the model on a GPU leaves the CPUs to decoding and encoding
_AUTO_THREADS = 2                # encoder threads per segment in auto mode
_AUTO_MAX_WORKERS = 8
_BUFFER_BYTES = 4 << 30          # at most this much (or 1/8 of the RAM) of frames held


@dataclass(frozen=True)
class EncodePlan:
    """How the video outputs are encoded: ``workers`` segments of each output at a time, each
    encoder with ``threads`` threads (None: the encoder's default), on worker threads or not,
    in segments of ``segment_seconds``."""

    workers: int
    threads: Optional[int]
    threaded: bool
    segment_seconds: float
    processes: bool = False  # several workers, each segment encoded in a child process


def check_count(value, what: str) -> Optional[int]:
    """A positive integer option, or ``None`` for ``None`` / ``"auto"``."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise OutputError(f"invalid {what} {value!r}: use a positive integer or auto")
    return n


def _memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def plan_encoding(n_video: int, *, frame_bytes: int, rate: float, workers="auto",
                  threads=None, gpu: bool = False, hardware: bool = False,
                  segment_frames: Optional[int] = None, cores: Optional[int] = None,
                  memory: Optional[int] = None, processes: bool = False) -> EncodePlan:
    """Decide :class:`EncodePlan` for ``n_video`` video outputs whose frames together take
    ``frame_bytes`` bytes, at ``rate`` frames per second.

    ``workers="auto"``: one encoder per output below 8 cores when the model runs on the CPU
    (it needs them), below 2 when it runs on a GPU (``gpu``); else about one 2-thread encoder
    per two cores, shared by the outputs, at least 2 and at most 8 per output, as many as fit
    in min(4 GiB, RAM / 8) of held frames (segments of ``segment_frames`` when the caller
    fixes their length, else of :data:`PARALLEL_SEGMENT_SECONDS`); one with a ``hardware``
    encoder (NVENC: fast enough alone, and consumer GPUs allow only a few sessions at a
    time). ``threads`` (default: the encoder's own choice with one encoder per output, else
    the cores divided among the encoders). ``processes``: several workers encode in child
    processes (:mod:`rvmatte.io.encoder_process`) instead of threads.

    PyAV opens encoders with slice threading, so x264's own choice is one sliced thread per
    CPU (and as many lookahead threads), and ``threads`` N > 1 means N slices a frame. On the
    2-core EPYC the encoders' CPU time for a 1080p composite + alpha was the same, 26-27 ms a
    frame, with 1 thread, 2 sliced, 2 or 3 frame threads (``thread_type=frame``) or the two
    outputs on their own threads; whole conversions differed by less than the noise of the
    shared machine (two runs of one setting: up to 30 %) (benchmarks/alpha_encode.py)."""
    w = check_count(workers, "number of encode workers")
    t = check_count(threads, "number of encoder threads")
    cores = cores or os.cpu_count() or 1
    if n_video <= 0:
        return EncodePlan(1, t, False, SEGMENT_SECONDS)
    if w is None:
        w = 1
        if not hardware and cores >= (_AUTO_MIN_CORES_GPU if gpu else _AUTO_MIN_CORES):
            w = min(_AUTO_MAX_WORKERS, max(2, cores // (_AUTO_THREADS * n_video)))
            memory = memory if memory is not None else _memory_bytes()
            budget = min(_BUFFER_BYTES, memory // 8) if memory else _BUFFER_BYTES
            held = (max(1, int(segment_frames)) if segment_frames
                    else PARALLEL_SEGMENT_SECONDS * rate)
            per_worker = max(1, frame_bytes) * max(1.0, held)
            w = max(1, min(w, int(budget // per_worker)))
    if w > 1 and t is None:
        t = max(1, cores // (w * n_video))
    seconds = PARALLEL_SEGMENT_SECONDS if w > 1 else SEGMENT_SECONDS
    return EncodePlan(w, t, w > 1 or (n_video > 1 and cores >= 4), seconds,
                      processes=w > 1 and bool(processes))
