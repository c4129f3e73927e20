"""Restarts with real server processes: a server killed mid-job (SIGKILL) resumes the job from
its checkpoint; graceful stops (SIGTERM) do not count toward the limit of interruptions, kills
do."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import av
import httpx
import pytest

from server_helpers import free_port, make_clip, orphans, start_server, stop_server, wait_job

pytest.importorskip("rvmatte.inference.convert")
start, stop = start_server, stop_server


@pytest.mark.slow
def test_restart_resumes_unfinished_job(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=16)
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(data, port, log)
    try:
        r = httpx.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                       data={"outputs": "composite,alpha", "ratio": "0.25"}, timeout=30)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while True:  # wait until two checkpoints (every 4 frames) are behind it
            job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).json()
            assert job["state"] in ("queued", "running"), job
            if job["progress"]["done"] >= 8:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait(10)
        assert job["progress"]["done"] < 16

        proc = start(data, port, log)
        listed = httpx.get(f"{url}/api/jobs", timeout=5).json()["jobs"]
        assert [j["id"] for j in listed] == [job_id]
        deadline = time.monotonic() + 120
        while True:
            job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).json()
            if job["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["state"] == "done", (job, log.read_text()[-2000:])
        assert job["attempts"] == 2
        assert job["resumed_from"] and job["resumed_from"] >= 4  # continued, not restarted
        for kind in ("composite", "alpha"):
            resp = httpx.get(f"{url}/api/jobs/{job_id}/result/{kind}", timeout=30)
            assert resp.status_code == 200
            out = tmp_path / f"{kind}.mp4"
            out.write_bytes(resp.content)
            with av.open(str(out)) as c:
                assert sum(1 for _ in c.decode(video=0)) == 16
        assert orphans(data) == []  # the resume data went with the job's end
    finally:
        stop(proc)


@pytest.mark.slow
def test_stop_with_a_page_following_its_jobs(tmp_path):
    """SIGTERM (or Ctrl-C) while a page holds an event stream open: the stream ends and the
    server exits at once, not after uvicorn's graceful-shutdown timeout (5 s)."""
    import threading

    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    proc = start(data, port, log, "--no-preload")  # a model build would be waited for
    lines: list[str] = []
    try:
        def follow():
            with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=30) as r:
                for line in r.iter_lines():
                    lines.append(line)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        deadline = time.monotonic() + 10
        while "event: snapshot" not in lines:
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        assert time.monotonic() - t0 < 4, log.read_text()[-2000:]
        reader.join(5)
        assert not reader.is_alive()  # the stream ended with the server
        assert "graceful shutdown exceeded" not in log.read_text()
    finally:
        stop(proc)


@pytest.mark.slow
def test_graceful_restarts_do_not_count_as_interruptions(tmp_path):
    """Four SIGTERMs during one job (more than the three interruptions a job is allowed):
    each requeues it, the next start resumes it, and it finishes."""
    clip = make_clip(tmp_path / "clip.mp4", frames=32)
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(data, port, log, "--no-preload")
    try:
        r = httpx.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                       data={"ratio": "0.25"}, timeout=30)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        for stop_no in range(1, 5):
            # running, with progress of this run (a restart starts at 0)
            job = wait_job(url, job_id, lambda j: j["state"] != "queued"
                           and j["progress"]["done"] >= 1)
            assert job["state"] == "running", (job, log.read_text()[-3000:])
            stop(proc)  # SIGTERM: a graceful stop (uvicorn exits by the same signal)
            assert log.read_text().count("Application shutdown complete") == stop_no
            proc = start(data, port, log, "--no-preload")
            job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).json()
            assert job["state"] in ("queued", "running") and job["error"] is None, job
        job = wait_job(url, job_id)
        assert job["state"] == "done", (job, log.read_text()[-3000:])
        assert job["attempts"] == 5 and job["resumed_from"] is not None  # resumed
        with av.open(str(_download(url, job_id, tmp_path))) as c:
            assert sum(1 for _ in c.decode(video=0)) == 32
        assert orphans(data) == []
    finally:
        stop(proc)


def _download(url: str, job_id: str, tmp_path: Path) -> Path:
    resp = httpx.get(f"{url}/api/jobs/{job_id}/result", timeout=30)
    assert resp.status_code == 200
    out = tmp_path / "result.mp4"
    out.write_bytes(resp.content)
    return out


@pytest.mark.slow
def test_three_kills_during_a_job_give_up(tmp_path):
    """A job during which the server is killed (SIGKILL) three times fails with the reason;
    the server still serves new jobs, and nothing of the failed job stays on disk."""
    clip = make_clip(tmp_path / "clip.mp4", frames=24)
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    options = ("--copy", "--delay", "0.5")
    proc = start(data, port, log, *options)
    try:
        r = httpx.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                       timeout=30)
        job_id = r.json()["id"]
        for kill_no in range(1, 4):
            job = wait_job(url, job_id, lambda j: j["state"] == "running"
                           and j["progress"]["done"] >= 1)
            assert job["attempts"] == kill_no
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = start(data, port, log, *options)
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).json()
        assert job["state"] == "failed", job
        assert job["error"] == "the server stopped during this job 3 times; giving up"
        r = httpx.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                       data={"ratio": "0.5"}, timeout=30)
        assert wait_job(url, r.json()["id"])["state"] == "done"
        assert orphans(data) == []
    finally:
        stop(proc)
