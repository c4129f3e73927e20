"""SQLite persistence for uploads and jobs.

One small database file in the server's data directory. Every method opens its own short
transaction under a lock, so the store can be shared by the HTTP handlers and the worker
threads. Rows are returned as plain dicts (JSON columns decoded).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import OutputError

# Job states. "running" rows found at start-up belong to a server that died mid-job: they go
# back to "queued" and are resumed from the pipeline's checkpoint.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED_STATES = (DONE, FAILED, CANCELLED)
# The job options that name an uploaded image the job needs (beside its video, ``upload_id``):
# a background image, a clean background plate, a mask of the people to keep.
IMAGE_UPLOADS = ("background_upload", "plate_upload", "select_mask_upload")


def _uses(upload: str, jobs: str = "") -> str:
    """SQL: a job (table alias ``jobs``) names ``upload`` (``?`` or a column) among its
    image options."""
    return " OR ".join(f"json_extract({jobs}options, '$.{k}') = {upload}"
                       for k in IMAGE_UPLOADS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,          -- 'video' | 'image'
    path        TEXT NOT NULL,          -- server-chosen name inside the data directory
    filename    TEXT NOT NULL,          -- the client's name, sanitised, for display only
    size        INTEGER NOT NULL,
    info        TEXT NOT NULL,          -- JSON: width, height, frames, fps, ...
    created_at  REAL NOT NULL,
    owner       TEXT                    -- as jobs.owner: who may delete it
);
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    upload_id    TEXT NOT NULL,
    filename     TEXT NOT NULL,
    options      TEXT NOT NULL,         -- JSON: outputs, background, format, ratio
    outputs      TEXT NOT NULL,         -- JSON: kind -> path, filled when done
    done_frames  INTEGER NOT NULL DEFAULT 0,
    total_frames INTEGER,
    fps          REAL,
    eta_seconds  REAL,
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,  -- times started (> 1: resume)
    resumed_from INTEGER,               -- frame the last (successful) run started at
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    owner        TEXT,                  -- sha256 of the browser's owner key; NULL: API clients
    interruptions INTEGER NOT NULL DEFAULT 0  -- times the server died during it (not stops)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
"""
# Older databases gain the newer columns in place: owners (NULL: made by API clients) and the
# count of unclean deaths (0: what counted before was every start, graceful stops included).
_MIGRATIONS = (("jobs", "owner", "ALTER TABLE jobs ADD COLUMN owner TEXT"),
               ("jobs", "interruptions",
                "ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0"),
               ("uploads", "owner", "ALTER TABLE uploads ADD COLUMN owner TEXT"))
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created_at)"

# ``list_jobs(owner=ANY_OWNER)``: every job, whoever made it (the server token's view).
ANY_OWNER = object()

_JSON_COLUMNS = ("info", "options", "outputs")


