"""Fixtures for the server tests: tiny clips made with PyAV, and apps on a temp data dir."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from server_helpers import make_clip  # noqa: E402


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "person clip.mp4")


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


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
