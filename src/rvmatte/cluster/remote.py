"""The Ray side: connecting, the remote tasks, and the progress hub. Imports Ray (the
``cluster`` extra); everything else in :mod:`rvmatte.cluster` imports this module only when a
cluster is used.

Each clip, part and join is a Ray *task* with declared resources (``num_cpus``,
``num_gpus``): Ray places one wherever those are free, so a GPU cluster runs one task per GPU
and a CPU node several. A task whose worker process dies (killed, out of memory, its node
gone) is submitted again by Ray up to ``max_retries`` times, on any node; the new attempt
resumes from the checkpoint the dead one left on the shared storage. A user's error is not
retried: it comes back as a failed record.

GPU conversions go instead to a pool of long-lived :class:`Converter` actors (one per GPU
share), which keep the loaded model from one clip to the next; a killed actor is restarted by
Ray and its call made again, resuming the same way.
"""

from __future__ import annotations

import logging
import os
import threading
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


@ray.remote
class Converter:
    """A long-lived worker of the actor pool: it converts clips and parts one after another in
    one process, which keeps its loaded model (:func:`rvmatte.cluster.work.session`) and, on a
    GPU, its CUDA context. Restarted by Ray when its process dies; the call it was running is
    then made again on the new process and resumes from the checkpoint."""

    def clip(self, job, hub, key):
        return _clip(job, hub, key)

    def part(self, job, plan, index, hub, key):
        return _part(job, plan, index, hub, key)


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
    again after its worker died (or its actor).

    actors: the conversions (clips and parts) go to a pool of at most that many
    :class:`Converter` actors, each holding its model from one clip to the next, instead of
    one task each; ``None``: a pool of one actor per GPU share (``gpus``) of the cluster for
    GPU tasks (a GPU task's process is not reused: each would load the model again), none
    for CPU tasks (whose processes Ray reuses anyway); 0: no pool."""

    def __init__(self, *, cpus: float = 1, gpus: float = 0, retries: int = 3,
                 actors: Optional[int] = None) -> None:
        self.hub = ProgressHub.options(scheduling_strategy=_here()).remote()
        heavy = dict(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)
        light = dict(num_cpus=min(1.0, cpus), num_gpus=0, max_retries=retries,
                     retry_exceptions=False)
        self.fns = {"clip": _CONVERT["clip", bool(gpus)].options(**heavy),
                    "part": _CONVERT["part", bool(gpus)].options(**heavy),
                    "plan": _plan.options(**light), "join": _join.options(**light)}
        self.refs: dict = {}
        self.pool = ActorPool(pool_size(actors, gpus),
                              dict(num_cpus=cpus, num_gpus=gpus, max_restarts=retries,
                                   max_task_retries=retries))

    def submit(self, tag: tuple, kind: str, *args: Any) -> None:
        if kind in ("clip", "part"):
            args = (*args, self.hub, key_of(tag))
            if self.pool.size:
                self.pool.submit(tag, kind, args)
                self._dispatch()
                return
        self.refs[self.fns[kind].remote(*args)] = tag

    def _dispatch(self) -> None:
        for ref, tag in self.pool.dispatch():
            self.refs[ref] = tag

    def pending(self) -> int:
        return len(self.refs) + self.pool.queued()

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
                self.pool.done(ref)
            except Exception as e:  # noqa: BLE001 - a worker that died too often, or a bug
                out.append((tag, e))
                self.pool.done(ref, lost=isinstance(e, ray.exceptions.RayActorError))
        self._dispatch()
        return out

    def running(self) -> dict:
        """The hub's view: ``{key: {"pid", "node", "done", "total", "fps"}}``."""
        try:
            return ray.get(self.hub.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort
            return {}

    def cancel(self) -> None:
        for ref in list(self.refs):
            if not self.pool.owns(ref):  # an actor's running call ends with its actor
                ray.cancel(ref)
        self.refs.clear()
        self.pool.close()

    def close(self) -> None:
        self.pool.close()
        try:
            ray.kill(self.hub)
        except Exception:  # noqa: BLE001 - already gone with the cluster
            pass


def pool_size(actors: Optional[int], gpus: float) -> int:
    """The actor pool's size (see :class:`RayExecutor`)."""
    if actors is not None:
        if isinstance(actors, bool) or int(actors) < 0:
            raise RvmatteError(f"invalid number of actors {actors!r}: 0 or more")
        return int(actors)
    if not gpus:
        return 0
    return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus))


class ActorPool:
    """At most ``size`` :class:`Converter` actors (made when work needs them), each running
    one conversion at a time; calls wait in a queue for a free actor. An actor lost for good
    (its restarts used up) is dropped; the next call makes a new one."""

    def __init__(self, size: int, options: dict) -> None:
        self.size, self.options = size, options
        self._lock = threading.Lock()
        self.idle: list = []
        self.actors: list = []
        self.busy: dict = {}   # ref -> actor
        self.waiting: list = []  # (tag, kind, args)

    def submit(self, tag: tuple, kind: str, args: tuple) -> None:
        self.waiting.append((tag, kind, args))

    def queued(self) -> int:
        return len(self.waiting)

    def owns(self, ref) -> bool:
        return ref in self.busy

    def dispatch(self) -> list:
        """Start waiting calls on free (or new) actors: ``[(ref, tag)]``."""
        started = []
        while self.waiting:
            actor = self.lease()
            if actor is None:
                break
            tag, kind, args = self.waiting.pop(0)
            ref = getattr(actor, kind).remote(*args)
            self.busy[ref] = actor
            started.append((ref, tag))
        return started

    def done(self, ref, lost: bool = False) -> None:
        actor = self.busy.pop(ref, None)
        if actor is not None:
            self._release(actor, lost)

    def _release(self, actor, lost: bool) -> None:
        """``actor`` is free again, or gone for good (killed: ``lost``)."""
        if actor not in self.actors:
            return
        if lost:
            self.actors.remove(actor)
            self._kill(actor)
        else:
            self.idle.append(actor)

    def close(self) -> None:
        for actor in self.actors:
            self._kill(actor)
        self.actors, self.idle, self.busy, self.waiting = [], [], {}, []

    # -- one call at a time from several threads (the server's workers) ----------------------
    def lease(self):
        """An actor for one call: an idle one, or a new one while the pool is not full; None
        when every actor is busy (the caller then runs a task instead). Thread-safe."""
        with self._lock:
            if self.idle:
                return self.idle.pop()
            if len(self.actors) < self.size:
                actor = Converter.options(**self.options).remote()
                self.actors.append(actor)
                return actor
            return None

    def give_back(self, actor, lost: bool = False) -> None:
        """The leased ``actor`` is free again, or gone for good (killed: ``lost``)."""
        with self._lock:
            self._release(actor, lost)

    @staticmethod
    def _kill(actor) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def key_of(tag: tuple) -> str:
    """The progress key of a task: the input, and ``#part<i>`` for a part."""
    return tag[1] if tag[0] == "clip" else f"{tag[1]}#part{tag[2]}"
