"""``convert_many``: many videos (and long videos in parts) over a Ray cluster, or locally.

The driver (the process that calls :func:`convert_many`) decides the outputs, writes a marker
in each output folder, submits one task per clip -- or, for a split clip, a plan task, one task
per part and a join task -- and collects the results as they finish: one manifest line per clip,
and progress aggregated over every running task (frames, FPS, ETA).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Cancelled, InputError, OutputError, RvmatteError, one_line
from ..inference.convert import batch_target
from ..io.readers import VIDEO_EXTS, list_videos
from ..io.writers import CONTAINERS
from ..spec import ModelSpec
from . import split as sp
from . import work

POLL_S = 0.5  # the driver's loop: results and progress this often


@dataclass(frozen=True)
class ClusterProgress:
    """Passed to a ``progress`` callable about twice a second.

    done / total: frames converted (resumed and skipped ones included) / expected (None
    until known; estimated for clips not started yet); fps: frames per second over the whole
    batch in this run; eta_seconds: at that rate. clips_*: clips finished (done or skipped),
    failed, in all. running: ``{task: {"pid", "node", "done", "total", "fps"}}`` of the tasks
    at work (a task is a clip's input, or ``<input>#part<i>`` for a part).
    """

    done: int
    total: Optional[int]
    fps: float
    eta_seconds: Optional[float]
    clips_done: int
    clips_failed: int
    clips_total: int
    running: dict = field(default_factory=dict)


@dataclass
class ManyResult:
    """What :func:`convert_many` did: one record per clip (the manifest's lines), in the
    order they finished; wall time; the manifest's path."""

    records: list = field(default_factory=list)
    seconds: float = 0.0
    manifest: Optional[str] = None

    @property
    def failed(self) -> list:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def frames(self) -> int:
        return sum(r["frames"] for r in self.records if r["status"] == "done")

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---- the manifest --------------------------------------------------------------------------

class Manifest:
    """JSON Lines, one record per clip, each line flushed to disk as the clip finishes (a
    driver killed mid-batch leaves the lines of every clip finished before)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        try:
            self.f = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write the manifest {self.path}: {e.strerror or e}") from None

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec, default=str) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ---- progress ---------------------------------------------------------------------------------

class Tally:
    """The batch's progress from its tasks' reports. A task's key is its clip's input, or
    ``<input>#part<i>`` for a part."""

    def __init__(self, clips: int) -> None:
        self.clips = clips
        self.t0 = time.perf_counter()
        self.running: dict = {}    # key -> latest report of a task at work
        self.done: dict = {}       # key -> frames done
        self.total: dict = {}      # key -> frames expected
        self.base: dict = {}       # key -> frames done at its first report (resumed ones)
        self.closed: set = set()   # keys of finished tasks
        self.ok = self.failed = 0

    def expect(self, key: str, frames: int) -> None:
        self.total.setdefault(key, int(frames))

    def report(self, key: str, state: dict) -> None:
        if key in self.closed:
            return
        self.running[key] = state
        self.done[key] = int(state.get("done") or 0)
        self.base.setdefault(key, self.done[key])
        if state.get("total"):
            self.total[key] = int(state["total"])

    def finish(self, key: str, frames: int) -> None:
        self.running.pop(key, None)
        self.closed.add(key)
        self.base.setdefault(key, frames)
        self.done[key] = self.total[key] = int(frames)

    def clip(self, rec: dict) -> None:
        if rec["status"] == "failed":
            self.failed += 1
        else:
            self.ok += 1

    def info(self) -> ClusterProgress:
        done = sum(self.done.values())
        elapsed = time.perf_counter() - self.t0
        fps = max(0, done - sum(self.base.values())) / elapsed if elapsed > 0 else 0.0
        total = None
        if self.total:
            started = {k.split("#part")[0] for k in self.total}
            left = max(0, self.clips - len(started))
            total = sum(self.total.values())
            total += round(left * total / len(started))
        eta = (max(0, total - done) / fps) if (total is not None and fps > 0) else None
        return ClusterProgress(done, total, fps, eta, self.ok, self.failed, self.clips,
                               dict(self.running))


class _Bar:
    """``progress=True``: a tqdm bar of frames on stderr, with the clips in its postfix."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, p: ClusterProgress) -> None:
        self.bar.total = p.total
        self.bar.n = p.done
        self.bar.set_postfix_str(f"clips {p.clips_done + p.clips_failed}/{p.clips_total}"
                                 + (f", {p.clips_failed} failed" if p.clips_failed else ""),
                                 refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# ---- no cluster: tasks one after another in this process ----------------------------------------

class LocalExecutor:
    """The tasks run in this process, one at a time, in submission order (each :meth:`wait`
    runs the next one). No Ray needed; a split clip's parts run one after another."""

    def __init__(self, tally: Tally, cancel: Optional[threading.Event] = None) -> None:
        self.queue: collections.deque = collections.deque()
        self.tally, self.cancel_event = tally, cancel
        self.on_report: Optional[Callable[[], None]] = None  # the driver's progress, throttled

    def submit(self, tag: tuple, kind: str, *args: Any) -> None:
        self.queue.append((tag, kind, args))

    def pending(self) -> int:
        return len(self.queue)

    def wait(self, timeout: float) -> list:
        if not self.queue:
            return []
        tag, kind, args = self.queue.popleft()
        key = tag[1] if tag[0] == "clip" else f"{tag[1]}#part{tag[-1]}"

        def report(done, total, fps):
            self.tally.report(key, {"pid": os.getpid(), "node": "local", "done": done,
                                    "total": total, "fps": fps})
            if self.on_report is not None:
                self.on_report()

        try:
            if kind == "clip":
                return [(tag, work.convert_clip(*args, report, self.cancel_event))]
            if kind == "part":
                return [(tag, work.convert_part(*args, report, self.cancel_event))]
            if kind == "plan":
                return [(tag, work.plan_clip_split(args[0], count=args[1], seconds=args[2],
                                                   warmup=args[3]))]
            return [(tag, work.join_parts(*args))]
        except Cancelled:
            raise
        except Exception as e:  # noqa: BLE001 - a bug: recorded like a crashed task
            return [(tag, e)]

    def running(self) -> dict:
        return {}

    def cancel(self) -> None:
        self.queue.clear()

    def close(self) -> None:
        work.close_sessions()


# ---- inputs and outputs ------------------------------------------------------------------------------

def expand_inputs(inputs) -> list:
    """Video files, and the videos of each folder given, in order, without repeats."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list = []
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            videos = list_videos(p)
            if not videos:
                raise InputError(f"folder {p} contains no videos "
                                 f"({', '.join(sorted(VIDEO_EXTS))})")
            out.extend(videos)
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    if not unique:
        raise InputError("no inputs given")
    return unique


def _is_file(template, single: bool) -> bool:
    """One input's output given as a file (``out.mp4``), not a folder or template."""
    t = Path(str(template))
    return (single and "{stem}" not in str(template) and t.suffix.lower() in CONTAINERS
            and not t.is_dir())


def plan_outputs(inputs: list, templates: dict) -> dict:
    """``{input: [(kind, path), ...]}`` from each kind's folder or ``{stem}`` template (one
    input: also a file); folders are created (their parent must exist). Two inputs with one
    output path are refused."""
    if not any(templates.values()):
        raise InputError("no output requested: give an output folder, alpha and/or "
                         "foreground")
    single = len(inputs) == 1
    for t in templates.values():
        if t is None:
            continue
        folder = Path(t).parent if ("{stem}" in str(t) or _is_file(t, single)) else Path(t)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"output {folder} must be a folder when converting several "
                              "videos")
        if not folder.parent.is_dir():
            raise OutputError(f"output folder {folder.parent} does not exist")
        folder.mkdir(exist_ok=True)
    plan, owner = {}, {}
    for inp in inputs:
        outs = [(k, str(t) if _is_file(t, single) else batch_target(t, k, inp.stem))
                for k, t in templates.items() if t is not None]
        for _, path in outs:
            key = str(Path(path).resolve())
            if key in owner:
                raise OutputError(f"{owner[key]} and {inp} would both write {path}: rename "
                                  "one, or use a {stem} template")
            owner[key] = inp
        plan[str(inp)] = outs
    return plan


def _task_spec(spec: ModelSpec, cpus: float, gpus: float) -> ModelSpec:
    """A CPU task uses as many threads as it has CPUs (unless the spec says)."""
    if spec.threads is None and not gpus:
        return spec.replace(threads=max(1, int(cpus)))
    return spec


# ---- the batch ------------------------------------------------------------------------------------

def convert_many(inputs, output_dir=None, *, alpha=None, foreground=None,
                 spec: Optional[ModelSpec] = None, cluster: Optional[str] = None,
                 cpus_per_task: float = 1, gpus_per_task: float = 0,
                 split: Optional[int] = None, split_seconds: Optional[float] = None,
                 warmup: int = sp.DEFAULT_WARMUP, manifest=None, progress: Any = None,
                 max_retries: int = 3, overwrite: bool = False,
                 cancel: Optional[threading.Event] = None, actors: Optional[int] = None,
                 **options: Any) -> ManyResult:
    """Convert many videos, each as a task of a Ray cluster (or one after another here).

    inputs: video files and/or folders of videos. output_dir / alpha / foreground: a folder
        (``<stem>.mp4``, ``<stem>_alpha.mp4``, ``<stem>_fgr.mp4``) or a template with
        ``{stem}`` (``out/{stem}.webm``) for the composite, alpha and foreground outputs.
        Inputs and outputs must be on paths every node sees (shared storage); a node that does
        not see them fails its task with one line, nothing is written elsewhere.
    cluster: ``None`` (no Ray: here, one clip after another), ``"local"`` (a Ray instance on
        this machine, e.g. one task per GPU), ``"auto"`` (the running cluster this machine
        belongs to), ``"ray://HOST:PORT"`` (Ray Client) or ``"HOST:PORT"``.
    cpus_per_task / gpus_per_task: the resources each conversion declares (a CPU task runs
        the model on that many threads).
    split / split_seconds: convert each video in ``split`` parts, or parts of
        ``split_seconds``, on several workers, each part starting ``warmup`` frames early
        from a zero state; the parts are joined exactly (frames, timestamps, one audio
        track). The seam error bound is :data:`rvmatte.cluster.split.SEAM_BOUND`.
    manifest: a JSON Lines file written as clips finish (input, outputs, frames, seconds,
        status, error, ...). progress: True (a bar on stderr) or a callable taking
        :class:`ClusterProgress`. max_retries: runs of a task after its worker died.
    actors: conversions run on a pool of that many long-lived Ray actors that keep the model
        loaded between clips; default (None): one per GPU share for GPU tasks, none (a task
        per conversion) for CPU tasks.
    overwrite: convert again clips whose outputs exist (else they are skipped; clips with a
        checkpoint or finished parts are resumed). cancel: a ``threading.Event``.
    options: ``convert_video`` keywords (background, codec, quality, start, end,
        segment_frames, ...).

    Returns :class:`ManyResult`; a failed clip is a record with ``status == "failed"``, the
    others still finish.
    """
    if split is not None and split_seconds is not None:
        raise InputError("give the number of parts (split) or their length (split_seconds), "
                         "not both")
    splitting = split is not None or split_seconds is not None
    if isinstance(warmup, bool) or int(warmup) < 0:
        raise InputError(f"invalid warm-up {warmup!r}: must be 0 or more frames")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int)
                               or actors < 0):
        raise InputError(f"invalid number of actors {actors!r}: 0 or more")
    spec = ModelSpec.of(spec)
    # Absolute paths: a worker's working folder is not the driver's.
    paths = [p.absolute() for p in expand_inputs(inputs)]
    outputs = plan_outputs(paths, {k: None if t is None else os.path.abspath(str(t))
                                   for k, t in (("composite", output_dir), ("alpha", alpha),
                                                ("foreground", foreground))})
    tally = Tally(len(paths))
    t0 = time.perf_counter()
    executor, started = _executor(cluster, tally, cancel, cpus=cpus_per_task,
                                  gpus=gpus_per_task, retries=max_retries, actors=actors)
    result = ManyResult(manifest=str(manifest) if manifest else None)
    book, markers = None, {}
    try:
        if cluster is not None:
            spec = _task_spec(spec, cpus_per_task, gpus_per_task)
            folders = {str(Path(p).parent) for outs in outputs.values() for _, p in outs}
            markers = work.write_markers(folders, uuid.uuid4().hex)
        book = Manifest(manifest) if manifest else None
        jobs = {inp: work.ClipJob(inp, outs, spec, options=dict(options), overwrite=overwrite,
                                  markers=markers) for inp, outs in outputs.items()}
        _Batch(executor, jobs, tally, book, result, progress, cancel,
               split=(split, split_seconds, int(warmup)) if splitting else None).run()
    finally:
        executor.close()
        if book is not None:
            book.close()
        work.remove_markers(markers)
        if started:
            from . import remote

            remote.disconnect()
    result.seconds = time.perf_counter() - t0
    return result


