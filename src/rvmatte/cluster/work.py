"""What one cluster task does, with or without Ray: a clip, a part of a split clip, a join.

Each function here runs on a worker (a Ray task, or in the caller's process when no cluster
is used) and returns a *record*, the manifest's line for it::

    {"input", "outputs", "frames", "seconds", "status", "error", ...}

``status`` is ``"done"``, ``"skipped"`` (the outputs were already there) or ``"failed"``
(``error`` says why, in one line). A user's error (a bad clip, an unwritable folder) is a
failed record, never an exception, so the rest of a batch goes on; anything else is a bug and
propagates (Ray reports it, the driver records it).

A conversion always asks for ``resume``: a task retried after its worker died continues from
the checkpoint the dead one left (``<output>.rvmatte-resume/``), and a re-run of a whole
batch continues the clips an earlier run did not finish.

The network is loaded once per worker process (:func:`session`) and shared by the tasks that
process runs, one after another.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: before onnxruntime/torch load

import shutil  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

from ..errors import Cancelled, InputError, OutputError, RvmatteError, one_line  # noqa: E402
from ..inference.checkpoint import job_dir_for  # noqa: E402
from ..inference.convert import convert_video  # noqa: E402
from ..inference.finalize import assemble_outputs, audio_plan  # noqa: E402
from ..inference.plan import ConvertRequest, plan_targets  # noqa: E402
from ..inference.session import Matter  # noqa: E402
from ..io.compose import Background, VideoBackground, parse_background  # noqa: E402
from ..io.readers import is_pattern, parse_range, probe  # noqa: E402
from ..spec import ModelSpec  # noqa: E402
from . import split as sp  # noqa: E402

Report = Callable[[int, Optional[int], float], None]  # (frames done, frames expected, fps)
MARKER_WAIT_S = 10.0  # a network file system may show a new file a few seconds late


@dataclass
class ClipJob:
    """One input's conversion, as a task receives it (picklable).

    outputs: ``[(kind, path), ...]``. options: ``convert_video`` keywords (background, codec,
    start, end, segment_frames, ...; not the outputs, the model or ``resume``). markers:
    ``{folder: (marker file, token)}`` the driver wrote in each output folder: a task that
    does not find them is not seeing the same storage (see :func:`check_storage`).
    """

    input: str
    outputs: list
    spec: ModelSpec
    options: dict = field(default_factory=dict)
    overwrite: bool = False
    markers: dict = field(default_factory=dict)

    @property
    def first_output(self) -> Path:
        return Path(self.outputs[0][1])


# ---- records ------------------------------------------------------------------------------

def where() -> str:
    """This worker, for the manifest: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record(job: ClipJob, status: str, *, frames: int = 0, seconds: float = 0.0,
           error: Optional[str] = None, **extra: Any) -> dict:
    out = {"input": job.input, "outputs": {k: str(p) for k, p in job.outputs},
           "frames": int(frames), "seconds": round(float(seconds), 3), "status": status,
           "error": error}
    out.update(extra)
    return out


def _result_record(job: ClipJob, res, t0: float, **extra: Any) -> dict:
    return record(job, "done", frames=res.frames, seconds=time.perf_counter() - t0,
                  fps=round(res.fps, 3), resumed_from=res.resumed_from,
                  warnings=list(res.warnings), node=where(), **extra)


def failed(job: ClipJob, e: BaseException, t0: float, **extra: Any) -> dict:
    return record(job, "failed", seconds=time.perf_counter() - t0, error=one_line(e),
                  node=where(), **extra)


# ---- the model, once per worker process ------------------------------------------------------

