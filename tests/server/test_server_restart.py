"""A server killed mid-job (SIGKILL) resumes the job from its checkpoint after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

from server_helpers import free_port, make_clip

pytest.importorskip("rvmatte.inference.convert")
LAUNCHER = Path(__file__).with_name("slow_server.py")


def start(data_dir: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest._one_torch_thread
    proc = subprocess.Popen([sys.executable, str(LAUNCHER), str(data_dir), str(port), *options],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"server did not start: {log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


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
