"""The live pipeline: capture, model and output on their own threads, one frame between each.

::

    capture thread:  LiveSource.frames() -> (index, pts, RGB frame)                --slot-->
    model thread:    Matter -> the frame as the sink takes it: the fused kernel's
                     composite (RGB, RGBA or the encoder's 4:2:0 planes), else
                     Matter.process + io.compose.composite_frames                 --slot-->
    output (the caller's thread): Sink.write, the status line

Each :class:`Slot` holds one frame. Where frames come or go in real time (a camera or stream
source; a window or virtual camera) a new frame replaces one not yet taken, which is counted
as dropped: no stage waits for a slower one, and each adds at most one frame of latency. File
to file a full slot makes its producer wait, so every frame is written at the pace of the
slowest stage. The output stage runs on the caller's thread: a window's toolkit wants one
thread (on macOS the main one), and Ctrl-C arrives there.

The ratio adapts (:class:`~rvmatte.live.stats.RatioController`) to the model stage's own time
per frame, never to the encoder's or the window's.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from ..io.compose import ColorBackground, composite_frames
from .stats import LiveStats, RatioController, status_line

_EMPTY = object()
STATUS_SECONDS = 1.0  # how often the status line is refreshed


class Slot:
    """A one-frame queue between two stages. ``drop``: :meth:`put` replaces a frame not yet
    taken (counted in :attr:`dropped`); else it waits until the frame is taken. Every wait
    gives up when ``stop`` is set."""

    def __init__(self, drop: bool, stop: threading.Event) -> None:
        self.drop, self.stop = drop, stop
        self.dropped = 0
        self._item: Any = _EMPTY
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        """Hand ``item`` on; False when the pipeline stopped."""
        with self._cond:
            if self.drop:
                if self._item is not _EMPTY:
                    self.dropped += 1
            else:
                while self._item is not _EMPTY and not self.stop.is_set():
                    self._cond.wait(0.1)
            if self.stop.is_set():
                return False
            self._item = item
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """No more items: :meth:`get` returns None once the last one is taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self) -> Any:
        """The next item; None at the end or when the pipeline stopped."""
        with self._cond:
            while self._item is _EMPTY and not self._closed and not self.stop.is_set():
                self._cond.wait(0.1)
            if self.stop.is_set() or self._item is _EMPTY:
                return None
            item, self._item = self._item, _EMPTY
            self._cond.notify_all()
            return item


