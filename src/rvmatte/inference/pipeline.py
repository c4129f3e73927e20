"""The running stage of a conversion: decode, model and encode, overlapped on three threads.

::

    decode thread:  Source.frames() -> chunks of seq_chunk uint8 frames      --q_in-->
    caller thread:  Matter -> composite / alpha / foreground as uint8         --q_out-->
    encode thread:  segment writers (video) / PNG files; checkpoints at segment ends
                    (on 4+ cores the video encoders run on worker threads; on 8+ cores, or
                    2+ with the model on a GPU, several segments of each output at a time:
                    rvmatte.io.segments)

The queues hold a few chunks each, so memory stays flat on any length of video. Every
``segment_frames`` frames the model thread sends the recurrent state along; once that
segment of every output is encoded the encode thread saves a checkpoint
(:class:`~rvmatte.inference.checkpoint.CheckpointDir`). A failure in any thread stops all of
them and is raised in the caller's; ``cancel`` stops decoding, lets the encoder finish the
segments that reached a boundary, and raises :class:`~rvmatte.errors.Cancelled`.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..errors import Cancelled, InputError, OutputError, RvmatteError
from ..io.readers import Source
from ..io.segments import SegmentedOutputs
from ..io.writers import SEGMENT_FORMAT, SegmentWriter, image_name, write_png
from ..post import PostChain
from .checkpoint import Checkpoint, CheckpointDir
from .finalize import image_dir, image_file
from .plan import UINT8_NAMES, OutputPlan

QUEUE_CHUNKS = 3  # chunks buffered between threads (bounds memory)


@dataclass(frozen=True)
class ProgressInfo:
    """Passed to a ``progress`` callable after each chunk of frames."""

    done: int                      # frames processed so far (including resumed ones)
    total: Optional[int]           # frames expected (None if the container does not say)
    fps: float                     # frames per second in this run
    eta_seconds: Optional[float]


@dataclass
class RunResult:
    """What the pipeline did: ``done`` frames (resumed ones included), the last frame's input
    timestamp and the range's first (``range_offset``), each output's segments, when the
    run started (``time.perf_counter()``), the stage times, whether encoder processes ran,
    and notes."""

    done: int
    resumed_from: int
    last_pts: Optional[int]
    range_offset: Optional[int]
    segments: dict
    started: float
    stages: dict
    processes: bool
    notes: list
    warnings: list = field(default_factory=list)


class _Job:
    """The stop flag and first error shared by the three threads of one conversion."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.lock = threading.Lock()

    def fail(self, e: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = e
        self.stop.set()


class _Stages:
    """Where a conversion's time goes, one accumulator per thread (each written by its own
    thread only): the decode thread's time decoding, the model thread's time matting and
    transferring (on the uint8 path the network alone), the finish thread's time making the
    full-resolution outputs from the network's coefficients (the uint8 path), the encode
    thread's time handing frames to the encoders (which includes waiting for a free
    encoder), and the time each spent waiting for its neighbour. A stage
    busy for nearly the whole run is the one that bounds the speed."""

    KEYS = ("decode_s", "decode_blocked_s", "model_s", "model_waited_for_input_s",
            "model_blocked_s", "finish_s", "finish_waited_for_input_s", "finish_blocked_s",
            "encode_s", "encode_waited_for_input_s")

    def __init__(self) -> None:
        self.t = dict.fromkeys(self.KEYS, 0.0)

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.t[key] += now - since
        return now

    def report(self) -> dict:
        return dict(self.t)


def _put(q: queue.Queue, item, job: _Job, halt: Optional[threading.Event] = None) -> bool:
    while not job.stop.is_set() and not (halt is not None and halt.is_set()):
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, job: _Job):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if job.stop.is_set():
                return None


class _Tqdm:
    """A progress bar on stderr, shown from the first chunk on: an error in building the
    model's runner (made on its first call) stays the only line."""

    def __init__(self, total: Optional[int], initial: int) -> None:
        self.total, self.initial, self.bar = total, initial, None

    def __call__(self, p: ProgressInfo) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, unit="frame",
                            file=sys.stderr, dynamic_ncols=True, leave=True)
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_cuda_oom(e: BaseException) -> bool:
    mod = sys.modules.get("torch")  # a CUDA error can only come from a loaded torch
    return mod is not None and isinstance(e, mod.cuda.OutOfMemoryError)