class WarmSession(Matter):
    """A :class:`~rvmatte.inference.session.Matter` whose clips may start from a given state.

    ``seed``: the state a conversion's first frames get instead of none (a zero state);
    ``last``: the state after the latest frames it matted. A split part's warm-up runs with no
    seed and leaves ``last``; the part itself then runs with ``seed = last``. The post stage
    (stabilisation, plate) is chained the same way: ``post_seed`` / ``post_last``. A conversion
    resumed from a checkpoint starts from the checkpoint's state, not the seed."""

    seed: Any = None
    last: Any = None
    post_last: Optional[dict] = None
    #: While true (a split part and its warm-up), ``auto`` runs the float network where it
    #: would pick ``int8``: the seam bound (docs/CLUSTER.md) holds for the float network, and
    #: int8's recurrent state stays further from the sequential run's after a warm-up (on the
    #: tests' talking head at W = 120: mean 4.3e-4 and p99 4/255 at the seam, against 2.4e-4
    #: and 2/255 in float).
    float_state: bool = False

    def backend_for(self, ratio: float) -> str:
        name = super().backend_for(ratio)
        return "fused" if self.float_state and name == "int8" and self.backend == "auto" \
            else name

    def chain(self) -> None:
        """The next conversion starts from the state the latest one left."""
        self.seed, self.post_seed = self.last, self.post_last

    def forget(self) -> None:
        """The next conversion starts from a zero state (and a fresh post stage)."""
        self.seed = self.last = self.post_seed = self.post_last = None

    def keep_post(self, states: dict) -> None:
        self.post_last = states

    def step(self, src, state=None, downsample_ratio=None):
        out = super().step(src, self.seed if state is None else state, downsample_ratio)
        self.last = out.state
        return out

    def network_uint8(self, frames, state, ratio):
        coefs, new = super().network_uint8(frames, self.seed if state is None else state, ratio)
        self.last = new
        return coefs, new


_SESSIONS: dict = {}


def session(spec: ModelSpec) -> WarmSession:
    """This process's session for ``spec`` (built on first use, then kept)."""
    key = repr(spec)
    s = _SESSIONS.get(key)
    if s is None:
        s = _SESSIONS[key] = WarmSession(spec)
    s.forget()
    s.float_state = False
    return s


def close_sessions() -> None:
    """Stop the kept sessions' runner threads (the caller's process, after a local batch)."""
    for s in _SESSIONS.values():
        s.close()
    _SESSIONS.clear()


# ---- shared storage ----------------------------------------------------------------------------

def write_markers(folders, token: str) -> dict:
    """One marker file per output folder, written by the driver: ``{folder: (path, token)}``."""
    markers = {}
    for folder in sorted({str(Path(f)) for f in folders}):
        path = Path(folder) / f".rvmatte-cluster-{token}"
        try:
            path.write_text(token)
        except OSError as e:
            raise OutputError(f"cannot write in output folder {folder}: {e.strerror or e}") from None
        markers[folder] = (str(path), token)
    return markers


def remove_markers(markers: dict) -> None:
    for path, _ in markers.values():
        Path(path).unlink(missing_ok=True)


def check_storage(job: ClipJob, *, wait_s: float = MARKER_WAIT_S) -> None:
    """Refuse to work on a node that does not see the driver's files: the input must exist
    here and each output folder must hold the driver's marker (a folder of the same name on
    this node's local disk would take the outputs where nobody looks for them)."""
    host = socket.gethostname()
    inp = Path(job.input)
    if not is_pattern(inp) and not inp.exists():
        raise InputError(f"input not found on {host}: {inp} (every node must see the inputs "
                         "and outputs at the same paths: shared storage, docs/CLUSTER.md)")
    for folder, (path, token) in job.markers.items():
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if Path(path).read_text() == token:
                    break
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise OutputError(
                    f"output folder {folder} on {host} is not the driver's (its marker file "
                    "is missing): every node must see the outputs at the same paths (shared "
                    "storage, docs/CLUSTER.md)")
            time.sleep(0.5)


# ---- outputs already there ---------------------------------------------------------------------

def _output_exists(path: Path) -> bool:
    if is_pattern(path):
        folder = path.parent if str(path.parent) else Path(".")
        return (folder / (path.name % 0)).exists() or (folder / (path.name % 1)).exists()
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def finished(outputs, *, parts: bool = True) -> bool:
    """Every output is in place and no job is pending for them (no checkpoint folder, no
    parts folder of a split job)."""
    first = Path(outputs[0][1])
    pending = job_dir_for(first).exists() or (parts and sp.parts_dir_for(first).exists())
    return not pending and all(_output_exists(Path(p)) for _, p in outputs)


def _skipped(job: ClipJob, t0: float) -> dict:
    frames = 0
    for _, p in job.outputs:
        try:
            frames = probe(p).frames or 0
            break
        except RvmatteError:
            continue
    return record(job, "skipped", frames=frames, seconds=time.perf_counter() - t0,
                  node=where(), note="outputs already there")


# ---- one clip -----------------------------------------------------------------------------------

def _progress(report: Optional[Report]):
    if report is None:
        return None
    return lambda p: report(p.done, p.total, p.fps)


