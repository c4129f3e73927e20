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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``), for fixtures' teardown."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# What the page knew when a browser test failed: printed into the test's report.
_PAGE_STATE = """() => ({
  jobs: [...state.jobs.values()].map((j) => [j.id, j.state, j.done_frames]),
  selected: state.selected,
  current: document.querySelector('#current').hidden ? '(hidden)'
    : document.querySelector('#current').innerText.slice(0, 400),
  jobsError: document.querySelector('#jobs-error').textContent,
  confirmOpen: document.querySelector('#confirm').open,
  events: state.events,
})"""


@pytest.fixture
def open_page(request, browser, make_server):
    """open_page(server, width=1280, height=800) -> a page of a fresh browser context (its
    own localStorage: another browser); page.errors collects script errors, page.log the
    console and failed requests (printed with the page's state if the test fails). Closed
    before the servers stop."""
    contexts, pages = [], []

    def open_(server, width=1280, height=800, **kw):
        ctx = browser.new_context(viewport={"width": width, "height": height}, **kw)
        contexts.append(ctx)
        page = ctx.new_page()
        pages.append(page)
        page.errors, page.log = [], []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("console", lambda m: page.log.append(f"console {m.type}: {m.text}"))
        page.on("requestfailed", lambda r: page.log.append(f"failed {r.method} {r.url}"))
        page.goto(server.url)
        return page

    yield open_
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        import sys
        import threading
        import traceback

        frames = sys._current_frames()
        for t in threading.enumerate():
            if t.name.startswith("rvmatte") and t.ident in frames:
                print(f"thread {t.name}:", "".join(traceback.format_stack(frames[t.ident])[-6:]))
        for page in pages:
            try:
                print("page state:", page.evaluate(_PAGE_STATE))
                print("server's jobs:", page.evaluate(
                    "fetch('/api/jobs', {headers: {'X-Rvmatte-Owner': ownerKey()}})"
                    ".then(r => r.json()).then(j => j.jobs.map(x => [x.id, x.state]))"))
            except Exception as e:  # noqa: BLE001 - a diagnosis only
                print("page state unavailable:", e)
            print("page log:", *page.log[-30:], sep="\n  ")
    for ctx in contexts:
        ctx.close()
