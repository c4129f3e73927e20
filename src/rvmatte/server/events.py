"""Progress pushed as server-sent events (``text/event-stream``), instead of polling.

Two streams, both written from the job store (the workers already record progress there a
few times a second):

* :func:`job_events`, ``GET /api/jobs/{id}/events``: ``job`` events with the job's JSON
  each time it changes, ending after the job has finished (``deleted`` if it is deleted).
* :func:`list_events`, ``GET /api/events``: the jobs a request may list. First a
  ``snapshot`` (``{"jobs": [...]}``, as ``GET /api/jobs``), then a ``job`` event for every job
  that appears or changes and a ``deleted`` event (``{"id": ...}``) for every job that goes.

A comment line is sent every :data:`HEARTBEAT_S` seconds of quiet so that proxies keep the
connection open. Both end when ``closing`` is set (the server is stopping: open pages must
not hold its shutdown up); clients reconnect.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, AsyncIterator, Optional

from . import store as st
from .responses import job_json

INTERVAL_S = 0.5     # how often the store is read for changes
HEARTBEAT_S = 15.0
RETRY_MS = 2000      # the client's reconnection delay
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any) -> str:
    """One event in the text/event-stream format."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Beat:
    """Says when a heartbeat is due (nothing sent for :data:`HEARTBEAT_S`)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def sent(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last < HEARTBEAT_S:
            return False
        self.sent()
        return True


async def job_events(store: st.JobStore, job_id: str, interval: float = INTERVAL_S,
                     closing: Optional[threading.Event] = None) -> AsyncIterator[str]:
    """The events of one job until it has finished or gone."""
    closing = closing or threading.Event()
    yield f"retry: {RETRY_MS}\n\n"
    last = None
    beat = _Beat()
    while not closing.is_set():
        job = store.get_job(job_id)
        if job is None:
            yield sse("deleted", {"id": job_id})
            return
        data = job_json(job)
        if data != last:
            yield sse("job", data)
            last = data
            beat.sent()
        elif beat.due():
            yield ": keep-alive\n\n"
        if job["state"] in st.FINISHED_STATES:
            return
        await asyncio.sleep(interval)


async def list_events(store: st.JobStore, owner: Any, limit: int = 100,
                      interval: float = INTERVAL_S,
                      closing: Optional[threading.Event] = None) -> AsyncIterator[str]:
    """A snapshot of the jobs of ``owner`` (as in :meth:`JobStore.list_jobs`), then their
    changes, until the client goes away."""
    closing = closing or threading.Event()
    yield f"retry: {RETRY_MS}\n\n"
    seen = {j["id"]: job_json(j) for j in store.list_jobs(limit, owner=owner)}
    yield sse("snapshot", {"jobs": list(seen.values())})
    beat = _Beat()
    while not closing.is_set():
        await asyncio.sleep(interval)
        if closing.is_set():
            return
        now = {j["id"]: job_json(j) for j in store.list_jobs(limit, owner=owner)}
        changes = [sse("deleted", {"id": i}) for i in seen if i not in now]
        # oldest first, so a client that prepends new jobs keeps the newest on top
        changes += [sse("job", data) for i, data in reversed(now.items())
                    if seen.get(i) != data]
        seen = now
        if changes:
            yield "".join(changes)
            beat.sent()
        elif beat.due():
            yield ": keep-alive\n\n"