def open_data_dir(path: str | Path) -> Path:
    """The server's data directory, created if missing and checked to be a folder this
    process can write (a file there, a read-only disk, no permission: one line,
    :class:`~rvmatte.errors.OutputError`, before the server starts). Returns it resolved."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"--data-dir {p} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        # try it: permission bits say little about read-only mounts, ACLs or root
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise OutputError(f"--data-dir {p} cannot be used: "
                          f"{e.strerror or type(e).__name__}") from None
    return p.resolve()


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    d = dict(row)
    for key in _JSON_COLUMNS:
        if key in d and d[key] is not None:
            d[key] = json.loads(d[key])
    return d


class JobStore:
    """Uploads and jobs in one SQLite file (``path``; ``":memory:"`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        for table, column, sql in _MIGRATIONS:
            columns = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(sql)
        self._db.execute(_OWNER_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------
    def _one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        with self._lock:
            return _row(self._db.execute(sql, args).fetchone())

    def _all(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, args).fetchall()]  # type: ignore[misc]

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- uploads -------------------------------------------------------------------------
    def add_upload(self, *, id: str, kind: str, path: str, filename: str, size: int,
                   info: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
        self._exec("INSERT INTO uploads (id, kind, path, filename, size, info, created_at,"
                   " owner) VALUES (?,?,?,?,?,?,?,?)",
                   (id, kind, path, filename, size, json.dumps(info), time.time(), owner))
        return self.get_upload(id)  # type: ignore[return-value]

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM uploads WHERE id=?", (upload_id,))

    def delete_upload(self, upload_id: str) -> None:
        self._exec("DELETE FROM uploads WHERE id=?", (upload_id,))

    def list_uploads(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM uploads")

    def delete_unused_upload(self, upload_id: str) -> bool:
        """Delete the upload's row unless a queued or running job still needs it (then
        False); one transaction, so no job can claim it in between."""
        with self._lock:
            if self._db.execute(
                    f"SELECT 1 FROM jobs WHERE state IN (?,?) AND (upload_id=? OR {_uses('?')})"
                    " LIMIT 1", (QUEUED, RUNNING, upload_id, *[upload_id] * len(IMAGE_UPLOADS))
                    ).fetchone():
                return False
            self._db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))
            return True

    def unreferenced_uploads(self, older_than: float) -> list[dict[str, Any]]:
        """Uploads created before ``older_than`` that no job still needs."""
        return self._all(
            "SELECT * FROM uploads u WHERE created_at < ? AND NOT EXISTS ("
            f" SELECT 1 FROM jobs j WHERE j.upload_id = u.id OR {_uses('u.id', 'j.')})",
            (older_than,))

    # -- jobs ----------------------------------------------------------------------------
    def add_job(self, *, id: str, upload_id: str, filename: str,
                options: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
        """A queued job. ``owner``: who may list and delete it (None: API clients)."""
        self._exec(
            "INSERT INTO jobs (id, state, upload_id, filename, options, outputs, created_at,"
            " owner) VALUES (?,?,?,?,?,?,?,?)",
            (id, QUEUED, upload_id, filename, json.dumps(options), "{}", time.time(), owner))
        return self.get_job(id)  # type: ignore[return-value]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def list_jobs(self, limit: int = 100, owner: Any = ANY_OWNER) -> list[dict[str, Any]]:
        """Jobs, newest first: every job (``ANY_OWNER``), or those of one ``owner`` (None:
        the jobs made without an owner)."""
        if owner is ANY_OWNER:
            return self._all("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return self._all("SELECT * FROM jobs WHERE owner IS ? ORDER BY created_at DESC"
                         " LIMIT ?", (owner, limit))

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state=?",
                                    (state,)).fetchone()[0]

    def claim_next(self) -> dict[str, Any] | None:
        """Atomically move the oldest queued job to ``running`` and return it."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE state=? ORDER BY created_at LIMIT 1",
                (QUEUED,)).fetchone()
            if row is None:
                return None
            # a restart shows no progress or speed of the run before until its own
            self._db.execute(
                "UPDATE jobs SET state=?, attempts=attempts+1, started_at=?, error=NULL,"
                " done_frames=0, fps=NULL, eta_seconds=NULL WHERE id=?",
                (RUNNING, time.time(), row["id"]))
            return self.get_job(row["id"])

    def requeue_interrupted(self, max_interruptions: int = 3) -> list[str]:
        """At start-up: jobs left ``running`` died with the server (a graceful stop requeues
        its jobs itself): they go back to the queue, unless the server has now died during
        them ``max_interruptions`` times (then they fail: a job that keeps killing the server
        must not do so forever). Returns the re-queued ids."""
        with self._lock:
            rows = self._db.execute("SELECT id, interruptions FROM jobs WHERE state=?",
                                    (RUNNING,)).fetchall()
            ids = []
            for r in rows:
                n = r["interruptions"] + 1
                if n >= max_interruptions:
                    self._db.execute(
                        "UPDATE jobs SET state=?, error=?, finished_at=?, interruptions=?,"
                        " fps=NULL, eta_seconds=NULL WHERE id=?",
                        (FAILED, f"the server stopped during this job {n} times; giving up",
                         time.time(), n, r["id"]))
                else:
                    self._db.execute("UPDATE jobs SET state=?, interruptions=?, fps=NULL,"
                                     " eta_seconds=NULL WHERE id=?", (QUEUED, n, r["id"]))
                    ids.append(r["id"])
            return ids

    def requeue(self, job_id: str) -> None:
        """A running job back to the queue (a graceful stop): not an interruption."""
        self._exec("UPDATE jobs SET state=?, fps=NULL, eta_seconds=NULL WHERE id=? AND state=?",
                   (QUEUED, job_id, RUNNING))

    def update_progress(self, job_id: str, *, done: int, total: int | None,
                        fps: float | None, eta: float | None) -> None:
        self._exec("UPDATE jobs SET done_frames=?, total_frames=?, fps=?, eta_seconds=?"
                   " WHERE id=? AND state=?", (done, total, fps, eta, job_id, RUNNING))

    def finish(self, job_id: str, state: str, *, outputs: dict[str, str] | None = None,
               error: str | None = None, resumed_from: int | None = None) -> None:
        assert state in FINISHED_STATES
        with self._lock:
            if resumed_from is not None:
                self._db.execute("UPDATE jobs SET resumed_from=? WHERE id=?",
                                 (int(resumed_from), job_id))
            if outputs is not None:
                self._db.execute("UPDATE jobs SET outputs=? WHERE id=?",
                                 (json.dumps(outputs), job_id))
            self._db.execute(
                "UPDATE jobs SET state=?, error=?, finished_at=?, eta_seconds=?"
                " WHERE id=?", (state, error, time.time(),
                                0.0 if state == DONE else None, job_id))
            if state == DONE:
                self._db.execute("UPDATE jobs SET done_frames=COALESCE(total_frames,"
                                 " done_frames) WHERE id=?", (job_id,))

    def delete_job(self, job_id: str) -> None:
        self._exec("DELETE FROM jobs WHERE id=?", (job_id,))

    def expired_jobs(self, older_than: float) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM jobs WHERE state IN (?,?,?) AND finished_at < ?",
                         (*FINISHED_STATES, older_than))

    def iter_jobs(self) -> Iterator[dict[str, Any]]:
        yield from self._all("SELECT * FROM jobs")
