"""The job queue: options, a bounded pool of worker threads, retention and restart.

Each job converts one uploaded video with :func:`convert_job` -- the server's
:class:`~rvmatte.spec.ModelSpec` through :func:`rvmatte.inference.convert.convert_video`, the
path the web preview takes too -- through a *runner*, injectable so the queue can be exercised
on its own. Jobs live in the
SQLite :class:`~rvmatte.server.store.JobStore`; a server that starts and finds jobs left
``running`` re-queues them and the runner resumes them from the pipeline's checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from ..errors import Cancelled, InputError, RvmatteError
from ..io.compose import safe_background_spec
from ..spec import UNSET, ModelSpec
from . import store as st

log = logging.getLogger("rvmatte.server")

OUTPUT_KINDS = ("composite", "alpha", "foreground")
FORMATS = {"mp4": ".mp4", "webm": ".webm", "mov": ".mov"}
ALPHA_FORMATS = ("webm", "mov")  # containers/codecs that carry an alpha channel


def new_id() -> str:
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    """Server ids are 32 lowercase hex digits; anything else is rejected before any lookup."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def parse_options(*, outputs: str | None, background: str | None, format: str | None,
                  ratio: str | None, background_upload: str | None = None,
                  stabilize: bool = False, foreground_estimation: bool | None = None,
                  select: str | None = None, select_box: str | None = None,
                  people: int | None = None, select_frame: int | None = None,
                  select_mask_upload: str | None = None,
                  plate_upload: str | None = None) -> dict[str, Any]:
    """Validate job options given as in the CLI; return them as a JSON-able dict.

    ``outputs``: comma-separated subset of composite, alpha, foreground (default composite).
    ``background``: colour name or #rrggbb, ``blur``/``blur:R``, ``transparent``, or
    ``image`` together with ``background_upload`` (an uploaded image's id).
    ``format``: mp4, webm or mov (default mp4, or webm for a transparent background).
    ``ratio``: ``auto`` or a downsample ratio in (0, 1].
    ``stabilize``, ``foreground_estimation``: the quality options of ``rvmatte convert``
    (``foreground_estimation`` None: its default, on where the network runs on the CPU).
    ``select`` (``"X,Y"``, several separated by ``;``), ``select_box`` (``"X0,Y0,X1,Y1"``),
    ``people`` (N), ``select_frame`` (N), ``select_mask_upload`` (an uploaded mask image's
    id, as ``--select-mask``): who is matted, as ``--select`` and its kin (pixels of the
    video; checked against its size when the job runs).
    ``plate_upload``: an uploaded image of the empty scene (``--background-plate``).
    """
    post = _post_options(stabilize, foreground_estimation, select, select_box, people,
                         select_frame, select_mask_upload, plate_upload)
    from ..downsample import parse_downsample_ratio

    kinds = [k.strip().lower() for k in (outputs or "composite").split(",") if k.strip()]
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise InputError(f"bad outputs {outputs!r}: use a comma-separated list of "
                         f"{', '.join(OUTPUT_KINDS)}")
    kinds = list(dict.fromkeys(kinds))

    bg_text = (background or "green").strip()
    if bg_text.lower() == "image":
        if not background_upload:
            raise InputError("background 'image' needs an image: send background_file "
                             "or background_upload")
        bg = {"kind": "image", "spec": None}
    else:
        if background_upload:
            raise InputError("background_file/background_upload given but background is "
                             f"{bg_text!r}, not 'image'")
        spec = safe_background_spec(bg_text)
        kind = spec if spec == "transparent" else ("blur" if spec.startswith("blur") else "colour")
        bg = {"kind": kind, "spec": spec}

    fmt = (format or ("webm" if bg["kind"] == "transparent" else "mp4")).strip().lower()
    if fmt not in FORMATS:
        raise InputError(f"bad format {format!r}: use one of {', '.join(FORMATS)}")
    if bg["kind"] == "transparent" and "composite" in kinds and fmt not in ALPHA_FORMATS:
        raise InputError(f"a transparent background needs a format with alpha "
                         f"({' or '.join(ALPHA_FORMATS)}), not {fmt}")

    r = parse_downsample_ratio(ratio if ratio not in (None, "") else "auto")
    return {"outputs": kinds, "background": bg, "background_upload": background_upload,
            "format": fmt, "ratio": "auto" if r is None else r, **post}