def _convert(job: ClipJob, outputs, s: WarmSession, *, report: Optional[Report] = None,
             cancel=None, overwrite: bool, **options: Any):
    """``convert_video`` of ``job.input`` into ``outputs`` through session ``s``, resuming
    from a checkpoint when there is one."""
    out = dict(outputs)
    return convert_video(job.input, out.get("composite"), alpha=out.get("alpha"),
                         foreground=out.get("foreground"), spec=s.spec, model=s,
                         resume=True, overwrite=overwrite, progress=_progress(report),
                         cancel=cancel, **options)


def convert_clip(job: ClipJob, report: Optional[Report] = None, cancel=None) -> dict:
    """Convert one whole clip (skipped when its outputs are already there)."""
    t0 = time.perf_counter()
    try:
        check_storage(job)
        if not job.overwrite and finished(job.outputs):
            return _skipped(job, t0)
        # A checkpoint folder means a job of ours wrote these outputs' first ones and died.
        overwrite = job.overwrite or job_dir_for(job.first_output).exists()
        res = _convert(job, job.outputs, session(job.spec), report=report, cancel=cancel,
                       overwrite=overwrite, **job.options)
    except Cancelled:
        raise
    except RvmatteError as e:
        return failed(job, e, t0)
    return _result_record(job, res, t0)


# ---- a split clip: plan, parts, join ---------------------------------------------------------------

def _check_splittable(job: ClipJob) -> None:
    bg = parse_background(job.options.get("background"))
    try:
        if isinstance(bg, VideoBackground):
            raise InputError("a video background cannot be split across workers (each part "
                             "would start it from its first frame): convert without --split")
    finally:
        if isinstance(bg, Background):
            bg.close()
    if job.options.get("select") is not None:
        raise InputError("person selection cannot be split across workers (who was selected "
                         "is known only by following everyone from the selection's frame): "
                         "convert without --split")
    for kind, p in job.outputs:
        if is_pattern(Path(p)) or Path(p).suffix == "" or Path(p).is_dir():
            raise InputError(f"--split writes video files; the {kind} output {p} is an image "
                             "sequence: convert it without --split")


def plan_clip_split(job: ClipJob, *, count: Optional[int], seconds: Optional[float],
                    warmup: int) -> dict:
    """The split of one clip: ``{"record": ...}`` when there is nothing to split (skipped,
    failed), else ``{"plan": SplitPlan as a dict}``; the parts folder is made."""
    t0 = time.perf_counter()
    try:
        check_storage(job)
        if not job.overwrite and finished(job.outputs):
            return {"record": _skipped(job, t0)}
        _check_splittable(job)
        # Existing outputs are replaced only when asked, or when a split job of ours left
        # its parts (it may have placed some outputs before it died).
        ours = sp.parts_dir_for(job.first_output).exists()
        info = _check_targets(job, overwrite=job.overwrite or ours)
        plan = sp.plan_split(info, job.outputs, start=job.options.get("start"),
                             end=job.options.get("end"), count=count, seconds=seconds,
                             warmup=warmup)
        options = {k: v for k, v in job.options.items() if k not in ("start", "end")}
        sp.open_parts_dir(plan, sp.plan_identity(info, plan, options, job.spec.fingerprint()))
    except RvmatteError as e:
        return {"record": failed(job, e, t0)}
    return {"plan": plan.as_dict()}


def _check_targets(job: ClipJob, *, overwrite: bool):
    """Probe the input and check the outputs can be written and the ratio fits (as
    ``convert_video`` does first); returns the input's ``SourceInfo``."""
    targets = plan_targets(_request(job, overwrite=overwrite))
    if isinstance(targets.parsed_background, Background):
        targets.parsed_background.close()
    return targets.info


def _request(job: ClipJob, *, overwrite: bool) -> ConvertRequest:
    out = dict(job.outputs)
    fields = {k: v for k, v in job.options.items()
              if k in ("background", "codec", "quality", "preset", "encoder", "alpha_bits",
                       "alpha_format", "start", "end", "seq_chunk", "segment_frames", "strict")}
    return ConvertRequest.make(job.input, out.get("composite"), alpha=out.get("alpha"),
                               foreground=out.get("foreground"), spec=job.spec,
                               overwrite=overwrite, **fields)


