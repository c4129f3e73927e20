"""One long video in parts: where the parts start, their warm-up, and the exact join.

The network is recurrent: frame *k*'s matte depends on every frame before it through the state
``(r1, r2, r3, r4)``. A part that starts at frame *s* cannot have the sequential run's state
there, so it starts ``W`` frames early (the warm-up) from a zero state, mattes those frames
without writing them, and writes frames *s* .. *e*. The error that remains at the seam falls
with ``W`` (measured in benchmarks/seam_error.py, docs/CLUSTER.md); where the warm-up would
reach back to the range's first frame it starts there, exactly as the sequential run does, and
the part equals the sequential run.

Parts are cut by the input's own timestamps (demuxed, not decoded) and converted as ranges in
seconds, so each worker seeks to its part instead of decoding the video from the start. Each
part is an ordinary video file whose timestamps start at 0; the join remuxes them, without
re-encoding, as the segments of the final output (:func:`rvmatte.io.writers.assemble`, through
:func:`rvmatte.inference.finalize.assemble_outputs`) with one audio track cut to the range.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError, OutputError, one_line
from ..inference.checkpoint import input_identity
from ..io.readers import FrameRange, SourceInfo, parse_range

# Warm-up frames before each part (the default of --warmup): the smallest length measured on
# real clips whose seam frames (a part's first, against the sequential run) stay within
# SEAM_BOUND -- mean |delta alpha| over the seams, 99th percentile at every seam
# (benchmarks/seam_error.py; the table, and the seams that miss it alone, in docs/CLUSTER.md).
DEFAULT_WARMUP = 120
SEAM_BOUND = {"mean": 5e-4, "p99": 2 / 255}
PARTS_SUFFIX = ".rvmatte-parts"


def seam_note(warmup: int) -> str:
    """One line: the warm-up and the seam error bound it was chosen for."""
    bound = (f"seam error vs the sequential run within mean |d alpha| {SEAM_BOUND['mean']:.0e}"
             f" and p99 {SEAM_BOUND['p99'] * 255:.0f}/255 as measured on real clips")
    if warmup >= DEFAULT_WARMUP:
        return f"warm-up {warmup} frames per part: {bound} (docs/CLUSTER.md)"
    return (f"warm-up {warmup} frames per part, below the default {DEFAULT_WARMUP} chosen for "
            f"a {bound}: expect larger seam errors (docs/CLUSTER.md)")


@dataclass
class Part:
    """One part of a split video.

    index / count: which part of how many. first / stop: frame indices of the input (its
    whole timeline, in presentation order) of the first kept frame and one past the last.
    start / end: the kept frames as a range in seconds (``None``: from the video's first
    frame / to its end). warm_start: the warm-up's start in seconds (``None``: the video's
    first frame); warm_frames: frames matted before ``first`` and dropped (0: none).
    offset: the timestamp subtracted from this part's outputs (its first frame's, or 0 when
    it starts at the video's first frame); outputs: ``[(kind, path), ...]``.
    """

    index: int
    count: int
    first: int
    stop: int
    start: Optional[float]
    end: Optional[float]
    warm_start: Optional[float]
    warm_frames: int
    offset: int
    outputs: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.stop - self.first


@dataclass
class SplitPlan:
    """How one video is split: its parts, the warm-up, and what the join needs.

    range_offset: the timestamp subtracted from the joined outputs (as a sequential run
    subtracts it: the range's first frame's when the caller gave a start, else 0).
    last_pts: the input timestamp of the range's last frame. frames: frames in the range.
    """

    input: str
    parts: list
    warmup: int
    range_offset: int
    last_pts: int
    frames: int
    parts_dir: str

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SplitPlan":
        d = dict(d)
        d["parts"] = [Part(**p) for p in d["parts"]]
        return cls(**d)


def parts_dir_for(first_output: Path) -> Path:
    """Where the parts of a split job live until they are joined (next to the output)."""
    return Path(str(first_output).replace("%", "_") + PARTS_SUFFIX)


def frame_timestamps(info: SourceInfo) -> list:
    """Presentation timestamps of every frame of the video, in order (demuxed, not decoded:
    an hour of video takes about a second)."""
    import av

    try:
        with av.open(str(info.path), "r") as c:
            vs = c.streams.video[0]
            pts = [p.pts for p in c.demux(vs) if p.size]
    except av.error.FFmpegError as e:
        raise InputError(f"cannot read {info.path}: {one_line(e)}") from None
    if not pts or any(p is None for p in pts):
        raise InputError(f"{info.path}: frames without timestamps cannot be split; convert "
                         "it without --split")
    return sorted(pts)


def _selected(times: list, rng: FrameRange) -> tuple[int, int]:
    """Indices ``[a, b)`` of the frames a run with ``rng`` converts (as
    :class:`rvmatte.io.readers.Source` selects them: frame numbers, or seconds from the
    stream's start with the same 1e-6 s tolerance)."""
    n = len(times)
    if rng.unit == "f":
        a = int(rng.start or 0)
        b = n if rng.end is None else min(n, int(rng.end))
        return min(a, n), max(min(a, n), b)
    a = 0 if rng.start is None else next((i for i, t in enumerate(times)
                                          if t >= rng.start - 1e-6), n)
    b = n if rng.end is None else next((i for i, t in enumerate(times)
                                        if t >= rng.end - 1e-6), n)
    return a, max(a, b)


def _boundaries(times: list, a: int, b: int, *, count: Optional[int],
                seconds: Optional[float]) -> list:
    """First frame index of each part (ascending, starting with ``a``)."""
    if seconds is not None:
        if seconds <= 0:
            raise InputError(f"invalid split length {seconds!r}: must be positive seconds")
        starts, t0, k = [a], times[a], 1
        for i in range(a + 1, b):
            if times[i] >= t0 + k * seconds - 1e-6:
                starts.append(i)
                while times[i] >= t0 + k * seconds - 1e-6:
                    k += 1
        return starts
    if count is None or isinstance(count, bool) or int(count) < 1:
        raise InputError(f"invalid number of parts {count!r}: must be a positive integer")
    n = min(int(count), b - a)
    return sorted({a + (i * (b - a)) // n for i in range(n)})


def plan_split(info: SourceInfo, outputs: list, *, start=None, end=None,
               count: Optional[int] = None, seconds: Optional[float] = None,
               warmup: int = DEFAULT_WARMUP) -> SplitPlan:
    """Parts of ``info``'s video for ``count`` parts or parts of ``seconds`` each, over the
    range ``start`` / ``end`` (as ``convert_video`` takes them), each with ``warmup`` frames
    of warm-up. ``outputs``: ``[(kind, final path), ...]`` (video files only)."""
    if info.kind != "video":
        raise InputError(f"{info.path}: only video files can be split (an image sequence "
                         "has no recurrent state worth splitting for: convert it whole)")
    if isinstance(warmup, bool) or int(warmup) < 0:
        raise InputError(f"invalid warm-up {warmup!r}: must be 0 or more frames")
    warmup = int(warmup)
    rng = parse_range(start, end)
    pts = frame_timestamps(info)
    tb, s0 = info.time_base, info.start_pts
    times = [float((p - s0) * tb) for p in pts]
    a, b = _selected(times, rng)
    if b <= a:
        raise InputError(f"{info.path}: the selected range contains no frames")
    pdir = parts_dir_for(Path(outputs[0][1]))
    starts = _boundaries(times, a, b, count=count, seconds=seconds)
    stops = starts[1:] + [b]
    # A start at 0 is no start (convert_video subtracts no offset then, nor cuts the audio).
    user_start = bool(rng.start)
    parts = []
    for i, (f, g) in enumerate(zip(starts, stops)):
        w0 = max(a, f - warmup)
        start_ = None if (f == a and not user_start) else times[f]
        warm_start = None if (w0 == a and not user_start) else times[w0]
        parts.append(Part(
            index=i, count=len(starts), first=f, stop=g, start=start_,
            end=times[g] if g < len(times) else None, warm_start=warm_start,
            warm_frames=f - w0, offset=0 if start_ is None else pts[f],
            outputs=[(k, str(pdir / f"{k}_{i:04d}_of_{len(starts):04d}{Path(p).suffix}"))
                     for k, p in outputs]))
    return SplitPlan(input=str(info.path), parts=parts, warmup=warmup,
                     range_offset=pts[a] if user_start else 0, last_pts=pts[b - 1],
                     frames=b - a, parts_dir=str(pdir))


# ---- the parts folder -------------------------------------------------------------------------

def plan_identity(info: SourceInfo, plan: SplitPlan, options: dict, spec_fingerprint) -> dict:
    """What the parts in a parts folder were made from: the input file, the parts, the
    conversion's options and model. Parts made from anything else are not reused."""
    return {"input": input_identity(Path(info.path)),
            "parts": [(p.first, p.stop, p.warm_frames) for p in plan.parts],
            "options": {k: str(v) for k, v in sorted(options.items())},
            "spec": spec_fingerprint}


def open_parts_dir(plan: SplitPlan, identity: dict) -> None:
    """Make the parts folder; parts left there by a job with another identity are removed
    (those of the same job are kept: a re-run reuses finished parts)."""
    pdir = Path(plan.parts_dir)
    meta = pdir / "job.json"
    wanted = json.dumps(identity, sort_keys=True, default=str)
    if pdir.exists():
        try:
            same = meta.read_text() == wanted
        except OSError:
            same = False
        if not same:
            shutil.rmtree(pdir, ignore_errors=True)
    try:
        pdir.mkdir(parents=True, exist_ok=True)
        if not meta.exists():
            tmp = meta.with_name("job.json.tmp")
            tmp.write_text(wanted)
            tmp.replace(meta)
    except OSError as e:
        raise OutputError(f"cannot create {pdir}: {e.strerror or e}") from None


def warmup_dir(plan_or_dir, index: int) -> Path:
    """Where part ``index``'s warm-up writes the frames it then drops."""
    pdir = plan_or_dir.parts_dir if isinstance(plan_or_dir, SplitPlan) else plan_or_dir
    return Path(pdir) / f"warmup_{index:04d}"
