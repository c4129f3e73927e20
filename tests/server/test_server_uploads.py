"""Uploads and the server's housekeeping (issue 23): deleting uploads through the API, the
limit on stored bytes, uploads off the event loop, graceful stops that do not count as
interruptions, progress reset on a restart, and every deletion logged with its reason."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from server_helpers import CopyRunner, orphans, wait_state
from rvmatte.server import store as st

OWNER = {"X-Rvmatte-Owner": "a" * 24}
OTHER = {"X-Rvmatte-Owner": "b" * 24}


def upload(client, clip: Path, headers=None, kind="video"):
    return client.post("/api/uploads", files={"file": ("clip.mp4", clip.read_bytes())},
                       data={"kind": kind}, headers=headers or {})


def error_of(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]


# -- DELETE /api/uploads/{id} ---------------------------------------------------------------
def test_delete_upload_follows_the_owner_rules(make_client, clip):
    c = make_client(CopyRunner())
    mine = upload(c, clip, OWNER).json()
    anon = upload(c, clip).json()
    path = c.app.state.manager.data_dir / c.app.state.store.get_upload(mine["id"])["path"]
    assert path.is_file()
    # another key, or no key, does not see it (404); the bad id and the unknown id are 404
    assert error_of(c.delete(f"/api/uploads/{mine['id']}", headers=OTHER), 404)["code"] == \
        "not_found"
    error_of(c.delete(f"/api/uploads/{mine['id']}"), 404)
    error_of(c.delete("/api/uploads/..%2Fjobs.sqlite3"), 404)
    error_of(c.delete(f"/api/uploads/{'0' * 32}"), 404)
    assert c.delete(f"/api/uploads/{mine['id']}", headers=OWNER).json() == \
        {"id": mine["id"], "deleted": True}
    assert not path.exists()
    error_of(c.get(f"/api/uploads/{mine['id']}"), 404)
    # an upload made without a key is deleted without one, not with someone's key
    error_of(c.delete(f"/api/uploads/{anon['id']}", headers=OWNER), 404)
    assert c.delete(f"/api/uploads/{anon['id']}").status_code == 200
    assert orphans(c.app.state.manager.data_dir) == []


def test_delete_upload_with_the_server_token(make_client, clip):
    c = make_client(CopyRunner(), token="secret")
    auth = {"Authorization": "Bearer secret"}
    up = upload(c, clip, {**auth, **OWNER}).json()
    error_of(c.delete(f"/api/uploads/{up['id']}"), 401)
    assert c.delete(f"/api/uploads/{up['id']}", headers=auth).status_code == 200


def test_an_upload_in_use_is_not_deleted(make_client, clip, png_bytes):
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate))
    video = upload(c, clip).json()
    image = c.post("/api/uploads", files={"file": ("bg.png", png_bytes)},
                   data={"kind": "image"}).json()
    first = c.post("/api/jobs", data={"upload_id": video["id"]}).json()
    second = c.post("/api/jobs", data={"upload_id": video["id"], "background": "image",
                                       "background_upload": image["id"]}).json()
    wait_state(c, first["id"], states=("running",))
    for up in (video, image):  # used by a running and by a queued job
        assert error_of(c.delete(f"/api/uploads/{up['id']}"), 409)["code"] == "in_use"
    gate.set()
    for job in (first, second):
        assert wait_state(c, job["id"])["state"] == "done"
    for up in (video, image):  # the jobs have ended: their results stay, the upload goes
        assert c.delete(f"/api/uploads/{up['id']}").status_code == 200
    assert c.get(f"/api/jobs/{first['id']}/result").status_code == 200
    assert error_of(c.get(f"/api/jobs/{first['id']}/source"), 404)
    assert orphans(c.app.state.manager.data_dir) == []


# -- the limit on stored bytes ----------------------------------------------------------------
def test_storage_limit_refuses_uploads_until_something_is_deleted(make_client, clip):
    size = clip.stat().st_size
    c = make_client(CopyRunner(), max_storage_bytes=int(size * 2.5), min_free_bytes=0)
    job = c.post("/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())}).json()
    assert wait_state(c, job["id"])["state"] == "done"  # upload + its copy: 2 sizes stored
    assert c.get("/api/health").json()["status"] == "ok"
    refused = upload(c, clip)
    err = error_of(refused, 507)
    assert err["code"] == "insufficient_storage" and "storage is full" in err["message"]
    assert error_of(c.post("/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())}),
                    507)["code"] == "insufficient_storage"
    assert c.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]  # nothing else made
    # the limit reached: health says so
    c.app.state.manager.max_storage_bytes = size * 2
    health = c.get("/api/health")
    assert health.status_code == 503 and "storage full" in " ".join(health.json()["problems"])
    c.app.state.manager.max_storage_bytes = int(size * 2.5)
    assert c.delete(f"/api/jobs/{job['id']}").status_code == 200
    assert upload(c, clip).status_code == 201
    assert orphans(c.app.state.manager.data_dir) == []


def test_cli_storage_limit_is_checked():
    from rvmatte.cli import main

    assert main(["serve", "--max-storage-mb", "-1"]) != 0


# -- uploads off the event loop ---------------------------------------------------------------
def test_health_answers_while_an_upload_is_streamed_and_stored(make_server, clip,
                                                               monkeypatch):
    """A slow client sends its upload in pieces; the server then checks the file (held here
    in the check until the test lets it go). /api/health answers at both times: neither the
    transfer nor the storing holds the event loop."""
    from rvmatte.server import media

    probing, release = threading.Event(), threading.Event()
    real_probe = media.probe_video

    def held_probe(path):
        probing.set()
        assert release.wait(30), "the test did not release the upload"
        return real_probe(path)

    monkeypatch.setattr(media, "probe_video", held_probe)
    srv = make_server(CopyRunner())
    boundary = "rvmatteboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    data = clip.read_bytes()
    during: list[int] = []

    def body():
        yield head + data[:len(data) // 2]
        # the upload is in flight: another request is answered meanwhile
        during.append(httpx.get(f"{srv.url}/api/health", timeout=10).status_code)
        yield data[len(data) // 2:] + tail

    result: dict = {}

    def send():
        result["r"] = httpx.post(f"{srv.url}/api/uploads", content=body(), timeout=60,
                                 headers={"Content-Type":
                                          f"multipart/form-data; boundary={boundary}"})

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert probing.wait(30)
        # the upload is being stored: health and the job list still answer
        assert httpx.get(f"{srv.url}/api/health", timeout=10).status_code == 200
        assert httpx.get(f"{srv.url}/api/jobs", timeout=10).status_code == 200
        assert "r" not in result  # the upload has not been answered yet
    finally:
        release.set()
        sender.join(60)
    assert during == [200]
    assert result["r"].status_code == 201, result["r"].text


# -- graceful stops, progress, the logs -------------------------------------------------------
def _job(store, i):
    return store.add_job(id=f"{i:032x}", upload_id="u" * 32, filename=f"{i}.mp4",
                         options={"outputs": ["composite"], "background_upload": None})


def test_graceful_stops_do_not_count_as_interruptions(tmp_path):
    store = st.JobStore(tmp_path / "jobs.sqlite3")
    job = _job(store, 1)
    for attempt in range(1, 6):  # started and stopped gracefully five times
        assert store.claim_next()["attempts"] == attempt
        store.requeue(job["id"])
        assert store.requeue_interrupted() == []
    assert store.get_job(job["id"])["state"] == st.QUEUED
    for n in (1, 2):  # then the server dies during it twice: still resumed
        store.claim_next()
        assert store.requeue_interrupted() == [job["id"]]
    store.claim_next()  # and a third time: it gives up
    assert store.requeue_interrupted() == []
    failed = store.get_job(job["id"])
    assert failed["state"] == st.FAILED and "3 times" in failed["error"]
    assert failed["attempts"] == 8 and failed["interruptions"] == 3
    store.close()


def test_a_restarted_job_shows_no_old_progress(tmp_path):
    store = st.JobStore(tmp_path / "jobs.sqlite3")
    job = _job(store, 1)
    store.claim_next()
    store.update_progress(job["id"], done=8, total=16, fps=5.0, eta=1.6)
    store.requeue(job["id"])
    queued = store.get_job(job["id"])
    assert queued["fps"] is None and queued["eta_seconds"] is None
    again = store.claim_next()
    assert (again["done_frames"], again["fps"], again["eta_seconds"]) == (0, None, None)
    store.update_progress(job["id"], done=9, total=16, fps=5.0, eta=1.4)
    store.close()
    killed = st.JobStore(tmp_path / "jobs.sqlite3")  # the server died during it
    killed.requeue_interrupted()
    assert killed.get_job(job["id"])["eta_seconds"] is None
    assert killed.claim_next()["done_frames"] == 0
    killed.close()


def test_an_older_database_gains_the_new_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
    CREATE TABLE uploads (id TEXT PRIMARY KEY, kind TEXT NOT NULL, path TEXT NOT NULL,
        filename TEXT NOT NULL, size INTEGER NOT NULL, info TEXT NOT NULL,
        created_at REAL NOT NULL);
    CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, upload_id TEXT NOT NULL,
        filename TEXT NOT NULL, options TEXT NOT NULL, outputs TEXT NOT NULL,
        done_frames INTEGER NOT NULL DEFAULT 0, total_frames INTEGER, fps REAL,
        eta_seconds REAL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        resumed_from INTEGER, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        owner TEXT);
    INSERT INTO uploads VALUES ('u', 'video', 'uploads/u.mp4', 'u.mp4', 1, '{}', 1.0);
    INSERT INTO jobs (id, state, upload_id, filename, options, outputs, attempts, created_at)
        VALUES ('j', 'running', 'u', 'u.mp4', '{}', '{}', 2, 1.0);
    """)
    db.commit()
    db.close()
    store = st.JobStore(path)
    assert store.get_upload("u")["owner"] is None
    assert store.get_job("j")["interruptions"] == 0
    assert store.requeue_interrupted() == ["j"]  # counted from now on
    store.close()


