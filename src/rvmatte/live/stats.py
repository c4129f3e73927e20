"""What a live run measures: :class:`LiveStats`, the status line, and :class:`RatioController`
(the downsample ratio chosen from the model stage's own times)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

RATIO_STEP = 0.75


class RatioController:
    """Chooses the downsample ratio from the model's measured time per frame.

    Measures over windows of ``window`` frames. A window slower than ``target_fps`` by more
    than 10 % lowers the ratio by ``RATIO_STEP`` (not below ``min_ratio``); one faster than
    1.6x the target raises it back towards ``max_ratio``. Changes are at least ``cooldown``
    frames apart, so each ratio is measured before the next decision. The times given to
    :meth:`update` are the model stage's alone: a slow encoder or window is not a reason to
    matte at a coarser size (the pipeline drops frames for those instead).
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
        """Record one frame's model time; return the new ratio when it changes."""
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
    """A live run: ``frames`` written (shown) in ``seconds`` of wall time (from the start of
    the capture, model and output threads to the output closed; the model's start-up,
    ``startup_s``, comes before), so ``fps`` is what the viewer or the file got. Per stage: busy seconds (``capture_s``: reading
    and decoding, waiting for a camera included; ``model_s``: matting and compositing;
    ``output_s``: encoding or showing) and frames through it. ``dropped``: frames read but not
    written (real-time sources or outputs only; file to file writes every frame)."""

    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    ratio: float = 1.0
    ratio_changes: list = field(default_factory=list)
    state_resets: int = 0  # times the recurrent state started afresh (1 + ratio changes)
    stopped_by_user: bool = False
    adapt: bool = False    # the ratio followed the model's speed
    fused: bool = False    # the fused CPU path (uint8 in, uint8 out) made the frames
    form: str = ""         # what the output was given: "rgb", "rgba" or "yuv" (4:2:0 planes)
    frames_read: int = 0
    frames_matted: int = 0
    dropped: int = 0
    capture_s: float = 0.0
    model_s: float = 0.0
    output_s: float = 0.0
    startup_s: float = 0.0

    @property
    def capture_ms(self) -> float:
        """Mean capture time per frame read, in milliseconds."""
        return 1000 * self.capture_s / max(1, self.frames_read)

    @property
    def model_ms(self) -> float:
        """Mean model time per frame matted, in milliseconds."""
        return 1000 * self.model_s / max(1, self.frames_matted)

    @property
    def output_ms(self) -> float:
        """Mean output time per frame written, in milliseconds."""
        return 1000 * self.output_s / max(1, self.frames)

    def summary(self) -> str:
        """The closing line: frames, wall time, FPS, ratio, per-stage times, drops."""
        changes = ", ".join(f"{a:g}->{b:g}" for a, b in self.ratio_changes)
        line = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"ratio {self.ratio:g}" + (f" (changed {changes})" if changes else ""))
        line += "; " + stage_times(self.capture_ms, self.model_ms, self.output_ms)
        if self.dropped:
            line += f"; {self.dropped} dropped"
        return line


def stage_times(capture_ms: float, model_ms: float, output_ms: float) -> str:
    return f"capture {capture_ms:.0f} ms, model {model_ms:.0f} ms, output {output_ms:.0f} ms"


def status_line(fps: float, ratio: float, capture_ms: float, model_ms: float,
                output_ms: float, dropped: int = 0) -> str:
    """The running status: frames written per second of wall time, the ratio, the stages'
    milliseconds per frame and the frames dropped so far."""
    line = f"{fps:.1f} fps  ratio {ratio:g}  " + stage_times(capture_ms, model_ms, output_ms)
    return line + (f"  dropped {dropped}" if dropped else "")