def _post_options(stabilize: bool, foreground_estimation: bool | None, select: str | None,
                  select_box: str | None, people: int | None, select_frame: int | None,
                  select_mask_upload: str | None = None,
                  plate_upload: str | None = None) -> dict[str, Any]:
    """The quality, selection and plate options as stored with a job (only those set)."""
    from ..post.people import Selection

    points = [p.strip() for p in (select or "").split(";") if p.strip()]
    sel = Selection.parse(points or None, select_box or None, select_mask_upload or None,
                          people, select_frame)
    out: dict[str, Any] = {}
    if stabilize:
        out["stabilize"] = True
    if foreground_estimation is not None:
        out["foreground_estimation"] = bool(foreground_estimation)
    if sel is not None:
        out["select"] = {"points": [list(p) for p in sel.points], "box": sel.box,
                         "people": sel.people, "frame": sel.frame}
        if select_mask_upload:
            out["select_mask_upload"] = select_mask_upload
    if plate_upload:
        out["plate_upload"] = plate_upload
    return out


def _selection(stored: dict[str, Any] | None, mask: Optional[Path] = None):
    """A job's stored ``select`` option as a :class:`~rvmatte.post.people.Selection`
    (``mask``: the path of its mask upload)."""
    if not stored:
        return None
    from ..post.people import Selection

    return Selection(points=tuple(tuple(p) for p in stored["points"]), box=stored["box"],
                     mask=None if mask is None else str(mask), people=stored["people"],
                     frame=stored["frame"])


@dataclass
class JobSpec:
    """What a runner needs to convert one job."""

    id: str
    input: Path
    outputs: dict[str, Path]          # kind -> final path
    background: str | None            # convert_video's background argument
    downsample_ratio: str | float
    workdir: Path
    stabilize: bool = False
    foreground_estimation: Optional[bool] = None  # None: convert_video's default
    select: Any = None                # a rvmatte.post.people.Selection, or None: everyone
    plate: Optional[Path] = None      # a clean background plate (image), or None


ProgressFn = Callable[[Any], None]


class Runner(Protocol):
    """Converts one job. Returns ``{kind: path}`` or an object with ``.outputs`` (and
    optionally ``.resumed_from``), like :class:`~rvmatte.inference.convert.ConversionResult`.
    Must honour ``cancel`` by raising :class:`~rvmatte.errors.Cancelled`."""

    def __call__(self, job: JobSpec, *, progress: ProgressFn, cancel: threading.Event,
                 resume: bool) -> Any: ...


def convert_job(job: JobSpec, spec: ModelSpec, *, progress: Optional[ProgressFn] = None,
                cancel: Optional[threading.Event] = None, resume: bool = False,
                start: Optional[str] = None, end: Optional[str] = None,
                checkpoint_frames: Optional[int] = None):
    """Convert ``job`` with the model ``spec``: what every job and every preview runs.

    The job's own ratio wins over ``spec.downsample``, unless it is ``"auto"`` (the form's
    default). ``start``/``end``: a part of the clip, as in ``convert_video`` (the preview:
    ``"Nf"``, ``"N+1f"``). Returns :class:`~rvmatte.inference.convert.ConversionResult`."""
    from ..inference.convert import convert_video

    o = job.outputs
    extra = {} if checkpoint_frames is None else {"segment_frames": checkpoint_frames}
    return convert_video(
        str(job.input), output=_s(o.get("composite")), alpha=_s(o.get("alpha")),
        foreground=_s(o.get("foreground")), background=job.background, start=start, end=end,
        spec=spec, downsample_ratio=UNSET if job.downsample_ratio == "auto"
        else job.downsample_ratio, stabilize=job.stabilize,
        refine_foreground=job.foreground_estimation, select=job.select,
        background_plate=_s(job.plate), overwrite=True, resume=resume, progress=progress,
        cancel=cancel, **extra)


