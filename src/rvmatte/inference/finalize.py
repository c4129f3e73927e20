"""The last stage of a conversion: audio, assembly, atomic rename, and the result.

When every frame is written, each video output's segments are remuxed with the input's
audio (the part the range covers) into a temporary file next to the output, which is then
renamed into place; PNG frames and images move from the checkpoint folder to their targets.
Until then nothing at an output's path looks complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..io.readers import FrameRange, SourceInfo
from ..io.writers import AudioPlan, assemble, move_images, replace_into_place


@dataclass
class ConversionResult:
    frames: int                    # frames in the outputs (resumed ones included)
    seconds: float                 # wall time of this run
    fps: float                     # frames converted per second in this run
    outputs: dict = field(default_factory=dict)   # kind -> path
    audio: Optional[str] = None    # "copy", "aac", "opus" or None (no audio carried)
    resumed_from: int = 0          # frame index this run started at (0 = from scratch)
    downsample_ratio: float = 1.0
    input: Optional[str] = None
    encoders: dict = field(default_factory=dict)  # kind -> libavcodec encoder (video outputs)
    notes: list = field(default_factory=list)     # e.g. why hardware encoding was not used
    encoding: dict = field(default_factory=dict)  # segment_frames, workers, threads (video)
    stages: dict = field(default_factory=dict)    # seconds per stage (pipeline._Stages)
    frames_declared: Optional[int] = None  # frames in the range as the container declares
    warnings: list = field(default_factory=list)  # e.g. fewer frames decoded than declared

    @property
    def frames_this_run(self) -> int:
        """Frames converted by this run (a resumed job reuses ``resumed_from`` frames)."""
        return self.frames - self.resumed_from

    @property
    def bottleneck(self) -> Optional[str]:
        """The pipeline stage that bounded this run's speed: ``"decode"``, ``"model"``,
        ``"finish"`` (the uint8 path's full-resolution outputs and post stage) or ``"encode"``
        (the one busy for the largest share of the run), None if not timed."""
        busy = {k: self.stages.get(f"{k}_s", 0.0)
                for k in ("decode", "model", "finish", "encode")}
        return max(busy, key=busy.get) if any(busy.values()) else None

    def as_dict(self) -> dict:
        return {"input": self.input, "frames": self.frames,
                "frames_this_run": self.frames_this_run, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 3), "outputs": {k: str(v) for k, v in self.outputs.items()},
                "audio": self.audio, "resumed_from": self.resumed_from,
                "downsample_ratio": self.downsample_ratio, "encoders": dict(self.encoders),
                "notes": list(self.notes), "warnings": list(self.warnings),
                "frames_declared": self.frames_declared, "encoding": dict(self.encoding),
                "stages": {k: round(v, 3) for k, v in self.stages.items()},
                "bottleneck": self.bottleneck}


# ---- audio ----------------------------------------------------------------------------------

def audio_plan(info: SourceInfo, rng: FrameRange, *, range_offset: Optional[int],
               last_pts: Optional[int]) -> Optional[AudioPlan]:
    """The input's audio that goes with the converted frames (None: no audio to carry).

    ``range_offset``: input timestamp of the range's first frame (subtracted from the
    outputs' timestamps; 0/None from the start); ``last_pts``: the last frame's. A range in
    seconds keeps the audio of those seconds (from the stream's start); a range in frames
    keeps it from the first frame to the end of the last one.
    """
    if info.audio is None or info.kind != "video":
        return None
    tb, rate = info.time_base, info.rate
    off = float(range_offset * tb) if range_offset else 0.0
    a_start = a_end = None
    if not rng.empty:
        if rng.unit == "s":
            a_start = (info.start_pts * tb) + rng.start if rng.start else None
            a_end = float(info.start_pts * tb) + rng.end if rng.end is not None else None
            a_start = float(a_start) if a_start is not None else None
        else:
            a_start = off if rng.start else None
            if rng.end is not None and last_pts is not None:
                a_end = float(last_pts * tb) + 1.0 / float(rate)
    return AudioPlan(info.path, info.audio["index"], a_start, a_end, off)


# ---- frames the container promised ------------------------------------------------------------

def shortfall(info: SourceInfo, rng: FrameRange, declared: Optional[int], done: int, *,
              first_pts: Optional[int], last_pts: Optional[int]) -> Optional[str]:
    """A warning line when far fewer frames decoded than the container declares for the
    range (a truncated file whose index survived), else None.

    A container's count can be an estimate (duration x average rate, for Matroska or a range
    in seconds), so a shortfall counts only beyond 2 % (at least one frame) and, for videos,
    only when the decoded frames (``first_pts`` .. ``last_pts``) also stop short of the
    declared end by more than two of their own average frame intervals (VFR content keeps
    its last frame on screen longer than the nominal rate says)."""
    if declared is None or done >= declared - max(1, round(0.02 * declared)):
        return None
    if info.kind == "video" and last_pts is not None and info.rate:
        end = _declared_end(info, rng, declared)
        tb, step = info.time_base, 1.0 / float(info.rate)
        first = float(((first_pts or info.start_pts) - info.start_pts) * tb)
        last = float((last_pts - info.start_pts) * tb)
        gap = (last - first) / (done - 1) if done > 1 else step
        if end - (last + gap) <= 2.0 * max(gap, step):
            return None  # the frames reach the declared end: the count was an estimate
    return f"only {done} of {declared} frames declared by the container could be decoded"


def _declared_end(info: SourceInfo, rng: FrameRange, declared: int) -> float:
    """Seconds from the stream's start to the end of the declared frames of the range."""
    rate = float(info.rate)
    if rng.unit == "f":
        return ((rng.start or 0) + declared) / rate
    dur = info.duration if info.duration is not None else (info.frames or 0) / rate
    return min(rng.end, dur) if rng.end is not None else dur


def check_frames(plan, done: int, *, first_pts: Optional[int], last_pts: Optional[int],
                 strict: bool) -> list:
    """The warnings of a finished run of ``plan`` (:class:`~rvmatte.inference.plan.OutputPlan`);
    with ``strict`` a shortfall is an :class:`~rvmatte.errors.InputError`."""
    line = shortfall(plan.info, plan.range, plan.expected_frames, done, first_pts=first_pts,
                     last_pts=last_pts)
    if line is None:
        return []
    if strict:
        raise InputError(f"{plan.info.path}: {line} (truncated file?)")
    return [line]


# ---- assembly -----------------------------------------------------------------------------

def assemble_outputs(specs, segments: dict, job_dir: Path, *, info: SourceInfo,
                     audio: Optional[AudioPlan]) -> tuple[dict, Optional[str]]:
    """Put every output in place: video segments (+ audio for all but the alpha) remuxed
    into a temporary file renamed over the output; PNG frames / images moved from
    ``job_dir``. Returns ``({kind: path}, how the composite's audio was carried)``."""
    outputs, audio_mode = {}, None
    for s in specs:
        if s.mode == "video":
            tmp = s.path.with_name(f".{s.path.stem}.rvmatte-tmp{s.path.suffix}")
            try:
                mode = assemble(s, segments[s.kind], tmp, time_base=info.time_base,
                                rate=info.rate, audio=audio if s.kind != "alpha" else None)
                if s.kind == "composite":
                    audio_mode = mode
                replace_into_place(tmp, s.path)
            finally:
                tmp.unlink(missing_ok=True)
        elif s.mode == "images":
            move_images(image_dir(job_dir, s.kind), s)
        else:
            replace_into_place(image_file(job_dir, s), s.path)
        outputs[s.kind] = str(s.path)
    return outputs, audio_mode


def image_dir(job_dir: Path, kind: str) -> Path:
    """Where an image-sequence output's frames are written until the job is done."""
    return job_dir / f"{kind}_frames"


def image_file(job_dir: Path, spec) -> Path:
    """Where a single-image output is written until the job is done."""
    return job_dir / f"{spec.kind}{spec.path.suffix.lower()}"