def convert_part(job: ClipJob, plan: dict, index: int, report: Optional[Report] = None,
                 cancel=None) -> dict:
    """Part ``index`` of a split clip: its warm-up (matted, dropped), then its frames from
    the state the warm-up left, into the part's own files (skipped when they are there)."""
    t0 = time.perf_counter()
    sp_plan = sp.SplitPlan.from_dict(plan)
    part = sp_plan.parts[index]
    extra = {"part": index, "parts": part.count, "warmup_frames": part.warm_frames}
    try:
        check_storage(job)
        if finished(part.outputs, parts=False):
            return _part_record(job, part, "skipped", t0, part.frames, **extra)
        options = {k: v for k, v in job.options.items() if k not in ("start", "end")}
        s = session(job.spec)
        s.float_state = True
        try:
            if part.warm_frames:
                _warm_up(job, sp_plan, part, s, options, cancel)
            s.chain()
            res = _convert(job, part.outputs, s, report=report, cancel=cancel,
                           overwrite=True, start=part.start, end=part.end, **options)
        finally:
            s.forget()
            s.float_state = False
        if res.frames != part.frames:
            raise InputError(f"{job.input}: part {index + 1} of {part.count} decoded "
                             f"{res.frames} frames where its timestamps promise "
                             f"{part.frames}: convert it without --split")
    except Cancelled:
        raise
    except RvmatteError as e:
        return failed(job, e, t0, **extra)
    return _part_record(job, part, "done", t0, res.frames, fps=round(res.fps, 3),
                        resumed_from=res.resumed_from, warnings=list(res.warnings), **extra)


def _part_record(job: ClipJob, this: sp.Part, status: str, t0: float, frames: int,
                 **extra: Any) -> dict:
    r = record(job, status, frames=frames, seconds=time.perf_counter() - t0, node=where(),
               **extra)
    r["outputs"] = {k: str(p) for k, p in this.outputs}
    return r


def _warm_up(job: ClipJob, plan: sp.SplitPlan, part: sp.Part, s: WarmSession,
             options: dict, cancel) -> None:
    """Matte the warm-up frames through ``s`` (its ``last`` state is then the part's seed).
    The same outputs as the part are made (the same conversion path, so the same state) into
    a scratch folder, then removed."""
    wdir = sp.warmup_dir(plan, part.index)
    shutil.rmtree(wdir, ignore_errors=True)
    wdir.mkdir(parents=True)
    try:
        outs = [(k, str(wdir / f"{k}{Path(p).suffix}")) for k, p in part.outputs]
        s.forget()
        _convert(job, outs, s, overwrite=True, cancel=cancel, start=part.warm_start,
                 end=part.start, **{k: v for k, v in options.items() if k != "strict"})
    finally:
        shutil.rmtree(wdir, ignore_errors=True)


def join_parts(job: ClipJob, plan: dict) -> dict:
    """Join the parts of a split clip into its outputs: each output's parts remuxed as one
    stream with the sequential run's timestamps, the range's audio added (the composite and
    foreground), into a temporary file renamed into place; then the parts are removed."""
    t0 = time.perf_counter()
    sp_plan = sp.SplitPlan.from_dict(plan)
    try:
        check_storage(job)
        targets = plan_targets(_request(job, overwrite=True))  # (checked by the plan)
        if isinstance(targets.parsed_background, Background):
            targets.parsed_background.close()
        info, rng = targets.info, parse_range(job.options.get("start"), job.options.get("end"))
        segments = {kind: [(Path(dict(p.outputs)[kind]), p.offset - sp_plan.range_offset)
                           for p in sp_plan.parts] for kind, _ in job.outputs}
        for paths in segments.values():
            for path, _ in paths:
                if not path.is_file():
                    raise OutputError(f"part {path} is missing: run the job again")
        audio = audio_plan(info, rng, range_offset=sp_plan.range_offset,
                           last_pts=sp_plan.last_pts)
        _, audio_mode = assemble_outputs(targets.specs, segments, Path(sp_plan.parts_dir),
                                               info=info, audio=audio)
    except RvmatteError as e:
        return failed(job, e, t0, parts=len(sp_plan.parts), warmup=sp_plan.warmup)
    shutil.rmtree(sp_plan.parts_dir, ignore_errors=True)
    return record(job, "done", frames=sp_plan.frames, seconds=time.perf_counter() - t0,
                  node=where(), audio=audio_mode, parts=len(sp_plan.parts),
                  warmup=sp_plan.warmup)
