"""The server's fault suite, with real server processes (``slow_server.py``): a full disk, a
``kill -9`` while an upload or a job's outputs are being written, and a burst over the queue
limit with clients that retry as told. Each test ends with every accepted job done or failed
with a reason, the server serving a new job, and the data directory holding only what its
database references (:func:`server_helpers.orphans`)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import warnings
from pathlib import Path

import httpx
import pytest

from server_helpers import free_port, make_clip, orphans, start_server, stop_server, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=12)


def post_job(url: str, clip: Path, **data) -> httpx.Response:
    return httpx.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                      data=data, timeout=60)


def assert_json_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == code, resp.text


def assert_all_ended(url: str) -> list[dict]:
    """Every job the server lists is done, or failed with a reason."""
    jobs = httpx.get(f"{url}/api/jobs", timeout=10).json()["jobs"]
    for job in jobs:
        job = wait_job(url, job["id"])
        assert job["state"] == "done" or (job["state"] == "failed" and job["error"]), job
    return jobs


class SmallDisk:
    """The data directory on a 24 MB tmpfs where this process may mount one (root in a
    container that allows it); else the launcher's fake full disk (``--fake-full-disk``),
    announced with a warning, never skipped."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root, self.marker = root, root.parent / "disk-is-full"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)],
                              capture_output=True, text=True)
        self.real = done.returncode == 0
        if not self.real:
            warnings.warn("cannot mount a tmpfs here (" + (done.stderr.strip() or "refused")
                          + "): the full disk is the launcher's injected ENOSPC")
        self.data = root / "data"

    def options(self) -> tuple[str, ...]:
        return () if self.real else ("--fake-full-disk", str(self.marker))

    def fill(self) -> None:
        if not self.real:
            self.marker.touch()
            return
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            for size in (1 << 20, 4096, 1):  # to the last byte
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.root / "filler").unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


def test_full_disk(tmp_path, small):
    """The disk fills while a job runs: the job fails with the reason (or its end waits until
    it can be written), health says "low disk", uploads are refused with JSON 507s, reads
    still answer; once space is freed, health is ok again and a new job runs."""
    disk = SmallDisk(tmp_path / "disk")
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = None
    try:
        proc = start_server(disk.data, port, log, "--copy", "--delay", "0.3",
                            "--min-free-mb", "1", *disk.options())
        first = post_job(url, small).json()
        assert wait_job(url, first["id"])["state"] == "done"
        running = post_job(url, small).json()
        wait_job(url, running["id"], lambda j: j["state"] == "running")
        disk.fill()
        health = httpx.get(f"{url}/api/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert any("low disk" in p for p in health.json()["problems"]), health.json()
        assert_json_error(post_job(url, small), 507, "insufficient_storage")
        assert_json_error(httpx.post(f"{url}/api/uploads", files={
            "file": ("clip.mp4", small.read_bytes())}, timeout=30), 507,
            "insufficient_storage")
        assert httpx.get(f"{url}/api/jobs", timeout=10).status_code == 200
        # the running job cannot write its outputs (or its end): it fails, with the reason
        # written as soon as the database can take it
        wait_job(url, running["id"], lambda j: j["state"] != "running" or "not yet recorded"
                 in " ".join(httpx.get(f"{url}/api/health", timeout=10).json()["problems"]))
        disk.free()
        wait_job(url, running["id"], lambda j: httpx.get(f"{url}/api/health", timeout=10)
                 .status_code == 200)
        failed = wait_job(url, running["id"])
        assert failed["state"] == "failed" and "disk" in failed["error"], failed
        again = post_job(url, small)
        assert again.status_code == 201, again.text
        assert wait_job(url, again.json()["id"])["state"] == "done"
        assert len(assert_all_ended(url)) == 3
        assert orphans(disk.data) == []
    finally:
        if proc is not None:
            stop_server(proc)
        disk.close()


@pytest.mark.parametrize("hold", ["receive", "probe"])
def test_kill_during_an_upload(tmp_path, small, hold):
    """``kill -9`` while an upload is written (its bytes in ``*.part``, or renamed and being
    checked, not yet recorded): the request was never accepted; the restarted server removes
    the file, keeps its accepted jobs, and runs new ones."""
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    marker = tmp_path / "held"
    proc = start_server(data, port, log, "--copy")
    try:
        accepted = post_job(url, small)  # a job accepted before, done
        assert wait_job(url, accepted.json()["id"])["state"] == "done"
        stop_server(proc)
        proc = start_server(data, port, log, "--copy", "--hold-upload", hold, "--hold-file",
                            str(marker))
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(_try(post_job, url, small)))
        client.start()
        wait_job(url, accepted.json()["id"], lambda j: marker.exists(), timeout=60)
        assert not answers  # held: not answered
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        client.join(30)
        assert answers and isinstance(answers[0], httpx.TransportError), answers
        assert orphans(data) != []  # what the killed server left
        proc = start_server(data, port, log, "--copy")
        assert orphans(data) == []
        jobs = assert_all_ended(url)
        assert [j["id"] for j in jobs] == [accepted.json()["id"]]
        assert wait_job(url, post_job(url, small).json()["id"])["state"] == "done"
        assert orphans(data) == []
    finally:
        stop_server(proc)


def _try(fn, *args):
    try:
        return fn(*args)
    except httpx.TransportError as e:
        return e


def test_kill_during_output_writes(tmp_path):
    """``kill -9`` while a real conversion writes its outputs and checkpoints, with a second
    job queued behind it: after the restart both end done, and the killed job's partial
    files are gone (resumed into its outputs)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=16)
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, port, log, "--no-preload")
    try:
        first = post_job(url, clip, ratio="0.25", outputs="composite,alpha").json()
        second = post_job(url, clip, ratio="0.25").json()
        wait_job(url, first["id"], lambda j: j["progress"]["done"] >= 6)
        written = [p for p in (data / "jobs" / first["id"]).rglob("*") if p.is_file()]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert written  # it was killed with partial outputs on disk
        proc = start_server(data, port, log, "--no-preload")
        for job in (first, second):
            done = wait_job(url, job["id"])
            assert done["state"] == "done", (done, log.read_text()[-3000:])
        assert assert_all_ended(url) and orphans(data) == []
        assert wait_job(url, post_job(url, clip, ratio="0.25").json()["id"])["state"] == "done"
        assert orphans(data) == []
    finally:
        stop_server(proc)


def test_burst_over_the_queue_limit_with_retries(tmp_path, small):
    """Twelve clients at once against a queue of two: the refused get a JSON 503 with
    ``Retry-After``, wait that long and try again; all are accepted and done, and no upload
    of a refused request is left."""
    data, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_server(data, port, log, "--copy", "--delay", "0.1", "--max-queued", "2",
                        "--retry-after", "1")
    refusals: list[str] = []
    accepted: list[str] = []

    def client() -> None:
        import time

        for _ in range(200):
            r = post_job(url, small)
            if r.status_code == 201:
                accepted.append(r.json()["id"])
                return
            assert_json_error(r, 503, "queue_full")
            refusals.append(r.headers["Retry-After"])
            time.sleep(float(r.headers["Retry-After"]))

    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert len(accepted) == 12 and refusals and set(refusals) == {"1"}
        for job_id in accepted:
            assert wait_job(url, job_id)["state"] == "done"
        assert len(assert_all_ended(url)) == 12
        assert len(list((data / "uploads").iterdir())) == 12  # one per accepted job
        assert orphans(data) == []
    finally:
        stop_server(proc)