class Pipeline:
    """One conversion's frames through ``matter`` (a :class:`~rvmatte.inference.session.Matter`)
    as ``plan`` says, from ``resumed`` (a loaded checkpoint) or the start.

    progress: None/False, True (a tqdm bar on stderr) or a callable taking
    :class:`ProgressInfo`. cancel: a ``threading.Event``. :meth:`run` runs it once.
    post: ``{name: processor}`` run in order on each chunk after the network (the post
    stage, :mod:`rvmatte.post`): ``processor.tensors(src, fgr, pha) -> (fgr, pha)`` with
    ``src``/``fgr`` (T,3,H,W), ``pha`` (T,1,H,W); ``state_arrays()`` / ``load_state(arrays)``
    carry its state through checkpoints; an optional ``warnings`` list reaches the result.
    On the uint8 (fused) path the processors' numpy call runs on each frame's float outputs
    before the uint8 outputs are made (``Matter.finish_uint8(post=...)``).

    Threads: decode -> ``q_in`` -> model (the caller's thread) -> ``q_out`` -> encode. On the
    uint8 path the model thread runs the recurrent network alone (``Matter.network_uint8``)
    and a finish thread between it and the encoder makes the full-resolution outputs, the
    post stage included (``Matter.finish_uint8``), so the next frame's network overlaps them:
    model -> ``q_mid`` -> finish -> ``q_out``. Checkpoints pass through the finish thread,
    which adds the post stage's state as of the same frame.
    """

    def __init__(self, plan: OutputPlan, matter: Any, checkpoints: CheckpointDir,
                 resumed: Optional[Checkpoint] = None, *, progress: Any = None,
                 cancel: Optional[threading.Event] = None, post: Optional[dict] = None) -> None:
        start = resumed or Checkpoint(segments={s.kind: [] for s in plan.specs})
        self.plan, self.matter, self.checkpoints, self.cancel = plan, matter, checkpoints, cancel
        self.progress = progress
        self.resume_index = self.done = self.done_written = start.done
        self.last_pts, self.range_offset = start.last_pts, start.range_offset
        # the input timestamp to seek to when resuming (frame `done` comes after last_pts)
        self.resume_pts = None if start.last_pts is None else start.last_pts + 1
        self.segments = {k: list(v) for k, v in start.segments.items()}
        self.state = self._restore_state(start.state)
        self.post = dict(post or {})
        # the uint8 path's post stage: the processors as one callable (whose
        # ``replaces_foreground`` the fused runner reads), made once
        self.post_chain = PostChain(self.post) if self.post else None
        seed = (getattr(matter, "post_seed", None) or {}) if resumed is None else {}
        for name, proc in self.post.items():
            proc.load_state(list(start.post.get(name) or seed.get(name) or []))
        self.job, self.stages = _Job(), _Stages()
        self.halt = threading.Event()  # cancel: stop decoding, let the encoder finish
        self.q_in: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.q_out: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        # the uint8 path's finish thread takes the network's coefficients from here
        self.q_mid: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.video = {s.kind: s for s in plan.video_specs}
        self.notes: list[str] = []
        self.outs: Optional[SegmentedOutputs] = None

    def _restore_state(self, arrays: list):
        """A checkpoint's float32 arrays as the state the model stage passes on."""
        if not arrays:
            return None
        if self.plan.uint8:  # the uint8 path keeps its state as numpy
            return tuple(arrays)
        import torch

        m = self.matter
        return tuple(torch.from_numpy(a).to(m.device, m.dtype) for a in arrays)

    # ---- the whole run ------------------------------------------------------------------
    def run(self) -> RunResult:
        """Convert every frame; raises the first error of any stage, or
        :class:`~rvmatte.errors.Cancelled`."""
        for kind in (s.kind for s in self.plan.specs if s.mode == "images"):
            image_dir(self.checkpoints.path, kind).mkdir(exist_ok=True)
        self.outs = self._open_outputs()
        reporter, bar = self._reporter()
        threads = [threading.Thread(target=self._decode, name="rvmatte-decode", daemon=True),
                   threading.Thread(target=self._encode, name="rvmatte-encode", daemon=True)]
        if self.plan.uint8:
            threads.append(threading.Thread(target=self._finish, name="rvmatte-finish",
                                            daemon=True))
        for t in threads:
            t.start()
        t_run = time.perf_counter()
        cancelled = False
        try:
            cancelled = self._model_loop(reporter, t_run)
        except BaseException as e:  # noqa: BLE001 - includes KeyboardInterrupt: stop the threads
            self.job.fail(e)
        finally:
            if self.job.error is not None:
                self.job.stop.set()
            for t in threads[2:]:
                t.join()        # the finish thread passes on what was matted (cancel)
            threads[1].join()   # the encoder first: it drains what was matted (cancel)
            if cancelled:
                self.job.stop.set()
            threads[0].join()
            if bar is not None:
                bar.close()
        self._raise(cancelled)
        if self.post and hasattr(self.matter, "keep_post"):
            self.matter.keep_post({n: p.state_arrays() for n, p in self.post.items()})
        warnings = [w for p in self.post.values() for w in getattr(p, "warnings", ())]
        return RunResult(self.done, self.resume_index, self.last_pts, self.range_offset,
                         self.segments, t_run, self.stages.report(),
                         self.outs.processes, self.notes, warnings)

    def _raise(self, cancelled: bool) -> None:
        path = self.plan.info.path
        if cancelled:
            hint = " (run again with resume to continue)" if self.checkpoints.saved else ""
            raise Cancelled(f"conversion of {path} cancelled at frame {self.done_written}{hint}")
        e = self.job.error
        if e is not None:
            if isinstance(e, OSError) and e.errno in (28, 27):
                raise OutputError(f"disk full while writing outputs ({e.strerror})") from None
            raise e
        if self.done == 0:
            raise InputError(f"{path}: the selected range contains no frames")

    def _reporter(self) -> tuple[Optional[Callable], Optional[_Tqdm]]:
        if self.progress is True:
            bar = _Tqdm(self.plan.expected_frames, self.resume_index)
            return bar, bar
        return (self.progress if callable(self.progress) else None), None

    # ---- decode stage -------------------------------------------------------------------
    def _decode(self) -> None:
        """Chunks of ``seq_chunk`` frames into ``q_in``, then None. 4:2:0 planes are written
        straight into the chunk (one copy from the decoder); RGB frames are stacked (with one
        frame per chunk, the CPU default, the frame is the chunk)."""
        plan, job, n = self.plan, self.job, self.plan.seq_chunk
        h, w = plan.info.height, plan.info.width
        filling: Optional[np.ndarray] = None  # the 4:2:0 chunk the frames are written into
        buf, idx, pts = [], [], []

        def slot() -> np.ndarray:
            nonlocal filling
            if filling is None:
                filling = np.empty((n, h * 3 // 2, w), np.uint8)
            return filling[len(buf)]

        def chunk_of(frames: list) -> np.ndarray:
            nonlocal filling
            if plan.yuv_in:
                chunk, filling = filling[:len(frames)], None  # the next frame starts a new one
                return chunk
            return frames[0][None] if len(frames) == 1 else np.stack(frames)

        try:
            frames = Source(plan.info, plan.range).frames(
                self.resume_index, self.resume_pts, yuv=plan.yuv_in,
                into=slot if plan.yuv_in else None)
            t = time.perf_counter()
            for fr in frames:
                if job.stop.is_set() or self.halt.is_set():
                    return
                buf.append(fr.image)
                idx.append(fr.index)
                pts.append(fr.pts)
                if len(buf) == n:
                    chunk = chunk_of(buf)
                    t = self.stages.add("decode_s", t)
                    if not _put(self.q_in, (idx, pts, chunk), job, self.halt):
                        return
                    t = self.stages.add("decode_blocked_s", t)
                    buf, idx, pts = [], [], []
            if buf:
                _put(self.q_in, (idx, pts, chunk_of(buf)), job, self.halt)
            _put(self.q_in, None, job, self.halt)
        except BaseException as e:  # noqa: BLE001 - handed to the caller thread
            job.fail(e)

    # ---- model stage (the caller's thread) ----------------------------------------------
    def _model_loop(self, reporter: Optional[Callable], t_run: float) -> bool:
        """Matte each chunk from ``q_in`` into ``q_out``, with the state at segment ends.
        Returns True when cancelled."""
        job, seg = self.job, self.plan.segment_frames
        q_next = self.q_mid if self.plan.uint8 else self.q_out
        while True:
            if self.cancel is not None and self.cancel.is_set():
                self.halt.set()
                _put(q_next, ("cancel",), job)
                return True
            t = time.perf_counter()
            item = _get(self.q_in, job)
            t = self.stages.add("model_waited_for_input_s", t)
            if item is None:
                if not job.stop.is_set():
                    _put(q_next, ("end",), job)
                return False
            idx, pts, frames = item
            if self.range_offset is None:
                rng = self.plan.range
                self.range_offset = pts[0] if not rng.empty and rng.start else 0
            if self.plan.uint8:
                coefs, self.state = self.matter.network_uint8(frames, self.state,
                                                              self.plan.ratio)
                made = ("coefs", idx, pts, (frames, coefs))
            else:
                made = ("frames", idx, pts, self._matte(idx, frames))
            t = self.stages.add("model_s", t)
            if not _put(q_next, made, job):
                return False
            t = self.stages.add("model_blocked_s", t)
            self.done, self.last_pts = idx[-1] + 1, pts[-1]
            if self.done % seg == 0:
                state = self.matter.state_arrays(self.state)
                post = None if self.plan.uint8 else self._post_state()
                t = self.stages.add("model_s", t)
                if not _put(q_next, ("checkpoint", self.done, pts[-1], state, post), job):
                    return False
                self.stages.add("model_blocked_s", t)
            if reporter is not None:
                reporter(self._progress_info(t_run))

    def _post_state(self) -> dict:
        return {name: p.state_arrays() for name, p in self.post.items()}

    # ---- finish stage (the uint8 path) ---------------------------------------------------
    def _finish(self) -> None:
        """The network's coefficients from ``q_mid`` -> the outputs into ``q_out``;
        checkpoints get the post stage's state here (as of their frame); the end and cancel
        items are passed on, and end the thread."""
        job, plan, stages = self.job, self.plan, self.stages
        kw = {"post": self.post_chain} if self.post_chain is not None else {}
        try:
            while True:
                t = time.perf_counter()
                item = _get(self.q_mid, job)
                t = stages.add("finish_waited_for_input_s", t)
                if item is None:
                    return
                if item[0] == "coefs":
                    _, idx, pts, (frames, coefs) = item
                    made = self.matter.finish_uint8(frames, coefs, plan.ratio,
                                                    outputs=plan.uint8_outputs,
                                                    background=plan.uint8_background, **kw)
                    item = ("frames", idx, pts,
                            {key: made[UINT8_NAMES[key]] for key in plan.keys.values()})
                elif item[0] == "checkpoint":
                    item = (*item[:4], self._post_state())
                t = stages.add("finish_s", t)
                if not _put(self.q_out, item, job):
                    return
                stages.add("finish_blocked_s", t)
                if item[0] in ("end", "cancel"):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the caller thread
            job.fail(e)

    def _progress_info(self, t_run: float) -> ProgressInfo:
        total, done = self.plan.expected_frames, self.done
        el = time.perf_counter() - t_run
        fps = (done - self.resume_index) / el if el > 0 else 0.0
        eta = (total - done) / fps if (total and fps > 0 and total >= done) else None
        return ProgressInfo(done, total, fps, eta)

    def _matte(self, idx: list, frames: np.ndarray) -> dict:
        """One chunk on the tensor path -> ``{key: uint8 array}`` for each key of
        ``plan.keys`` (the uint8 path: the model thread and :meth:`_finish`)."""
        plan, m = self.plan, self.matter
        h, w = plan.info.height, plan.info.width
        try:
            if plan.yuv_in:
                matrix, full = plan.yuv_matrix
                src = m.yuv_to_tensor(frames, h, w, matrix=matrix, full_range=full)
            else:
                src = m.to_tensor(frames)
            fgr, pha, self.state = m.step(src, self.state, plan.ratio)
            for proc in self.post.values():
                fgr, pha = proc.tensors(src, fgr, pha)
            return tensor_outputs(plan, src, fgr, pha, idx[0])
        except Exception as e:
            if not _is_cuda_oom(e):
                raise
            raise RvmatteError(
                f"out of GPU memory at {len(idx)} frame(s) of {w}x{h} per call; "
                "use --seq-chunk 1, a smaller --downsample, or --device cpu") from None

    # ---- encode stage -------------------------------------------------------------------
    def _writer_args(self, kind: str, index: int, start_pts: int) -> dict:
        """The :class:`~rvmatte.io.writers.SegmentWriter` arguments of the segment of output
        ``kind`` that starts at frame ``index`` (timestamp ``start_pts``)."""
        s, info = self.video[kind], self.plan.info
        name = f"{kind}_{index:09d}{SEGMENT_FORMAT[s.codec][1]}"
        return dict(spec=s, path=self.checkpoints.segments_dir / name, width=info.width,
                    height=info.height, time_base=info.time_base, rate=info.rate,
                    start_pts=start_pts, yuv=self.plan.keys[kind].startswith("yuv:"),
                    threads=self.plan.encode.threads)

    def _open_outputs(self) -> SegmentedOutputs:
        """The segment writers of the video outputs: in the encode thread on 1-3 cores,
        where the model needs them; else each output on its own worker thread; on 8+ cores
        (2+ with the model on a GPU) several segments of each output at a time, on worker
        threads, or with ``encode_processes`` in encoder processes (threads if those cannot
        start). The producer runs up to ``workers`` segments ahead, so a segment's frames may
        all be queued."""
        plan, enc = self.plan, self.plan.encode
        outs = SegmentedOutputs(
            list(self.video), lambda *a: SegmentWriter(**self._writer_args(*a)),
            workers=enc.workers, threaded=enc.threaded, stop=self.job.stop,
            bound=plan.segment_frames + 1 if enc.workers > 1 else 2 * plan.seq_chunk,
            writer_args=self._writer_args if enc.processes else None,
            frame_bytes=max(plan.frame_bytes.values(), default=0))
        if enc.processes and not outs.processes:
            self.notes.append("encoder processes could not start: encoding on threads")
        return outs

    def _encode(self) -> None:
        """Write what ``q_out`` brings until the end (or cancel) item."""
        clean, job, outs = False, self.job, self.outs
        try:
            while True:
                t = time.perf_counter()
                item = _get(self.q_out, job)
                t = self.stages.add("encode_waited_for_input_s", t)
                if item is None or job.stop.is_set():
                    return
                if item[0] in ("end", "cancel"):
                    if item[0] == "end":
                        outs.boundary()
                    else:
                        outs.abort_open()  # the unfinished segment is not kept
                    self._commit(block=True)  # waits for the encoders to finish
                    self.stages.add("encode_s", t)
                    clean = not job.stop.is_set()
                    return
                if item[0] == "checkpoint":
                    outs.boundary(item[1:])  # (done, last pts, recurrent state)
                else:
                    self._write(*item[1:])
                self._commit()
                self.stages.add("encode_s", t)
        except BaseException as e:  # noqa: BLE001 - handed to the caller thread
            job.fail(e)
        finally:
            outs.shutdown(abort=not clean)

    def _write(self, idx: list, pts: list, arrays: dict) -> None:
        job_dir = self.checkpoints.path
        for s in self.plan.specs:
            frames = arrays[self.plan.keys[s.kind]]
            for j, (i, p) in enumerate(zip(idx, pts)):
                if s.mode == "video":
                    self.outs.write(s.kind, i, p - self.range_offset, frames[j])
                elif s.mode == "images":
                    write_png(image_dir(job_dir, s.kind) / image_name(s, i), frames[j],
                              bits=s.alpha_bits)
                else:
                    write_png(image_file(job_dir, s), frames[j], bits=s.alpha_bits)

    def _commit(self, block: bool = False) -> None:
        """Record the segments that are encoded; save the checkpoints they complete."""
        for closed, payload in self.outs.completed(block):
            for kind, record in closed.items():
                self.segments[kind].append(record)
            if payload is not None:
                done, last, state, post = payload
                self.checkpoints.save(Checkpoint(done, last, self.range_offset, self.segments,
                                                 state, post))
                self.done_written = done


def tensor_outputs(plan: OutputPlan, src, fgr, pha, first: int) -> dict:
    """The model's tensors -> ``{key: uint8 array}`` for each of ``plan.keys`` (converted
    on the model's device; "yuv" keys as 4:2:0 planes). ``src``/``fgr`` (T,3,H,W), ``pha``
    (T,1,H,W); ``first``: output index of the chunk's first frame (for the background)."""
    import torch

    from ..io.compose import composite, to_uint8
    from ..io.yuv import gray_to_yuv420, rgb_to_yuv420

    out = {}
    for key in plan.keys.values():
        ch, kind = key.split(":")
        if ch == "yuv":  # converted here, on the device; 4:2:0 planes come back
            if kind == "alpha":
                y = gray_to_yuv420(pha[:, 0])
            elif kind == "foreground":
                y = rgb_to_yuv420(fgr)
            else:
                y = rgb_to_yuv420(composite(fgr, pha, plan.background.get(src, first)))
            out[key] = y.cpu().numpy()
        elif kind == "alpha":
            if plan.alpha_bits == 16:
                a = pha[:, 0].float().mul(65535.0).add_(0.5).clamp_(0, 65535).to(torch.int32)
                out[key] = a.cpu().numpy().astype(np.uint16)
            else:
                out[key] = to_uint8(pha[:, 0]).cpu().numpy()
        else:
            if ch == "rgba":
                x = torch.cat([fgr, pha], 1)
            else:
                x = fgr if kind == "foreground" else composite(fgr, pha,
                                                               plan.background.get(src, first))
            inplace = ch == "rgba" or kind == "composite"
            out[key] = to_uint8(x, inplace=inplace).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return out
