"""HTTP API: jobs, results, errors, limits, traversal, tokens, retention (queue mechanics use
a small real runner that copies the input; the real pipeline is in test_e2e/test_restart)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from server_helpers import CopyRunner, wait_state
from rvmatte.errors import RvmatteError


def submit(client, clip: Path, name="clip.mp4", headers=None, **data):
    return client.post("/api/jobs", files={"file": (name, clip.read_bytes(), "video/mp4")},
                       data=data, headers=headers or {})


def error_of(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]


def test_health_and_openapi(make_client):
    c = make_client(CopyRunner())
    h = c.get("/api/health").json()
    assert h["status"] == "ok" and h["workers"] == 1 and h["token_required"] is False
    spec = c.get("/openapi.json").json()
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/result",
                 "/api/jobs/{job_id}/result/{kind}", "/api/health", "/api/uploads"):
        assert path in spec["paths"]
    docs = c.get("/docs")
    assert docs.status_code == 200
    # Swagger UI is served from the package (swagger-ui-bundle), not a CDN: works offline.
    assert "/_swagger/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text
    js = c.get("/_swagger/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    page = c.get("/")
    assert page.status_code == 200 and "rvmatte" in page.text
    assert c.get("/static/app.js").status_code == 200


def test_job_life_cycle(make_client, clip):
    runner = CopyRunner()
    c = make_client(runner)
    r = submit(c, clip, name="my clip.mp4", outputs="composite,alpha", background="blue",
               format="mp4", ratio="0.5")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and len(job["id"]) == 32
    job = wait_state(c, job["id"])
    assert job["state"] == "done", job
    assert job["progress"] == {"done": 12, "total": 12, "fraction": 1.0}
    assert job["eta_seconds"] == 0 and job["error"] is None
    assert set(job["results"]) == {"composite", "alpha"}
    assert runner.calls[0]["background"] == "#0000ff" and runner.calls[0]["ratio"] == 0.5
    assert runner.calls[0]["resume"] is False

    main = c.get(f"/api/jobs/{job['id']}/result")
    assert main.status_code == 200 and main.content == clip.read_bytes()
    assert "my%20clip_composite.mp4" in main.headers["content-disposition"]
    alpha = c.get(job["results"]["alpha"])
    assert alpha.status_code == 200 and alpha.headers["content-type"] == "video/mp4"
    err = error_of(c.get(f"/api/jobs/{job['id']}/result/foreground"), 404)
    assert "foreground" in err["message"]

    listed = c.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]

    assert c.delete(f"/api/jobs/{job['id']}").json() == {"id": job["id"], "deleted": True}
    error_of(c.get(f"/api/jobs/{job['id']}"), 404)
    assert not (Path(c.app.state.manager.jobs_dir) / job["id"]).exists()


def test_upload_then_job_and_image_background(make_client, clip, png_bytes):
    runner = CopyRunner()
    c = make_client(runner)
    up = c.post("/api/uploads", files={"file": ("v.mp4", clip.read_bytes())})
    assert up.status_code == 201, up.text
    info = up.json()
    assert (info["width"], info["height"], info["frames"]) == (96, 64, 12)
    img = c.post("/api/uploads", files={"file": ("bg.png", png_bytes)}, data={"kind": "image"})
    assert img.status_code == 201, img.text
    r = c.post("/api/jobs", data={"upload_id": info["id"], "background": "image",
                                  "background_upload": img.json()["id"]})
    assert r.status_code == 201, r.text
    assert wait_state(c, r.json()["id"])["state"] == "done"
    bg = runner.calls[0]["background"]
    assert bg.endswith(".png") and Path(bg).is_file()
    # the same image sent inline with the job
    r = c.post("/api/jobs", files={"file": ("v.mp4", clip.read_bytes()),
                                   "background_file": ("b.png", png_bytes)},
               data={"background": "image"})
    assert r.status_code == 201, r.text
    assert wait_state(c, r.json()["id"])["state"] == "done"


@pytest.mark.parametrize("data, needle", [
    ({"outputs": "composite,matte"}, "outputs"),
    ({"outputs": " , "}, "outputs"),
    ({"background": "notacolour"}, "background"),
    ({"background": "../../etc/passwd"}, "background"),
    ({"background": "/etc/hostname"}, "background"),
    ({"background": "blur:0"}, "blur"),
    ({"background": "image"}, "image"),
    ({"background": "transparent", "format": "mp4"}, "transparent"),
    ({"format": "avi"}, "format"),
    ({"ratio": "2"}, "ratio"),
    ({"ratio": "fast"}, "ratio"),
    ({"select": "10"}, "select"),
    ({"select": "a,b"}, "select"),
    ({"select_box": "10,10,5,5"}, "select-box"),
    ({"select_frame": "3"}, "select-frame"),
    ({"people": "0"}, "people"),
    ({"stabilize": "maybe"}, "stabilize"),
])
def test_bad_options(make_client, clip, data, needle):
    c = make_client(CopyRunner())
    err = error_of(submit(c, clip, **data), 422)
    assert needle in err["message"].lower()
    assert c.get("/api/jobs").json()["jobs"] == []


def test_quality_and_selection_options_reach_the_runner(make_client, clip):
    """stabilize, foreground_estimation and the selection fields, as `rvmatte convert` takes
    them: stored with the job, shown in its JSON and handed to the runner."""
    from rvmatte.post.people import Selection

    runner = CopyRunner()
    c = make_client(runner)
    job = submit(c, clip, stabilize="true", foreground_estimation="true",
                 select="10,20; 30,40", select_frame="2").json()
    assert wait_state(c, job["id"])["state"] == "done"
    assert job["options"]["stabilize"] is True
    assert job["options"]["foreground_estimation"] is True
    assert job["options"]["select"] == {"points": [[10, 20], [30, 40]], "box": None,
                                        "people": None, "frame": 2}
    spec = runner.specs[-1]
    assert spec.stabilize and spec.foreground_estimation
    assert spec.select == Selection(points=((10, 20), (30, 40)), frame=2)
    job = submit(c, clip, people="1").json()
    assert wait_state(c, job["id"])["state"] == "done"
    spec = runner.specs[-1]
    assert not spec.stabilize and spec.foreground_estimation is None  # convert's default
    assert spec.select == Selection(people=1)
    assert "stabilize" not in job["options"] and "select" in job["options"]
    assert "foreground_estimation" not in job["options"]
    job = submit(c, clip, foreground_estimation="false").json()
    assert wait_state(c, job["id"])["state"] == "done"
    assert job["options"]["foreground_estimation"] is False
    assert runner.specs[-1].foreground_estimation is False
    job = submit(c, clip).json()
    assert wait_state(c, job["id"])["state"] == "done"
    assert runner.specs[-1].select is None


def test_bad_requests(make_client, clip, png_bytes, tmp_path):
    c = make_client(CopyRunner())
    error_of(c.post("/api/jobs", data={"outputs": "alpha"}), 422)  # no video at all
    up = c.post("/api/uploads", files={"file": ("v.mp4", clip.read_bytes())}).json()
    both = c.post("/api/jobs", files={"file": ("v.mp4", clip.read_bytes())},
                  data={"upload_id": up["id"]})
    assert "exactly one" in error_of(both, 422)["message"]
    error_of(c.post("/api/jobs", data={"upload_id": "0" * 32}), 404)
    error_of(c.post("/api/jobs", data={"upload_id": "nope"}), 404)
    # an image upload is not a video
    img = c.post("/api/uploads", files={"file": ("b.png", png_bytes)}, data={"kind": "image"})
    error_of(c.post("/api/jobs", data={"upload_id": img.json()["id"]}), 404)
    error_of(c.post("/api/uploads", files={"file": ("v.mp4", b"x")}, data={"kind": "exe"}), 422)
    error_of(c.get("/api/jobs/" + "f" * 32), 404)
    error_of(c.delete("/api/jobs/" + "f" * 32), 404)
    error_of(c.get("/api/jobs/" + "f" * 32 + "/result"), 404)
    error_of(c.get("/api/jobs?limit=0"), 422)
    error_of(c.put("/api/jobs"), 405)


@pytest.mark.parametrize("name, payload, code", [
    ("notes.mp4", b"just some text, not a video at all" * 20, "unsupported_type"),
    ("picture.mp4", None, "unsupported_type"),                      # a PNG named .mp4
    ("cut.mp4", "truncated", "unsupported_type"),                   # right magic, no video
    ("empty.mp4", b"", "empty_file"),
])
def test_type_checked_by_content(make_client, clip, png_bytes, name, payload, code):
    c = make_client(CopyRunner())
    if payload is None:
        payload = png_bytes
    elif payload == "truncated":
        payload = clip.read_bytes()[:64]
    r = submit_bytes(c, name, payload)
    assert error_of(r, 415 if code == "unsupported_type" else 422)["code"] == code
    # nothing kept: no upload row, no file
    assert list(c.app.state.manager.uploads_dir.iterdir()) == []


def submit_bytes(c, name, payload):
    return c.post("/api/jobs", files={"file": (name, payload, "video/mp4")})


def test_image_type_checked_by_content(make_client, clip):
    c = make_client(CopyRunner())
    r = c.post("/api/uploads", files={"file": ("bg.png", clip.read_bytes())},
               data={"kind": "image"})
    assert error_of(r, 415)["code"] == "unsupported_type"


def test_upload_size_limit(make_client, clip):
    c = make_client(CopyRunner(), max_upload_bytes=2000)
    assert len(clip.read_bytes()) > 2000
    err = error_of(submit(c, clip), 413)
    assert err["code"] == "too_large" and "limit" in err["message"]

    def chunks():  # no Content-Length: the limit is enforced on the bytes received
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"'
        yield b"\r\nContent-Type: video/mp4\r\n\r\n"
        for _ in range(10):
            yield b"\0" * 1000
        yield b"\r\n" + boundary + b"--\r\n"

    r = c.post("/api/jobs", content=chunks(),
               headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert error_of(r, 413)["code"] == "too_large"
    assert list(c.app.state.manager.uploads_dir.iterdir()) == []


def test_no_path_traversal(make_server, clip, tmp_path):
    import http.client

    import httpx

    def raw_get(path: str) -> tuple[int, bytes]:
        """GET ``path`` exactly as written: httpx (and TestClient) normalise ``..`` segments
        and some escapes away before sending, so those never reached the server."""
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    srv = make_server(CopyRunner(), data_dir=tmp_path / "srv" / "data")
    outside = tmp_path / "srv"
    before = sorted(p.name for p in outside.iterdir())
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for evil in ("../../evil.mp4", "..\\..\\evil.mp4", "/etc/evil.mp4", "../jobs.sqlite3"):
            r = submit(c, clip, name=evil)
            assert r.status_code == 201, r.text
            job = wait_state(c, r.json()["id"])
            assert "/" not in job["filename"] and "\\" not in job["filename"]
            assert not job["filename"].startswith(".")
            cd = c.get(job["results"]["composite"]).headers["content-disposition"]
            assert ".." not in cd and "/" not in cd
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written next to data
    assert not Path("/etc/evil.mp4").exists()
    stored = [p.name for p in srv.app.state.manager.uploads_dir.iterdir()]
    assert stored and all(len(Path(n).stem) == 32 for n in stored)  # server-chosen names
    assert (outside / "data" / "jobs.sqlite3").exists()  # what the URLs below go after
    secrets = (b"SQLite format 3", b"root:", b"def create_app", b"import ")
    # sent raw: the server itself sees the dot segments and the escapes
    for url in ("/api/jobs/..%2F..%2Fjobs.sqlite3", "/api/jobs/../../etc/passwd",
                "/api/jobs/%2e%2e/result", f"/api/jobs/{job['id']}/result/..%2F..%2Fjobs.sqlite3",
                f"/api/jobs/{job['id']}/result/../../../jobs.sqlite3",
                "/api/uploads/..%2Fjobs.sqlite3/preview",
                "/api/jobs/%2e%2e%2f%2e%2e%2fjobs.sqlite3", "/static/..%2Fapp.py",
                "/static/../app.py", "/static/../../server/app.py", "/../../etc/passwd",
                "/static/%2e%2e/app.py"):
        status, body = raw_get(url)
        assert status in (400, 404), (url, status, body[:200])
        assert not any(s in body for s in secrets), (url, body[:200])


def test_result_not_ready_and_cancel(make_client, clip):
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate))
    job = submit(c, clip).json()
    wait_state(c, job["id"], states=("running",))
    err = error_of(c.get(f"/api/jobs/{job['id']}/result"), 409)
    assert err["code"] == "not_ready"
    second = submit(c, clip).json()  # one worker: the second job waits
    time.sleep(0.2)
    assert c.get(f"/api/jobs/{second['id']}").json()["state"] == "queued"
    assert c.get("/api/health").json()["running"] == 1
    assert c.delete(f"/api/jobs/{job['id']}").status_code == 200  # cancels the running job
    error_of(c.get(f"/api/jobs/{job['id']}"), 404)
    gate.set()
    assert wait_state(c, second["id"])["state"] == "done"
    deadline = time.monotonic() + 5
    while (c.app.state.manager.jobs_dir / job["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (c.app.state.manager.jobs_dir / job["id"]).exists()


def test_queue_bound(make_client, clip):
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate), max_queued=1)
    first = submit(c, clip).json()
    wait_state(c, first["id"], states=("running",))
    assert submit(c, clip).status_code == 201
    refused = submit(c, clip)
    assert error_of(refused, 503)["code"] == "queue_full"
    assert refused.headers["Retry-After"] == "30"
    # the refused request's upload is not kept: two jobs, two uploads
    uploads = c.app.state.manager.uploads_dir
    assert len([p for p in uploads.iterdir() if not p.name.endswith(".part")]) == 2
    gate.set()


def test_failed_job_reports_error(make_client, clip):
    c = make_client(CopyRunner(fail="the input has no video stream"))
    job = wait_state(c, submit(c, clip).json()["id"])
    assert job["state"] == "failed" and job["error"] == "the input has no video stream"
    assert job["results"] == {}
    assert error_of(c.get(f"/api/jobs/{job['id']}/result"), 409)["code"] == "not_ready"


def test_retention(make_client, clip):
    c = make_client(CopyRunner(), retention_s=3600)
    manager = c.app.state.manager
    job = wait_state(c, submit(c, clip).json()["id"])
    assert manager.sweep() == {"jobs": 0, "uploads": 0}  # too young
    assert manager.sweep(now=time.time() + 7200) == {"jobs": 1, "uploads": 1}
    error_of(c.get(f"/api/jobs/{job['id']}"), 404)
    assert not (manager.jobs_dir / job["id"]).exists()
    assert list(manager.uploads_dir.iterdir()) == []


def test_token(make_client, clip, tmp_path):
    from rvmatte.server.app import ServerConfig, create_app

    with pytest.raises(RvmatteError, match="token"):
        create_app(ServerConfig(data_dir=tmp_path / "x", host="0.0.0.0", runner=CopyRunner()))
    c = make_client(CopyRunner(), host="0.0.0.0", token="s3cret")  # the test client is local
    assert c.get("/api/health").json()["token_required"] is True
    assert error_of(c.get("/api/jobs"), 401)["code"] == "unauthorized"
    assert error_of(c.get("/api/jobs", headers={"Authorization": "Bearer nope"}), 401)
    assert error_of(submit(c, clip), 401)
    ok = {"Authorization": "Bearer s3cret"}
    assert c.get("/api/jobs", headers=ok).status_code == 200
    assert c.get("/api/jobs?token=s3cret").status_code == 200
    job = submit(c, clip, headers=ok)
    assert job.status_code == 201
    wait_state(c, job.json()["id"], headers=ok)
    # the page sets a cookie from ?token= and the UI's requests then carry it
    r = c.get("/?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and "rvmatte_token=s3cret" in r.headers["set-cookie"]
    assert c.get("/api/jobs").status_code == 200


def test_preview(make_client, clip, tmp_path):
    from io import BytesIO

    import numpy as np
    from PIL import Image

    from rvm_clips import assert_composite, standin_weights

    # the stand-in network: alpha 0 on the clip's background, 1 on its box
    c = make_client(CopyRunner(), weights=str(standin_weights(tmp_path)))
    up = c.post("/api/uploads", files={"file": ("v.mp4", clip.read_bytes())}).json()
    url = f"/api/uploads/{up['id']}/preview"

    def image(**params):
        r = c.get(url, params={"ratio": "0.5", **params})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        return Image.open(BytesIO(r.content))

    comp, rgba, alpha = (image(background="#ff0000"), image(background="transparent"),
                         image(view="alpha"))
    assert comp.size == (96, 64) and comp.mode == "RGB"
    assert rgba.mode == "RGBA" and alpha.mode == "L"
    comp, rgba, alpha = np.asarray(comp), np.asarray(rgba), np.asarray(alpha)
    assert (alpha == 0).any() and (alpha == 255).any() and np.array_equal(rgba[..., 3], alpha)
    assert_composite(comp, rgba[..., :3], alpha, (255, 0, 0))  # the red is where alpha is not
    error_of(c.get(url, params={"view": "x"}), 422)
    error_of(c.get(url, params={"background": "/etc/passwd"}), 422)
    assert "select" in error_of(c.get(url, params={"select": "1,2,3"}), 422)["message"]
    # a point outside the frame: the one-line reason, from the real conversion
    assert "outside" in error_of(c.get(url, params={"select": "500,10"}), 422)["message"]
    error_of(c.get(f"/api/uploads/{'0' * 32}/preview"), 404)


def test_graceful_stop_requeues_and_next_start_resumes(make_client, clip, tmp_path):
    gate = threading.Event()
    first = CopyRunner(gate=gate)
    c = make_client(first, data_dir=tmp_path / "d")
    job = submit(c, clip).json()
    wait_state(c, job["id"], states=("running",))
    c.__exit__(None, None, None)  # server shutdown: the running job is cancelled, kept queued
    second = CopyRunner()
    c2 = make_client(second, data_dir=tmp_path / "d")
    done = wait_state(c2, job["id"])
    assert done["state"] == "done" and done["attempts"] == 2
    assert second.calls == [{"id": job["id"], "resume": True, "background": "#00ff00",
                             "ratio": "auto"}]


def test_workers_wait_for_the_model_preload(tmp_path, clip):
    """Jobs queue while the model is preloaded and start once it is built: two model builds
    at once in one process collided (an ONNX export is not thread-safe)."""
    import shutil

    from rvmatte.server import store as st
    from rvmatte.server.jobs import JobManager, parse_options

    store = st.JobStore(tmp_path / "jobs.sqlite3")
    shutil.copyfile(clip, tmp_path / "clip.mp4")
    upload = store.add_upload(id="a" * 32, kind="video", path="clip.mp4", filename="clip.mp4",
                              size=1, info={})
    manager = JobManager(store, tmp_path, CopyRunner(), retention_s=0)
    building = threading.Event()
    manager.start(warmup=lambda: building.wait(30))
    try:
        job = manager.submit(upload, parse_options(outputs="composite", background=None,
                                                   format=None, ratio=None))
        time.sleep(0.5)
        assert store.get_job(job["id"])["state"] == st.QUEUED
        building.set()
        deadline = time.monotonic() + 30
        while store.get_job(job["id"])["state"] != st.DONE:
            assert time.monotonic() < deadline, store.get_job(job["id"])
            time.sleep(0.05)
    finally:
        manager.stop()
        store.close()


def test_a_store_error_does_not_kill_the_worker(make_client, clip, monkeypatch):
    """The worker thread survives a failing claim (a database error) and takes the job on
    its next round, instead of leaving it queued for ever."""
    c = make_client(CopyRunner())
    store = c.app.state.store
    real, calls = store.claim_next, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            import sqlite3
            raise sqlite3.OperationalError("database is locked")
        return real()

    monkeypatch.setattr(store, "claim_next", flaky)
    job = submit(c, clip).json()
    assert wait_state(c, job["id"], timeout=30)["state"] == "done"
    assert len(calls) >= 2



def _server_errors_as_responses(app):
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)


def test_a_full_disk_does_not_stall_the_queue(make_client, clip, monkeypatch):
    """The database cannot be written (a full disk): the job's end is kept and recorded once
    it can be, /api/health says what is wrong meanwhile (503), and the worker goes on to
    the next job. Errors of the API on a full disk are JSON."""
    import sqlite3

    c = make_client(CopyRunner())
    store, manager = c.app.state.store, c.app.state.manager
    real_finish, full = store.finish, threading.Event()
    full.set()

    def finish(*a, **kw):
        if full.is_set():
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(*a, **kw)

    monkeypatch.setattr(store, "finish", finish)
    job = submit(c, clip).json()
    deadline = time.monotonic() + 20
    while not manager._unrecorded and time.monotonic() < deadline:
        time.sleep(0.05)
    h = c.get("/api/health")
    assert h.status_code == 503 and h.json()["status"] == "degraded"
    assert any("not yet recorded" in p for p in h.json()["problems"])
    assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "running"  # not lost
    full.clear()  # space again
    assert wait_state(c, job["id"], timeout=20)["state"] == "done"
    assert c.get("/api/health").json()["status"] == "ok"
    assert wait_state(c, submit(c, clip).json()["id"], timeout=20)["state"] == "done"

    # a request that fails on the database answers JSON (507), and keeps no upload
    api = _server_errors_as_responses(c.app)
    monkeypatch.setattr(store, "add_job", lambda **kw: (_ for _ in ()).throw(
        sqlite3.OperationalError("database or disk is full")))
    before = sorted(p.name for p in manager.uploads_dir.iterdir())
    r = submit(api, clip)
    assert error_of(r, 507)["code"] == "insufficient_storage"
    assert sorted(p.name for p in manager.uploads_dir.iterdir()) == before


def test_low_disk_refuses_uploads_and_holds_jobs(make_client, clip, monkeypatch):
    """Below the free-disk reserve: uploads get 507 (JSON, nothing stored), no job starts,
    health says "low disk"; with space again everything goes on."""
    c = make_client(CopyRunner())
    manager = c.app.state.manager
    monkeypatch.setattr(manager, "free_bytes", lambda: 10 << 20)  # 10 MB free
    manager.min_free_bytes = 256 << 20
    r = submit(c, clip)
    assert "free disk" in error_of(r, 507)["message"]
    assert c.get("/api/jobs").json()["jobs"] == []
    assert not [p for p in manager.uploads_dir.iterdir()]
    h = c.get("/api/health").json()
    assert h["status"] == "degraded" and any("low disk" in p for p in h["problems"])
    monkeypatch.setattr(manager, "free_bytes", lambda: 10 << 30)
    assert wait_state(c, submit(c, clip).json()["id"], timeout=20)["state"] == "done"
    assert c.get("/api/health").json()["status"] == "ok"


def test_serve_refuses_a_queue_of_nothing():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rvmatte", "serve", "--max-queued", "-1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--max-queued must be at least 1" in r.stderr
