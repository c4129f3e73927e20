"""Fixtures for the server tests: tiny clips made with PyAV, and apps on a temp data dir."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from rvmatte.errors import Cancelled  # noqa: E402


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


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "person clip.mp4")


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


class CopyRunner:
    """A small real runner for queue mechanics: decodes the input frame by frame with PyAV,
    reports progress, honours ``cancel`` and copies the input to each output path.

    ``gate`` (an Event), when given, holds the job after its first frame until set.
    """

    def __init__(self, gate: threading.Event | None = None, fail: str | None = None):
        self.gate, self.fail = gate, fail
        self.calls: list[dict] = []

    def __call__(self, spec, *, progress, cancel, resume):
        import av

        self.calls.append({"id": spec.id, "resume": resume, "background": spec.background,
                           "ratio": spec.downsample_ratio})
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
                if self.gate is not None:
                    while not self.gate.wait(0.02):
                        if cancel.is_set():
                            raise Cancelled("cancelled")
        for path in spec.outputs.values():
            shutil.copyfile(spec.input, path)
        return dict(spec.outputs)


@pytest.fixture
def make_client(tmp_path):
    """make_client(runner=..., **config) -> started TestClient (closed at test end)."""
    from fastapi.testclient import TestClient

    from rvmatte.server.app import ServerConfig, create_app

    clients = []

    def make(runner=None, **kw):
        kw.setdefault("data_dir", tmp_path / "data")
        kw.setdefault("weights", None)
        app = create_app(ServerConfig(runner=runner, **kw))
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


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
