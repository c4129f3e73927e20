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


# -- the web UI in headless Chromium (skipped without /usr/bin/chromium) ---------------------
@pytest.fixture(scope="module")
def browser():
    from server_helpers import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}); apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def make_server(tmp_path):
    """make_server(runner=..., **config) -> a started ServerThread (stopped at test end)."""
    from server_helpers import ServerThread

    from rvmatte.server.app import ServerConfig

    servers = []

    def make(runner=None, **kw):
        kw.setdefault("data_dir", tmp_path / f"data{len(servers)}")
        srv = ServerThread(ServerConfig(runner=runner, **kw)).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def open_page(browser, make_server):
    """open_page(server, width=1280, height=800) -> a page of a fresh browser context (its
    own localStorage: another browser); page.errors collects script errors. Closed before
    the servers stop."""
    contexts = []

    def open_(server, width=1280, height=800, **kw):
        ctx = browser.new_context(viewport={"width": width, "height": height}, **kw)
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(server.url)
        return page

    yield open_
    for ctx in contexts:
        ctx.close()