def _executor(cluster, tally, cancel, *, cpus, gpus, retries, actors):
    """``(executor, whether Ray was connected here)``."""
    if cluster is None:
        return LocalExecutor(tally, cancel), False
    remote = load_remote()
    started = remote.connect(str(cluster))
    try:
        return remote.RayExecutor(cpus=cpus, gpus=gpus, retries=retries,
                                  actors=actors), started
    except BaseException:
        if started:
            remote.disconnect()
        raise


def load_remote():
    """:mod:`rvmatte.cluster.remote`, or one line saying how to install Ray."""
    try:
        from . import remote
    except ImportError as e:
        if e.name is None or not e.name.startswith("ray"):
            raise
        raise RvmatteError("a cluster needs Ray: pip install 'rvmatte[cluster]' (or run "
                           "without --cluster, one clip after another)") from None
    return remote


class _Batch:
    """The driver's loop: submit, collect results, write the manifest, report progress."""

    def __init__(self, executor, jobs: dict, tally: Tally, book: Optional[Manifest],
                 result: ManyResult, progress: Any, cancel: Optional[threading.Event],
                 split: Optional[tuple]) -> None:
        self.ex, self.jobs, self.tally, self.book = executor, jobs, tally, book
        self.result, self.cancel, self.split = result, cancel, split
        self.bar = _Bar() if progress is True else None
        self.progress = self.bar if self.bar is not None else (
            progress if callable(progress) else None)
        self.splits: dict = {}  # input -> {"plan", "parts": {i: record}, "t0"}
        self.last_report = 0.0
        if hasattr(executor, "on_report"):  # tasks run in this thread: report from inside
            executor.on_report = self._report_now

    def _report_now(self) -> None:
        if time.monotonic() - self.last_report >= POLL_S:
            self._report()

    def run(self) -> None:
        for inp, job in self.jobs.items():
            if self.split is None:
                self.ex.submit(("clip", inp), "clip", job)
            else:
                count, seconds, warmup = self.split
                self.splits[inp] = {"t0": time.perf_counter(), "parts": {}}
                self.ex.submit(("plan", inp), "plan", job, count, seconds, warmup)
        try:
            while self.ex.pending():
                if self.cancel is not None and self.cancel.is_set():
                    self.ex.cancel()
                    raise Cancelled("batch cancelled (run it again to resume)")
                for tag, res in self.ex.wait(POLL_S):
                    self._handle(tag, res)
                self._report()
        finally:
            if self.bar is not None:
                self.bar.close()

    def _report(self) -> None:
        self.last_report = time.monotonic()
        for key, state in self.ex.running().items():
            self.tally.report(key, state)
        if self.progress is not None:
            self.progress(self.tally.info())

    def _handle(self, tag: tuple, res: Any) -> None:
        kind, inp = tag[0], tag[1]
        job = self.jobs[inp]
        if isinstance(res, BaseException):
            res = work.record(job, "failed", error=_crash_line(res))
        if kind == "clip":
            self.tally.finish(inp, res["frames"])
            self._final(res)
        elif kind == "plan":
            self._planned(job, res)
        elif kind == "part":
            self._part_done(job, tag[2], res)
        else:
            self._joined(job, res)

    def _final(self, rec: dict) -> None:
        self.tally.clip(rec)
        self.result.records.append(rec)
        if self.book is not None:
            self.book.write(rec)

    def _planned(self, job: work.ClipJob, res: dict) -> None:
        if "record" in res:
            self.tally.finish(job.input, res["record"]["frames"])
            self._final(res["record"])
            return
        plan = res["plan"]
        self.splits[job.input]["plan"] = plan
        for i, part in enumerate(plan["parts"]):
            self.tally.expect(f"{job.input}#part{i}", part["stop"] - part["first"])
            self.ex.submit(("part", job.input, i), "part", job, plan, i)

    def _part_done(self, job: work.ClipJob, index: int, rec: dict) -> None:
        state = self.splits[job.input]
        state["parts"][index] = rec
        self.tally.finish(f"{job.input}#part{index}", rec["frames"])
        n = len(state["plan"]["parts"])
        if len(state["parts"]) < n:
            return
        bad = [(i, r) for i, r in sorted(state["parts"].items()) if r["status"] == "failed"]
        if bad:
            i, r = bad[0]
            self._final(work.record(job, "failed", error=f"part {i + 1} of {n}: {r['error']}",
                                    parts=n, seconds=time.perf_counter() - state["t0"]))
            return
        self.ex.submit(("join", job.input), "join", job, state["plan"])

    def _joined(self, job: work.ClipJob, rec: dict) -> None:
        state = self.splits[job.input]
        parts = state["parts"]
        rec = dict(rec, seconds=round(time.perf_counter() - state["t0"], 3),
                   warmup=state["plan"]["warmup"], seam_bound=dict(sp.SEAM_BOUND),
                   part_nodes=sorted({r.get("ray_node") or r.get("node", "")
                                      for r in parts.values()}),
                   resumed_parts=sum(1 for r in parts.values()
                                     if r["status"] == "skipped" or r.get("resumed_from")))
        self._final(rec)


def _crash_line(e: BaseException) -> str:
    """One line for a task that did not come back (a worker that died more often than the
    retries allow, a node gone, a bug)."""
    text = one_line(e)
    cause = getattr(e, "cause", None)
    if isinstance(cause, RvmatteError):
        return one_line(cause)
    return f"task failed: {type(e).__name__}: {text}"
