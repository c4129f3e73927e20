"""Live matting (``rvmatte live``): camera, file or stream in; window, virtual camera or file out.

One :class:`~rvmatte.inference.session.Matter`, built from a :class:`~rvmatte.spec.ModelSpec`,
carries the recurrent state from frame to frame; frames are composited by the one compositor,
:mod:`rvmatte.io.compose`. When frames take longer than the source's frame interval,
:class:`RatioController` lowers the downsample ratio (and raises it again when there is
headroom); the state is reset at such a change, because its size follows the working
resolution.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import InputError
from ..hardware import set_threads
from ..io.compose import composite_frames, load_background
from ..spec import UNSET, ModelSpec

__all__ = ["run_live", "LiveStats", "RatioController"]

RATIO_STEP = 0.75


class RatioController:
    """Chooses the downsample ratio from measured frame times.

    Measures over windows of ``window`` frames. A window slower than ``target_fps`` by more
    than 10 % lowers the ratio by ``RATIO_STEP`` (not below ``min_ratio``); one faster than
    1.6x the target raises it back towards ``max_ratio``. Changes are at least ``cooldown``
    frames apart, so each ratio is measured before the next decision.
    """

    def __init__(self, ratio: float, target_fps: Optional[float], *, min_ratio: float = 0.1,
                 max_ratio: Optional[float] = None, window: int = 8, cooldown: int = 8) -> None:
        self.ratio = ratio
        self.target_fps = target_fps
        self.min_ratio = min(min_ratio, ratio)
        self.max_ratio = ratio if max_ratio is None else max_ratio
        self.window, self.cooldown = window, cooldown
        self._times: list[float] = []
        self._since_change = 0
        self.changes: list[tuple[float, float]] = []  # (old, new)

    def update(self, seconds: float) -> Optional[float]:
        """Record one frame's processing time; return the new ratio when it changes."""
        self._since_change += 1
        if not self.target_fps:
            return None
        self._times.append(seconds)
        if len(self._times) < self.window or self._since_change < self.cooldown:
            return None
        fps = len(self._times) / max(sum(self._times), 1e-9)
        self._times.clear()
        new = self.ratio
        if fps < 0.9 * self.target_fps and self.ratio > self.min_ratio:
            new = max(self.min_ratio, round(self.ratio * RATIO_STEP, 4))
        elif fps > 1.6 * self.target_fps and self.ratio < self.max_ratio:
            new = min(self.max_ratio, round(self.ratio / RATIO_STEP, 4))
        if new == self.ratio:
            return None
        self.changes.append((self.ratio, new))
        self.ratio, self._since_change = new, 0
        return new


@dataclass
class LiveStats:
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    ratio: float = 1.0
    ratio_changes: list = field(default_factory=list)
    state_resets: int = 0  # times the recurrent state started afresh (1 + ratio changes)
    stopped_by_user: bool = False


def run_live(source: str, output: str, *, spec: Optional[ModelSpec] = None,
             background: Optional[str] = None, target_fps: Optional[float] = None,
             adapt: bool = True, min_ratio: float = 0.1, max_frames: Optional[int] = None,
             model: Any = None, overwrite: bool = False,
             status: Optional[Callable[[str], None]] = None, downsample_ratio: Any = UNSET,
             variant: Any = UNSET, weights: Any = UNSET, device: Any = UNSET,
             dtype: Any = UNSET) -> LiveStats:
    """Matte ``source`` frame by frame into ``output`` until it ends, ``max_frames`` is
    reached, the window is closed or Ctrl-C.

    ``source``: camera index (``"0"``), video file or URL. ``output``: ``"window"``,
    ``"virtualcam"`` or a file path (.mp4/.mkv/.mov/.webm). ``spec``: the model, used for
    the one :class:`~rvmatte.inference.session.Matter` of the stream (``spec.downsample`` is
    the starting ratio; default: the :class:`~rvmatte.spec.ModelSpec` defaults, backend
    ``auto``); ``model``: an already loaded network for it. ``background`` as in convert
    (default green; ``transparent`` only into .webm). ``target_fps``: the rate to keep up
    with (default: the source's rate); with ``adapt`` the ratio is lowered to keep up.
    ``status``: called about once a second with a line like ``"24.3 fps, ratio 0.25"``.
    ``downsample_ratio``, ``variant``, ``weights``, ``device``, ``dtype``: the older keywords,
    folded into ``spec``.
    """
    from .sinks import make_sink
    from .sources import parse_source

    # Cheap checks first: a bad option fails before a model (or torch) is loaded.
    spec = ModelSpec.of(spec, downsample_ratio=downsample_ratio, variant=variant,
                        weights=weights, device=device, dtype=dtype)
    if max_frames is not None and max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if not 0 < min_ratio <= 1:
        raise InputError(f"bad minimum ratio {min_ratio}: must be in (0, 1]")
    where = parse_source(source)
    sink = make_sink(output, overwrite=overwrite)
    bg = load_background(background)
    if bg is None and not sink.alpha_ok:
        raise InputError("a transparent background needs an output that keeps alpha "
                         "(a .webm file); use a colour, an image or blur here")
    if spec.threads is not None:
        set_threads(spec.threads)

    from ..inference.session import Matter

    # One session for the whole stream, on the spec's path (backend "auto": CUDA graphs on
    # NVIDIA GPUs, ONNX Runtime + the fused kernel on CPUs); a ratio change only restarts
    # its state.
    matter = Matter(spec, model=model)
    loop = _Loop(matter, sink, bg, spec.downsample, target_fps=target_fps, adapt=adapt,
                 min_ratio=min_ratio, max_frames=max_frames, status=status)
    return loop.run(where, source)


