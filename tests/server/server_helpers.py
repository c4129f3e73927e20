"""Helpers for the server tests (imported by name: keep this module name unique)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rvmatte.errors import Cancelled

CHROMIUM = os.environ.get("RVMATTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"


def make_clip(path: Path, frames: int = 12, w: int = 96, h: int = 64, fps: int = 12) -> Path:
    """A small H.264 clip of a moving bright square on a dark gradient."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 2] = (xx * 255 // w).astype(np.uint8)
            x0 = (i * 5) % (w - 24)
            img[20:44, x0:x0 + 24] = (230, 200, 180)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def make_textured_clip(path: Path, frames: int = 6, w: int = 192, h: int = 128,
                       fps: int = 12) -> Path:
    """A small, nearly lossless H.264 clip with texture (seeded noise, a gradient, a moving
    skin-toned ellipse): detail on which two numerically different paths disagree by a
    level somewhere, where the plain clip of :func:`make_clip` may not show it."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "10"}
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            img[..., 2] += (xx * 180 // w).astype(np.uint8)
            inside = ((xx - 70 - i * 4) ** 2 / 900 + (yy - 70) ** 2 / 2500) < 1
            img[inside] = (220, 180, 150) + rng.integers(0, 30, (int(inside.sum()), 3))
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def short_sample(path: Path, frames: int = 12) -> Path:
    """The first ``frames`` frames of the bundled sample clip (keeps a test short)."""
    import av

    with av.open(str(SAMPLE)) as src, av.open(str(path), "w") as out:
        vs = src.streams.video[0]
        s = out.add_stream("libx264", rate=vs.average_rate)
        s.width, s.height, s.pix_fmt = vs.width, vs.height, "yuv420p"
        s.options = {"preset": "ultrafast"}
        s.time_base = 1 / vs.average_rate
        for i, frame in enumerate(src.decode(vs)):
            if i >= frames:
                break
            fresh = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            fresh.pts = i
            for pkt in s.encode(fresh):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


class CopyRunner:
    """A small real runner for queue mechanics: decodes the input frame by frame with PyAV,
    reports progress, honours ``cancel`` and copies the input to each output path.

    ``gate`` (an Event), when given, holds the job after its first frame until set;
    ``delay``: seconds spent on each frame (progress a page can watch).
    """

    def __init__(self, gate: threading.Event | None = None, fail: str | None = None,
                 delay: float = 0.0):
        self.gate, self.fail, self.delay = gate, fail, delay
        self.calls: list[dict] = []
        self.specs: list = []  # the JobSpec of each call

    def __call__(self, spec, *, progress, cancel, resume):
        import av

        self.calls.append({"id": spec.id, "resume": resume, "background": spec.background,
                           "ratio": spec.downsample_ratio})
        self.specs.append(spec)
        if self.fail:
            from rvmatte.errors import InputError
            raise InputError(self.fail)
        with av.open(str(spec.input)) as c:
            total = c.streams.video[0].frames or 0
            for i, _ in enumerate(c.decode(video=0)):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                progress(SimpleNamespace(done=i + 1, total=total, fps=100.0,
                                         eta_seconds=(total - i - 1) / 100.0))
                if self.delay and cancel.wait(self.delay):
                    raise Cancelled("cancelled")
                if self.gate is not None:
                    while not self.gate.wait(0.02):
                        if cancel.is_set():
                            raise Cancelled("cancelled")
        for path in spec.outputs.values():
            shutil.copyfile(spec.input, path)
        return dict(spec.outputs)


def wait_state(client, job_id: str, states=("done", "failed", "cancelled"), timeout=60.0,
               headers=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/jobs/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread (stopped by ``stop``)."""

    def __init__(self, config) -> None:
        import uvicorn

        from rvmatte.server.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(config)
        # open event streams (a page still following its jobs) end 2 s into a stop
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.app.state.closing.set()  # as `rvmatte serve` does on Ctrl-C: event streams end
        self.server.should_exit = True
        self.thread.join(15)



def orphans(data_dir: Path) -> list[str]:
    """Files in a server's data directory that its database does not account for: uploads
    without a record (``*.part`` included), folders of jobs that are gone, failed or
    cancelled (they keep no files), and anything but the outputs in a finished job's folder.
    Jobs still queued or running may hold partial files. Empty: the directory is clean."""
    import json
    import sqlite3

    data_dir = Path(data_dir)
    db = sqlite3.connect(f"file:{data_dir / 'jobs.sqlite3'}?mode=ro", uri=True)
    try:
        uploads = {row[0] for row in db.execute("SELECT path FROM uploads")}
        jobs = {row[0]: (row[1], json.loads(row[2]))
                for row in db.execute("SELECT id, state, outputs FROM jobs")}
    finally:
        db.close()
    found = []
    for path in sorted(data_dir.iterdir()):
        if path.name not in ("uploads", "jobs") and not path.name.startswith("jobs.sqlite3"):
            found.append(str(path))
    for path in sorted((data_dir / "uploads").glob("*")):
        if str(path.relative_to(data_dir)) not in uploads:
            found.append(str(path))
    for folder in sorted((data_dir / "jobs").glob("*")):
        state, outputs = jobs.get(folder.name, (None, {}))
        if state in ("queued", "running"):
            continue
        if state != "done":
            found.append(str(folder))
            continue
        wanted = {Path(p).resolve() for p in outputs.values()}
        found += [str(p) for p in sorted(folder.rglob("*"))
                  if p.resolve() not in wanted and not (p.is_dir() and any(
                      w.is_relative_to(p.resolve()) for w in wanted))]
    return found


LAUNCHER = Path(__file__).with_name("slow_server.py")


def start_server(data_dir: Path, port: int, log: Path, *options: str, cmd=None,
                 timeout: float = 60.0):
    """``slow_server.py`` (or the command ``cmd``) in a process of its own (a new session:
    :func:`stop_server` or a ``kill -9`` of its group ends it); returns the ``Popen`` once
    ``/api/health`` answers (200, or 503: up but degraded)."""
    import signal
    import subprocess
    import sys

    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest._one_torch_thread
    cmd = cmd or [sys.executable, str(LAUNCHER), str(data_dir), str(port), *options]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code in (
                    200, 503):
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"server did not start: {log.read_text()}")


def stop_server(proc, sig=None) -> None:
    """SIGTERM (a graceful stop; ``sig`` to send another) and wait; SIGKILL if it hangs."""
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, sig or signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_job(url: str, job_id: str, until=lambda job: job["state"] in (
        "done", "failed", "cancelled"), timeout: float = 120.0) -> dict:
    """Poll ``GET /api/jobs/{id}`` of the server at ``url`` until ``until(job)``."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: {job}")
        time.sleep(0.05)