class LivePipeline:
    """One live run of ``matter`` over ``source`` (an opened
    :class:`~rvmatte.live.sources.LiveSource`) into ``sink``.

    ``background``: an :class:`~rvmatte.io.compose.Background` or None (transparent).
    ``ratio``: the downsample ratio (None: auto for the frame size). ``adapt``: follow the
    model's speed towards ``target_fps`` (default the source's rate). ``realtime_in`` /
    ``realtime_out``: drop rather than wait between capture and model / model and output.
    Call :meth:`prepare` (optional: builds the model's runner before the clock starts), then
    :meth:`run` once.
    """

    def __init__(self, matter: Any, source: Any, sink: Any, background: Any, *,
                 ratio: Optional[float], adapt: bool, target_fps: Optional[float],
                 min_ratio: float, max_frames: Optional[int],
                 status: Optional[Callable[[str], None]], realtime_in: bool,
                 realtime_out: bool, audio: Any = None, post: Optional[dict] = None,
                 select: Any = None) -> None:
        self.matter, self.source, self.sink, self.bg = matter, source, sink, background
        # the post stage: {name: processor} of the quality options, and who is matted (a
        # rvmatte.post.people.Selection, applied from its frame on: a stream cannot look
        # ahead); made into one chain when the frame size is known
        self._quality, self.select = dict(post or {}), select
        self.post: Any = None  # the rvmatte.post.PostChain in use, or None
        self.fixed_ratio, self.adapt, self.target_fps = ratio, adapt, target_fps
        self.min_ratio, self.max_frames, self.status = min_ratio, max_frames, status
        self.audio = audio
        self.stop = threading.Event()
        self.slot_in = Slot(realtime_in, self.stop)
        self.slot_out = Slot(realtime_out, self.stop)
        self.live_source = realtime_in
        self.stats = LiveStats(adapt=adapt)
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        # decided at the first frame (or by prepare): ratio control, what the model makes
        self.controller: Optional[RatioController] = None
        self.size: Optional[tuple[int, int]] = None   # (width, height)
        self.form = "rgb"
        self.state = None            # the fused path's recurrent state (process keeps its own)
        self._first_at_ratio = True
        self.pts_base: Optional[int] = None  # subtracted from a real-time source's timestamps
        self.exhausted = False       # the source was read to its end
        self.opened = False          # the sink is open
        self.started = False         # run() was called: it closes the source
        self.overlay = ""

    # ---- set-up -------------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = e
        self.stop.set()

    def _uint8_background(self) -> Optional[tuple]:
        """The fused kernel's background (r, g, b in [0, 1]); None where it cannot make this
        background (an image, a video, blur). Transparent: (0, 0, 0), unused."""
        if self.bg is None:
            return (0.0, 0.0, 0.0)
        if isinstance(self.bg, ColorBackground):
            return tuple(c / 255.0 for c in self.bg.rgb)
        return None

    def _start(self, width: int, height: int) -> None:
        """The frame size is known: the ratio, the control, and the form of the output."""
        from ..downsample import auto_downsample_ratio

        ratio = self.fixed_ratio or auto_downsample_ratio(height, width)
        target = self.target_fps or self.source.fps or 30.0
        self.controller = RatioController(ratio, target if self.adapt else None,
                                          min_ratio=self.min_ratio)
        self.matter.set_downsample_ratio(ratio)
        self.state = None
        self.stats.state_resets += 1
        self.size = (width, height)
        self.post = self._post_chain(width, height)
        fused = self._fused(ratio)
        if self.bg is None:
            self.form = "rgba"
        elif fused and self.sink.yuv_ok(width, height):
            self.form = "yuv"  # the kernel writes the encoder's planes: no RGB -> YUV pass
        else:
            self.form = "rgb"

    def _fused(self, ratio: float) -> bool:
        return self._uint8_background() is not None and self.matter.uint8_path(ratio)

    def prepare(self, width: int, height: int) -> None:
        """Decide the start for frames of this size and matte one black frame, so the first
        real frame does not pay for building the model's runner (then forget its state)."""
        self._start(width, height)
        post, self.post = self.post, None  # the black frame is not the stream's past
        self._matte(0, np.zeros((height, width, 3), np.uint8))
        self.post = post
        self.matter.reset()
        self.state = None

    def _post_chain(self, width: int, height: int):
        """The post stage for frames of this size: the person selection, then the quality
        processors (as in file conversion); None when there is nothing to do."""
        procs: dict = {}
        if self.select is not None:
            from ..post.people import PeopleFilter

            procs["people"] = PeopleFilter(self.select, width, height)
        for p in self._quality.values():
            p.reset()
        procs.update(self._quality)
        if not procs:
            return None
        from ..post import PostChain

        return PostChain(procs)

    # ---- model stage --------------------------------------------------------------------
    _KERNEL_OUTPUT = {"rgb": "composite", "rgba": "rgba", "yuv": "composite_yuv"}

    def _matte(self, index: int, frame: np.ndarray) -> np.ndarray:
        """One RGB uint8 (H, W, 3) frame -> the output frame in :attr:`form`."""
        ratio = self.controller.ratio
        if self._fused(ratio):
            name = self._KERNEL_OUTPUT[self.form]
            made, self.state = self.matter.matte_uint8(frame[None], self.state, ratio,
                                                       outputs=[name],
                                                       background=self._uint8_background(),
                                                       post=self.post)
            self.stats.fused = True
            return made[name][0]
        out = self.matter.process(frame)
        if self.post is not None:
            self.post(frame[None], out.pha, out.fgr)
        return composite_frames(frame[None], out.fgr, out.pha, self.bg, index)[0]

    def _adapt(self, seconds: float) -> None:
        """Give the controller this frame's model time; a new ratio starts a new state (its
        size follows the working resolution). A ratio's first frame builds what the ratio
        needs (an exported graph, a CUDA graph): its time is not counted."""
        new = self.controller.update(seconds) if not self._first_at_ratio else None
        self._first_at_ratio = False
        if new is not None:
            self.matter.set_downsample_ratio(new)
            self.state = None
            self.stats.state_resets += 1
            self._first_at_ratio = True

    def _model(self) -> None:
        stats = self.stats
        try:
            while True:
                item = self.slot_in.get()
                if item is None:
                    return
                index, pts, frame = item
                if self.controller is None:
                    self._start(frame.shape[1], frame.shape[0])
                t = time.perf_counter()
                image = self._matte(index, frame)
                seconds = time.perf_counter() - t
                stats.model_s += seconds
                stats.frames_matted += 1
                ratio = self.controller.ratio
                self._adapt(seconds)
                if not self.slot_out.put((index, pts, image, ratio)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._fail(e)
        finally:
            self.slot_out.close()

    # ---- capture stage ------------------------------------------------------------------
    def _capture(self) -> None:
        stats, frames = self.stats, None
        try:
            frames = self.source.frames()
            t = time.perf_counter()
            for index, (pts, image) in enumerate(frames):
                if self.stop.is_set():
                    return
                if self.max_frames is not None and index >= self.max_frames:
                    return
                if self.pts_base is None:
                    self.pts_base = pts if self.live_source else 0
                stats.capture_s += time.perf_counter() - t
                stats.frames_read += 1
                if not self.slot_in.put((index, pts - self.pts_base, image)):
                    return
                t = time.perf_counter()
            self.exhausted = True
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._fail(e)
        finally:
            if frames is not None:
                frames.close()
            self.slot_in.close()

    # ---- output stage (the caller's thread) ---------------------------------------------
    def _output(self, t_start: float) -> None:
        stats, sink = self.stats, self.sink
        status = _StatusClock(t_start)
        opened = False
        while True:
            item = self.slot_out.get()
            if item is None:
                return
            index, pts, image, ratio = item
            t = time.perf_counter()
            if not opened:
                width, height = self.size
                sink.open(width, height, rate=self.source.rate, time_base=self.source.time_base,
                          start_pts=pts, form=self.form, audio=self.audio)
                self.opened = opened = True
            keep_going = sink.write(image, self.overlay, pts)
            stats.output_s += time.perf_counter() - t
            stats.frames += 1
            if status.due():
                self.overlay = status.line(stats, ratio, self.slot_in.dropped
                                           + self.slot_out.dropped)
                if self.status is not None:
                    self.status(self.overlay)
            if not keep_going:
                stats.stopped_by_user = True
                self.stop.set()
                return

    # ---- the whole run ------------------------------------------------------------------
    def run(self) -> LiveStats:
        """Run to the source's end, ``max_frames``, the window closed or Ctrl-C; raises the
        first error of any stage."""
        self.started = True
        workers = [threading.Thread(target=self._capture, name="rvmatte-live-capture",
                                    daemon=True),
                   threading.Thread(target=self._model, name="rvmatte-live-model", daemon=True)]
        t_start = time.perf_counter()
        for w in workers:
            w.start()
        try:
            self._output(t_start)
        except KeyboardInterrupt:
            self.stats.stopped_by_user = True
        except BaseException as e:  # noqa: BLE001 - the sink failed: stop the others
            self._fail(e)
        finally:
            if self.error is not None or self.stats.stopped_by_user:
                self.stop.set()
            workers[1].join()
            workers[0].join(5)  # a camera read may block: it is a daemon thread
        self._finish(workers[0].is_alive())
        self.stats.seconds = time.perf_counter() - t_start
        self.stats.fps = self.stats.frames / max(self.stats.seconds, 1e-9)
        return self.stats

    def _finish(self, capture_stuck: bool) -> None:
        """Close (or, after an error, abort) the sink and the source; fill in the stats;
        raise the first error."""
        stats = self.stats
        if self.error is not None:
            self.sink.abort()  # also when open() failed half-way
            if not capture_stuck:
                self.source.close()
            raise self.error
        if not capture_stuck:
            self.source.close()
        if self.controller is not None:
            stats.ratio = self.controller.ratio
            stats.ratio_changes = list(self.controller.changes)
        stats.form = self.form
        stats.dropped = self.slot_in.dropped + self.slot_out.dropped
        if self.opened:
            complete = self.exhausted and not stats.stopped_by_user
            t = time.perf_counter()
            self.sink.close(complete=complete)
            stats.output_s += time.perf_counter() - t


class _StatusClock:
    """The status line's figures over the last :data:`STATUS_SECONDS`: frames written per
    second of wall time, and each stage's milliseconds per frame."""

    def __init__(self, t_start: float) -> None:
        self.last_t = t_start
        self.last = (0, 0.0, 0, 0.0, 0, 0.0)

    def due(self) -> bool:
        return time.perf_counter() - self.last_t >= STATUS_SECONDS

    def line(self, s: LiveStats, ratio: float, dropped: int) -> str:
        now = time.perf_counter()
        cur = (s.frames_read, s.capture_s, s.frames_matted, s.model_s, s.frames, s.output_s)
        d = [a - b for a, b in zip(cur, self.last)]
        fps = d[4] / max(now - self.last_t, 1e-9)
        self.last_t, self.last = now, cur

        def ms(n: int, sec: float) -> float:
            return 1000 * sec / n if n else 0.0

        return status_line(fps, ratio, ms(d[0], d[1]), ms(d[2], d[3]), ms(d[4], d[5]), dropped)
