"""The Ray side: connecting, the remote tasks, and the progress hub. Imports Ray (the
``cluster`` extra); everything else in :mod:`rvmatte.cluster` imports this module only when a
cluster is used.

Each clip, part and join is a Ray *task* with declared resources (``num_cpus``,
``num_gpus``): Ray places one wherever those are free, so a GPU cluster runs one task per GPU
and a CPU node several. A task whose worker process dies (killed, out of memory, its node
gone) is submitted again by Ray up to ``max_retries`` times, on any node; the new attempt
resumes from the checkpoint the dead one left on the shared storage. A user's error is not
retried: it comes back as a failed record.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import ray

from ..errors import RvmatteError, one_line
from . import work

REPORT_EVERY_S = 0.5  # a task's progress reaches the driver at most this often


def connect(cluster: str, *, num_cpus: Optional[int] = None) -> bool:
    """Connect this process to ``cluster``: ``"local"`` (start a Ray instance on this machine,
    ``num_cpus`` CPUs: all by default), ``"auto"`` (the cluster this machine belongs to, or
    ``$RAY_ADDRESS``), ``"ray://HOST:PORT"`` (Ray Client) or ``"HOST:PORT"`` (a head's GCS
    address). Keeps a connection this process already has. Returns whether Ray was started
    or connected here (the caller then disconnects)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True)
    try:
        if cluster == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
        else:
            ray.init(address=cluster, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = ("start one with `ray start --head` (docs/CLUSTER.md), or use --cluster local"
                if cluster == "auto" else "is its head running and reachable?")
        raise RvmatteError(f"cannot connect to the Ray cluster {cluster!r}: {one_line(e)}; "
                           f"{hint}") from None
    return True


def disconnect() -> None:
    ray.shutdown()


@ray.remote(num_cpus=0)
class ProgressHub:
    """Where running tasks report their frames (and their worker's pid and node); the driver
    reads it to aggregate progress. One per batch; holds no resources."""

    def __init__(self) -> None:
        self.tasks: dict = {}

    def update(self, key: str, state: dict) -> None:
        self.tasks[key] = state

    def snapshot(self) -> dict:
        return dict(self.tasks)


class _Reporter:
    """A task's progress callback: ``(done, total, fps)`` to the hub, at most every
    :data:`REPORT_EVERY_S` (and at once the first time, with this worker's pid and node)."""

    def __init__(self, hub, key: str) -> None:
        self.hub, self.key, self.last = hub, key, 0.0
        self.who = {"pid": os.getpid(), "node": _node(), "attempt": time.time()}
        self.send(0, None, 0.0, force=True)

    def send(self, done: int, total: Optional[int], fps: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= REPORT_EVERY_S or (total and done >= total):
            self.last = now
            self.hub.update.remote(self.key, {**self.who, "done": done, "total": total,
                                              "fps": fps})

    def __call__(self, done: int, total: Optional[int], fps: float) -> None:
        self.send(done, total, fps)


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


def _clip(job, hub, key):
    return {**work.convert_clip(job, _Reporter(hub, key)), "ray_node": _node()}


def _part(job, plan, index, hub, key):
    return {**work.convert_part(job, plan, index, _Reporter(hub, key)), "ray_node": _node()}


@ray.remote
def _plan(job, count, seconds, warmup):
    return work.plan_clip_split(job, count=count, seconds=seconds, warmup=warmup)


@ray.remote
def _join(job, plan):
    return work.join_parts(job, plan)


# A CPU worker process is reused by the next task (max_calls=0) and keeps its loaded model
# (rvmatte.cluster.work.session). A GPU task gets a fresh process (Ray's default for GPU
# tasks): a process keeps the GPU it first initialised CUDA on, and the next task may be
# given another one.
_CONVERT = {(name, gpu): ray.remote(max_calls=1 if gpu else 0)(fn)
            for name, fn in (("clip", _clip), ("part", _part)) for gpu in (False, True)}


def _here():
    """The driver's node, softly (a worker node leaving then does not take the batch's
    progress along); Ray's default where the driver is not a node (Ray Client)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return NodeAffinitySchedulingStrategy(_node(), soft=True)
    except Exception:  # noqa: BLE001 - no node id here (a Ray Client driver)
        return "DEFAULT"


class RayExecutor:
    """Submits the batch's tasks to Ray and hands back their results as they finish.

    cpus / gpus: resources of each conversion task (plans and joins, which only read
    timestamps or remux, take at most one CPU and no GPU). retries: how often Ray runs a task
    again after its worker died."""

    def __init__(self, *, cpus: float = 1, gpus: float = 0, retries: int = 3) -> None:
        self.hub = ProgressHub.options(scheduling_strategy=_here()).remote()
        heavy = dict(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)
        light = dict(num_cpus=min(1.0, cpus), num_gpus=0, max_retries=retries,
                     retry_exceptions=False)
        self.fns = {"clip": _CONVERT["clip", bool(gpus)].options(**heavy),
                    "part": _CONVERT["part", bool(gpus)].options(**heavy),
                    "plan": _plan.options(**light), "join": _join.options(**light)}
        self.refs: dict = {}

    def submit(self, tag: tuple, kind: str, *args: Any) -> None:
        if kind in ("clip", "part"):
            args = (*args, self.hub, key_of(tag))
        self.refs[self.fns[kind].remote(*args)] = tag

    def pending(self) -> int:
        return len(self.refs)

    def wait(self, timeout: float) -> list:
        """``[(tag, result or exception)]`` of the tasks that finished (waits up to
        ``timeout`` seconds for the first)."""
        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        out = []
        for ref in ready:
            tag = self.refs.pop(ref)
            try:
                out.append((tag, ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - a worker that died too often, or a bug
                out.append((tag, e))
        return out

    def running(self) -> dict:
        """The hub's view: ``{key: {"pid", "node", "done", "total", "fps"}}``."""
        try:
            return ray.get(self.hub.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort
            return {}

    def cancel(self) -> None:
        for ref in list(self.refs):
            ray.cancel(ref)
        self.refs.clear()

    def close(self) -> None:
        try:
            ray.kill(self.hub)
        except Exception:  # noqa: BLE001 - already gone with the cluster
            pass


def key_of(tag: tuple) -> str:
    """The progress key of a task: the input, and ``#part<i>`` for a part."""
    return tag[1] if tag[0] == "clip" else f"{tag[1]}#part{tag[2]}"