def test_deletions_are_logged_with_their_reason(make_client, clip, caplog):
    c = make_client(CopyRunner(), retention_s=3600)
    manager = c.app.state.manager
    kept = wait_state(c, c.post("/api/jobs", files={"file": ("a.mp4", clip.read_bytes())})
                      .json()["id"])
    gone = wait_state(c, c.post("/api/jobs", files={"file": ("b.mp4", clip.read_bytes())})
                      .json()["id"])
    spare = upload(c, clip).json()
    with caplog.at_level(logging.INFO, logger="rvmatte.server"):
        c.delete(f"/api/jobs/{gone['id']}")
        c.delete(f"/api/uploads/{spare['id']}")
        assert manager.sweep(now=time.time() + 7200) == {"jobs": 1, "uploads": 2}
    lines = [r.getMessage() for r in caplog.records if r.name == "rvmatte.server"]
    assert any(gone["id"] in m and "deleted by request" in m for m in lines), lines
    assert any(spare["id"] in m and "deleted by request" in m for m in lines), lines
    assert any(kept["id"] in m and "retention" in m for m in lines), lines
    assert sum("deleted upload" in m and "retention: unused" in m for m in lines) == 2, lines
    assert orphans(manager.data_dir) == []


def test_start_up_removes_what_a_killed_server_left(make_client, clip, caplog, tmp_path):
    data = tmp_path / "d"
    c = make_client(CopyRunner(), data_dir=data)
    job = wait_state(c, c.post("/api/jobs", files={"file": ("a.mp4", clip.read_bytes())})
                     .json()["id"])
    c.__exit__(None, None, None)
    left = [data / "uploads" / ("1" * 32 + ".part"), data / "uploads" / ("2" * 32 + ".mp4"),
            data / "jobs" / ("3" * 32) / "composite.mp4"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert len(orphans(data)) == 3
    with caplog.at_level(logging.INFO, logger="rvmatte.server"):
        c = make_client(CopyRunner(), data_dir=data)
    assert orphans(data) == []
    assert c.get(f"/api/jobs/{job['id']}/result").status_code == 200  # the rest is kept
    lines = " ".join(r.getMessage() for r in caplog.records)
    assert "cut off mid-transfer" in lines and "does not know" in lines
    assert "3" * 32 in lines


def test_a_failed_job_keeps_no_files(make_client, clip):
    fail = "the input has no video stream"
    c = make_client(CopyRunner(fail=fail))
    job = wait_state(c, c.post("/api/jobs", files={"file": ("a.mp4", clip.read_bytes())})
                     .json()["id"])
    assert job["state"] == "failed" and job["error"] == fail
    assert not (c.app.state.manager.jobs_dir / job["id"]).exists()
    assert orphans(c.app.state.manager.data_dir) == []
