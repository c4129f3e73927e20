"""A job runner for ``rvmatte serve --cluster``: each server job converted as a Ray task.

The server's job queue calls a *runner* for each job (``ServerConfig.runner``;
:class:`rvmatte.server.jobs.Runner`): ``runner(job, progress=, cancel=, resume=)`` returns an
object with ``.outputs``. :class:`ClusterRunner` is one that sends the job to a Ray cluster
instead of converting it in the server's process; the server keeps its SQLite job records, its
API and its resume-after-restart as they are. The server's data folder must be on storage
every node sees. This module does not import the server (the CLI hands the runner over).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from ..errors import Cancelled, RvmatteError
from ..inference.pipeline import ProgressInfo
from ..spec import ModelSpec
from . import work
from .driver import _crash_line, _task_spec, load_remote

KINDS = ("composite", "alpha", "foreground")


class ClusterRunner:
    """Converts a server job (:class:`rvmatte.server.jobs.JobSpec`: ``input``, ``outputs``,
    ``background``, ``downsample_ratio``) as a task of ``cluster`` (see
    :func:`rvmatte.cluster.convert_many`), with the server's model ``spec``."""

    def __init__(self, spec: ModelSpec, *, cluster: str = "auto", cpus_per_task: float = 1,
                 gpus_per_task: float = 0, checkpoint_frames: Optional[int] = None,
                 max_retries: int = 3, actors: Optional[int] = None) -> None:
        self.spec = _task_spec(ModelSpec.of(spec), cpus_per_task, gpus_per_task)
        self.cluster, self.checkpoint_frames = cluster, checkpoint_frames
        self.resources = dict(cpus=cpus_per_task, gpus=gpus_per_task, retries=max_retries,
                              actors=actors)
        self._lock = threading.Lock()
        self._ex = None
        self._started = False

    def connect(self):
        """Connect to the cluster (once; the first job does it if nobody did before)."""
        with self._lock:
            if self._ex is None:
                remote = load_remote()
                self._started = remote.connect(self.cluster)
                self._ex = remote.RayExecutor(**self.resources)
            return self._ex

    def close(self) -> None:
        with self._lock:
            if self._ex is not None:
                self._ex.close()
                if self._started:
                    load_remote().disconnect()
            self._ex = None

    def job(self, job: Any) -> work.ClipJob:
        """The cluster task's view of a server job."""
        spec = self.spec
        if str(job.downsample_ratio) != "auto":
            spec = spec.replace(downsample=float(job.downsample_ratio))
        options: dict = {"background": job.background}
        # the quality, selection and plate options, where the job has them
        if getattr(job, "stabilize", False):
            options["stabilize"] = True
        if getattr(job, "foreground_estimation", None) is not None:
            options["refine_foreground"] = bool(job.foreground_estimation)
        select, plate = getattr(job, "select", None), getattr(job, "plate", None)
        if select is not None:
            options["select"] = select if select.mask is None else replace(
                select, mask=os.path.abspath(select.mask))
        if plate:
            options["background_plate"] = os.path.abspath(plate)
        if self.checkpoint_frames is not None:
            options["segment_frames"] = self.checkpoint_frames
        outputs = [(k, os.path.abspath(job.outputs[k])) for k in KINDS
                   if job.outputs.get(k) is not None]  # a worker's working folder is not ours
        return work.ClipJob(os.path.abspath(job.input), outputs, spec, options=options,
                            overwrite=True)

    def __call__(self, job: Any, *, progress=None, cancel: Optional[threading.Event] = None,
                 resume: bool = False) -> Any:
        import ray

        ex = self.connect()
        clip = self.job(job)
        clip.markers = work.write_markers({str(Path(p).parent) for _, p in clip.outputs},
                                          uuid.uuid4().hex)
        key = f"server:{job.id}:{time.time()}"
        # on an actor of the pool (GPU jobs: the model stays loaded), else as a task
        actor = ex.pool.lease() if ex.pool.size else None
        lost = False
        try:
            ref = (actor.clip if actor is not None else ex.fns["clip"]).remote(clip, ex.hub, key)
            rec = self._wait(ray, ex, ref, key, progress, cancel, actor=actor)
        except BaseException:
            lost = True  # cancelled (its call cannot be stopped but with it) or died
            raise
        finally:
            if actor is not None:
                ex.pool.give_back(actor, lost=lost)
            work.remove_markers(clip.markers)
        if rec["status"] == "failed":
            raise RvmatteError(rec["error"])
        if progress is not None:  # the last report may not have reached the hub in time
            progress(ProgressInfo(rec["frames"], rec["frames"], float(rec.get("fps") or 0.0),
                                  0.0))
        return SimpleNamespace(outputs=rec["outputs"], resumed_from=rec.get("resumed_from"),
                               frames=rec["frames"], record=rec)

    @staticmethod
    def _wait(ray, ex, ref, key: str, progress, cancel, actor=None) -> dict:
        last = None
        while True:
            if cancel is not None and cancel.is_set():
                if actor is None:
                    ray.cancel(ref)
                raise Cancelled("job cancelled")  # an actor's call ends with its actor
            ready, _ = ray.wait([ref], timeout=0.25)
            if ready:
                try:
                    return ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died too often, or a bug
                    raise RvmatteError(_crash_line(e)) from None
            state = ex.running().get(key)
            if progress is not None and state and state != last:
                last = state
                done, total, fps = int(state["done"]), state.get("total"), float(state["fps"])
                eta = (total - done) / fps if (total and fps > 0 and total >= done) else None
                progress(ProgressInfo(done, total, fps, eta))