class ConvertRunner:
    """The production runner: :func:`convert_job` with the server's model spec."""

    def __init__(self, spec: ModelSpec, *, checkpoint_frames: int | None = None) -> None:
        self.spec = spec
        self.checkpoint_frames = checkpoint_frames  # None: the pipeline's default (~10 s)

    def __call__(self, job: JobSpec, *, progress: ProgressFn, cancel: threading.Event,
                 resume: bool):
        return convert_job(job, self.spec, progress=progress, cancel=cancel, resume=resume,
                           checkpoint_frames=self.checkpoint_frames)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


@dataclass
class _Running:
    cancel: threading.Event = field(default_factory=threading.Event)
    deleted: bool = False


class JobManager:
    """Runs queued jobs on ``workers`` threads; keeps the store and the files in step."""

    def __init__(self, store: st.JobStore, data_dir: Path, runner: Runner, *, workers: int = 1,
                 max_queued: int = 100, retention_s: float = 86400.0,
                 sweep_interval_s: float = 60.0, min_free_bytes: int = 0,
                 max_storage_bytes: int = 0) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if max_queued < 1:
            raise ValueError("max_queued must be >= 1")
        self.store = store
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.uploads_dir = self.data_dir / "uploads"
        self.runner = runner
        self.workers = workers
        self.max_queued = max_queued
        self.retention_s = retention_s
        self.sweep_interval_s = sweep_interval_s
        self._cond = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._stopping = threading.Event()
        self._ready = threading.Event()  # set once the warm-up (if any) has ended
        self._threads: list[threading.Thread] = []
        self.resumed_at_start: list[str] = []
        self.min_free_bytes = int(min_free_bytes)  # a job is not started with less free
        self.max_storage_bytes = int(max_storage_bytes)  # uploads + results; 0: no limit
        # a job's final state that could not be written (the database failed, e.g. a full
        # disk): retried by the worker until it can be
        self._unrecorded: dict[str, tuple[str, dict]] = {}
        self.last_error: Optional[str] = None  # the last bookkeeping failure, for health

    def free_bytes(self) -> int:
        """Free space on the data directory's file system."""
        return shutil.disk_usage(self.data_dir).free

    def stored_bytes(self) -> int:
        """Bytes of the uploads and of the jobs' files (results, partial results, resume
        data): what ``max_storage_bytes`` limits."""
        total = 0
        for root in (self.uploads_dir, self.jobs_dir):
            for folder, _, files in os.walk(root):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:  # deleted meanwhile
                        pass
        return total

    def check_space(self, incoming: int = 0) -> None:
        """:class:`StorageFull` when ``incoming`` more bytes would leave less free disk than
        the reserve, or store more than ``max_storage_bytes``."""
        need = self.min_free_bytes + incoming
        free = self.free_bytes()
        if free < need:
            raise StorageFull(f"not enough free disk on the server ({free // 2**20} MB free, "
                              f"{need // 2**20} MB needed); try again later")
        if self.max_storage_bytes:
            stored = self.stored_bytes()
            if stored + incoming > self.max_storage_bytes:
                raise StorageFull(f"the server's storage is full ({stored // 2**20} MB of "
                                  f"{self.max_storage_bytes // 2**20} MB stored); delete "
                                  "jobs or uploads, or try again later")

    def health(self) -> list[str]:
        """What is wrong, in words (empty: all well): dead workers, low disk, bookkeeping that
        cannot be written."""
        problems = []
        alive = sum(t.is_alive() for t in self._threads if t.name.startswith("rvmatte-worker"))
        if self._threads and alive < self.workers:
            problems.append(f"{self.workers - alive} of {self.workers} worker(s) stopped")
        try:
            free = self.free_bytes()
        except OSError as e:
            problems.append(f"the data directory cannot be read: {e.strerror}")
        else:
            if free < max(self.min_free_bytes, 1):
                problems.append(f"low disk: {free // 2**20} MB free, "
                                f"{self.min_free_bytes // 2**20} MB needed")
        if self.max_storage_bytes:
            stored = self.stored_bytes()
            if stored >= self.max_storage_bytes:
                problems.append(f"storage full: {stored // 2**20} MB stored, the limit is "
                                f"{self.max_storage_bytes // 2**20} MB")
        if self._unrecorded:
            problems.append(f"{len(self._unrecorded)} job result(s) not yet recorded "
                            f"({self.last_error})")
        return problems

    # -- life cycle ------------------------------------------------------------------------
    def start(self, warmup: Optional[Callable[[], None]] = None) -> None:
        """Start the workers (and the retention sweep). ``warmup`` (the model's preload), if
        given, runs first in a thread of its own, and the workers take jobs once it has ended:
        two models built at once in one process can collide (an ONNX export is not
        thread-safe), and the first job would only wait for the same build."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.resumed_at_start = self.store.requeue_interrupted()
        if self.resumed_at_start:
            log.info("resuming %d interrupted job(s)", len(self.resumed_at_start))
        self.clean_orphans()
        if warmup is None:
            self._ready.set()
        else:
            t = threading.Thread(target=self._warm, args=(warmup,), name="rvmatte-preload",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"rvmatte-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.retention_s > 0:
            t = threading.Thread(target=self._janitor, name="rvmatte-janitor", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers. Running jobs are cancelled and left queued, to resume later."""
        self._stopping.set()
        with self._cond:
            for r in self._running.values():
                r.cancel.set()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    # -- API used by the HTTP layer --------------------------------------------------------
    def submit(self, upload: dict[str, Any], options: dict[str, Any],
               owner: Optional[str] = None) -> dict[str, Any]:
        """Queue a job on ``upload``. ``owner``: who may list and delete it."""
        self.check_queue()
        job = self.store.add_job(id=new_id(), upload_id=upload["id"],
                                 filename=upload["filename"], options=options, owner=owner)
        with self._cond:
            self._cond.notify()
        return job

    def check_queue(self) -> None:
        """:class:`QueueFull` when ``max_queued`` jobs are waiting."""
        if self.store.count(st.QUEUED) >= self.max_queued:
            raise QueueFull(f"the queue is full ({self.max_queued} jobs waiting); "
                            "try again later")

    def delete_upload(self, upload: dict[str, Any], why: str) -> None:
        """Forget an upload and delete its file; ``why`` goes to the log."""
        self.store.delete_upload(upload["id"])
        self._remove_upload_file(upload, why)

    def delete_unused_upload(self, upload: dict[str, Any], why: str) -> bool:
        """:meth:`delete_upload` unless a queued or running job still needs it (False)."""
        if not self.store.delete_unused_upload(upload["id"]):
            return False
        self._remove_upload_file(upload, why)
        return True

    def _remove_upload_file(self, upload: dict[str, Any], why: str) -> None:
        (self.data_dir / upload["path"]).unlink(missing_ok=True)
        log.info("deleted upload %s (%s, %d bytes): %s", upload["id"], upload["filename"],
                 upload["size"], why)

    def delete(self, job_id: str, why: str = "deleted by request") -> bool:
        """Cancel (if running) and delete a job with its files. False if there is none."""
        job = self.store.get_job(job_id)
        if job is None:
            return False
        with self._cond:
            running = self._running.get(job_id)
            self.store.delete_job(job_id)
            log.info("deleted job %s (%s, %s): %s", job_id, job["filename"], job["state"], why)
            if running is not None:
                running.deleted = True       # the worker removes the files when it stops
                running.cancel.set()
                return True
        shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
        return True

    def clean_orphans(self) -> list[str]:
        """At start-up (no request or job is in flight yet): delete what a killed server
        left that no record needs -- uploads cut off mid-transfer (``*.part``) or never
        recorded, folders of deleted jobs, and the files of failed or cancelled jobs.
        Returns the paths deleted, each also logged with its reason."""
        known = {Path(u["path"]).name for u in self.store.list_uploads()}
        keep = {j["id"] for j in self.store.iter_jobs() if j["state"] not in
                (st.FAILED, st.CANCELLED)}
        gone = []
        for path in sorted(self.uploads_dir.iterdir()):
            if path.name not in known:
                why = ("an upload cut off mid-transfer" if path.suffix == ".part"
                       else "an upload the database does not know")
                _remove(path)
                gone.append(path)
                log.info("deleted %s at start-up: %s", path, why)
        for path in sorted(self.jobs_dir.iterdir()):
            if path.name not in keep:
                _remove(path)
                gone.append(path)
                log.info("deleted %s at start-up: the files of a deleted, failed or "
                         "cancelled job", path)
        return [str(p) for p in gone]

    def output_path(self, job: dict[str, Any], kind: str) -> Path | None:
        """The file of a finished job's output ``kind``, checked to lie in its directory."""
        raw = job["outputs"].get(kind)
        if raw is None:
            return None
        path = Path(raw).resolve()
        root = (self.jobs_dir / job["id"]).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def source_path(self, job: dict[str, Any]) -> Path | None:
        """The uploaded video of ``job``, if it is still there."""
        upload = self.store.get_upload(job["upload_id"])
        path = None if upload is None else self.data_dir / upload["path"]
        return path if path is not None and path.is_file() else None

    def spec_for(self, job: dict[str, Any]) -> JobSpec:
        """What the runner needs for ``job``: a job row, or any dict with its ``id``,
        ``upload_id`` and ``options`` (the preview's)."""
        opts = job["options"]
        upload = self.store.get_upload(job["upload_id"])
        if upload is None:
            raise InputError("the uploaded video of this job is gone")
        workdir = self.jobs_dir / job["id"]
        ext = FORMATS[opts["format"]]
        outputs = {k: workdir / f"{k}{ext}" for k in opts["outputs"]}
        bg = opts["background"]
        background = bg["spec"]
        if bg["kind"] == "image":
            background = str(self._image(opts, "background_upload", "background image"))
        mask = self._image(opts, "select_mask_upload", "selection mask")
        return JobSpec(id=job["id"], input=self.data_dir / upload["path"], outputs=outputs,
                       background=background, downsample_ratio=opts["ratio"], workdir=workdir,
                       stabilize=bool(opts.get("stabilize")),
                       foreground_estimation=opts.get("foreground_estimation"),
                       select=_selection(opts.get("select"), mask),
                       plate=self._image(opts, "plate_upload", "background plate"))

    def _image(self, opts: dict[str, Any], key: str, what: str) -> Optional[Path]:
        """The path of the uploaded image a job's option ``key`` names (None: not set)."""
        if not opts.get(key):
            return None
        img = self.store.get_upload(opts[key])
        if img is None:
            raise InputError(f"the {what} of this job is gone")
        return self.data_dir / img["path"]

    # -- workers ---------------------------------------------------------------------------
    def _warm(self, warmup: Callable[[], None]) -> None:
        try:
            warmup()
        finally:
            self._ready.set()

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                self._work_once()
            except Exception as e:  # bookkeeping failed (the database): never end the worker
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("worker: %s", self.last_error)
                self._stopping.wait(1.0)

    def _record_pending(self) -> None:
        """Write the final states that could not be written before."""
        for job_id, (state, kw) in list(self._unrecorded.items()):
            try:
                self.store.finish(job_id, state, **kw)
            except Exception as e:  # still cannot: health says so; tried again next round
                self.last_error = f"{type(e).__name__}: {e}"
                return
            del self._unrecorded[job_id]
            log.info("job %s: its end (%s) recorded now", job_id, state)

    def _finish(self, job_id: str, state: str, **kw: Any) -> None:
        """Record a job's end; if the database cannot be written now, later."""
        try:
            self.store.finish(job_id, state, **kw)
        except Exception as e:
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("job %s: its end (%s) could not be recorded yet: %s", job_id, state,
                      self.last_error)
            self._unrecorded[job_id] = (state, kw)

    def _work_once(self) -> None:
        if not self._ready.wait(0.2):
            return
        if self._unrecorded:
            self._record_pending()
        if self.min_free_bytes and self.free_bytes() < self.min_free_bytes:
            self._stopping.wait(1.0)  # no job starts on a full disk; health says why
            return
        with self._cond:
            job = None if self._stopping.is_set() else self.store.claim_next()
            if job is None:
                self._cond.wait(timeout=1.0)
                return
            running = self._running[job["id"]] = _Running()
        try:
            self._run(job, running)
        finally:
            with self._cond:
                self._running.pop(job["id"], None)
            if running.deleted:
                shutil.rmtree(self.jobs_dir / job["id"], ignore_errors=True)

    def _run(self, job: dict[str, Any], running: _Running) -> None:
        job_id = job["id"]
        last = [0.0]

        def progress(info: Any) -> None:
            now = time.monotonic()
            done, total = int(info.done), info.total
            if now - last[0] < 0.25 and not (total and done >= total):
                return  # at most a few database writes per second
            last[0] = now
            self.store.update_progress(job_id, done=done, total=total, fps=info.fps,
                                       eta=info.eta_seconds)

        try:
            task = self.spec_for(job)
            task.workdir.mkdir(parents=True, exist_ok=True)
            resume = job["attempts"] > 1
            log.info("job %s: %s (attempt %d)", job_id, "resuming" if resume else "starting",
                     job["attempts"])
            result = self.runner(task, progress=progress, cancel=running.cancel,
                                 resume=resume)
            outputs = getattr(result, "outputs", result)
            resumed_from = getattr(result, "resumed_from", None)
            self._finish(job_id, st.DONE, outputs={k: str(v) for k, v in outputs.items()},
                         resumed_from=resumed_from)
            log.info("job %s: done", job_id)
        except Cancelled:
            if running.deleted:
                return
            if self._stopping.is_set():
                self.store.requeue(job_id)  # the next start resumes it
                return
            self._finish(job_id, st.CANCELLED, error="cancelled")
            self._drop_files(job_id, "the job was cancelled")
        except RvmatteError as e:
            log.warning("job %s failed: %s", job_id, e)
            self._finish(job_id, st.FAILED, error=str(e))
            self._drop_files(job_id, "the job failed")
        except Exception as e:  # a bug, or the disk: record it, keep the worker alive
            log.exception("job %s crashed", job_id)
            error = (f"disk full ({e.strerror})" if isinstance(e, OSError) and e.errno == 28
                     else f"internal error: {type(e).__name__}: {e}")
            self._finish(job_id, st.FAILED, error=error)
            self._drop_files(job_id, "the job failed")

    def _drop_files(self, job_id: str, why: str) -> None:
        """A failed or cancelled job is not retried and has no results: its partial outputs
        and resume data go now, not at retention (its record stays until then)."""
        folder = self.jobs_dir / job_id
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            log.info("deleted the files of job %s: %s", job_id, why)

    # -- retention ---------------------------------------------------------------------
    def _janitor(self) -> None:
        while not self._stopping.wait(self.sweep_interval_s):
            try:
                self.sweep()
            except Exception:  # never let the janitor die
                log.exception("retention sweep failed")

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete finished jobs and unused uploads older than the retention time."""
        if self.retention_s <= 0:
            return {"jobs": 0, "uploads": 0}
        cutoff = (time.time() if now is None else now) - self.retention_s
        hours = f"{self.retention_s / 3600:g} h"
        jobs = 0
        for job in self.store.expired_jobs(cutoff):
            self.delete(job["id"], why=f"retention: {job['state']} more than {hours} ago")
            jobs += 1
        uploads = 0
        for up in self.store.unreferenced_uploads(cutoff):
            self.delete_upload(up, f"retention: unused for more than {hours}")
            uploads += 1
        for part in self.uploads_dir.glob("*.part"):  # uploads cut off mid-transfer
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    log.info("deleted %s: retention: an upload cut off more than %s ago",
                             part, hours)
            except FileNotFoundError:
                pass
        return {"jobs": jobs, "uploads": uploads}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class QueueFull(RvmatteError):
    """Too many jobs waiting."""


class StorageFull(RvmatteError):
    """Too little free disk, or the limit on stored bytes reached."""