class _Loop:
    """The frame loop of :func:`run_live`: read, matte, composite, show; adapt the ratio."""

    def __init__(self, matter: Any, sink: Any, bg: Any, ratio: Optional[float], *,
                 target_fps: Optional[float], adapt: bool, min_ratio: float,
                 max_frames: Optional[int], status: Optional[Callable[[str], None]]) -> None:
        self.matter, self.sink, self.bg, self.fixed_ratio = matter, sink, bg, ratio
        self.target_fps, self.adapt, self.min_ratio = target_fps, adapt, min_ratio
        self.max_frames, self.status = max_frames, status
        self.stats = LiveStats()
        self.controller: Optional[RatioController] = None
        self.opened = False

    def run(self, where: Any, source: str) -> LiveStats:
        from .sources import LiveSource

        src = LiveSource(where).open()
        try:
            self._frames(src, src.fps)
            if self.stats.frames == 0:
                raise InputError(f"no frames could be read from {source}")
        except KeyboardInterrupt:
            self.stats.stopped_by_user = True
        except BaseException:
            if self.opened:
                self.sink.abort()
            raise
        finally:
            src.close()
        if self.controller is not None:
            self.stats.ratio = self.controller.ratio
            self.stats.ratio_changes = list(self.controller.changes)
        if self.opened:
            self.sink.close()
        return self.stats

    def _start(self, frame, source_fps: Optional[float]) -> None:
        """First frame: the size is known now."""
        from ..downsample import auto_downsample_ratio

        h, w = frame.shape[:2]
        target = self.target_fps or source_fps or 30.0
        ratio = self.fixed_ratio or auto_downsample_ratio(h, w)
        self.controller = RatioController(ratio, target if self.adapt else None,
                                          min_ratio=self.min_ratio)
        self.matter.set_downsample_ratio(ratio)
        self.stats.state_resets += 1
        self.sink.open(w, h, source_fps or target)
        self.opened = True

    def _frames(self, src: Any, source_fps: Optional[float]) -> None:
        stats = self.stats
        first_at_ratio = True
        t_start = last_status = time.monotonic()
        fps_ema = None
        for index, frame in enumerate(src.frames()):
            if self.max_frames is not None and index >= self.max_frames:
                break
            t0 = time.monotonic()
            if self.controller is None:
                self._start(frame, source_fps)
            out = self.matter.process(frame)
            image = composite_frames(frame[None], out.fgr, out.pha, self.bg, index)[0]
            dt = max(time.monotonic() - t0, 1e-6)
            fps_ema = 1 / dt if fps_ema is None else 0.9 * fps_ema + 0.1 / dt
            overlay = f"{fps_ema:.1f} fps  ratio {self.controller.ratio:g}"
            keep_going = self.sink.write(image, overlay)
            stats.frames += 1
            # The first frame at a ratio builds what that ratio needs (an exported graph, a
            # CUDA graph capture): its time says nothing about the speed, so it is not counted.
            new_ratio = (self.controller.update(time.monotonic() - t0)
                         if not first_at_ratio else None)
            first_at_ratio = False
            if new_ratio is not None:  # the state's size follows the ratio: start it afresh
                self.matter.set_downsample_ratio(new_ratio)
                stats.state_resets += 1
                first_at_ratio = True
            if self.status is not None and time.monotonic() - last_status >= 1.0:
                last_status = time.monotonic()
                self.status(overlay)
            if not keep_going:
                stats.stopped_by_user = True
                break
        stats.seconds = time.monotonic() - t_start
        stats.fps = stats.frames / max(stats.seconds, 1e-9)


def print_status(line: str) -> None:
    print(f"\rlive: {line}   ", end="", file=sys.stderr, flush=True)
