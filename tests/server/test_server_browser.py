"""The web UI in headless Chromium: upload the sample clip, preview, convert, download."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest
from PIL import Image

from server_helpers import ServerThread

CHROMIUM = os.environ.get("RVMATTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def short_sample(path: Path, frames: int = 12) -> Path:
    """The first ``frames`` frames of the bundled sample clip (keeps the test short)."""
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


@pytest.fixture
def browser():
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
def server(tmp_path):
    pytest.importorskip("rvmatte.inference.convert")
    from rvmatte.server.app import ServerConfig

    srv = ServerThread(ServerConfig(data_dir=tmp_path / "data")).start()  # real pipeline
    try:
        yield srv
    finally:
        srv.stop()


def test_ui_end_to_end(browser, server, tmp_path):
    if not SAMPLE.exists():
        pytest.skip(f"sample clip missing: {SAMPLE}")
    clip = short_sample(tmp_path / "talking head.mp4")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    assert page.locator("#no-jobs").is_visible()
    assert page.locator("#start").is_disabled()

    page.set_input_files("#file", str(clip))
    page.wait_for_function(
        "document.querySelector('#preview-status').textContent.startsWith('Preview of')",
        timeout=60_000)
    assert "640×360, 12 frames" in page.inner_text("#upload-info")
    # the preview image really is a decoded PNG of the frame's size
    size = page.evaluate("[document.querySelector('#preview-composite').naturalWidth,"
                         " document.querySelector('#preview-composite').naturalHeight]")
    assert size == [640, 360]

    # an uploaded image as background: the start button waits for the image
    page.select_option("#background", "image")
    assert page.locator("#start").is_disabled()
    backdrop = tmp_path / "backdrop.png"
    Image.new("RGB", (64, 48), (30, 90, 200)).save(backdrop)
    page.set_input_files("#bg-image", str(backdrop))
    page.wait_for_function("!document.querySelector('#start').disabled", timeout=30_000)
    page.wait_for_function(
        "document.querySelector('#preview-status').textContent.startsWith('Preview of')",
        timeout=60_000)

    page.select_option("#ratio", "0.25")
    page.select_option("#background", "blur")
    page.check("input[name=outputs][value=alpha]")
    page.wait_for_function(
        "document.querySelector('#preview-status').textContent.startsWith('Preview of')",
        timeout=60_000)
    page.click("#start")
    row = page.locator("#jobs tbody tr").first
    row.locator("[data-testid=download-composite]").wait_for(timeout=120_000)
    assert row.get_attribute("data-state") == "done"
    assert "12/12 frames" in row.inner_text()
    assert "blur" in row.inner_text()

    with page.expect_download() as dl:
        row.locator("[data-testid=download-composite]").click()
    out = tmp_path / dl.value.suggested_filename
    dl.value.save_as(out)
    assert out.name == "talking head_composite.mp4"
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (640, 360)

    with page.expect_download() as dl:
        row.locator("[data-testid=download-alpha]").click()
    dl.value.save_as(tmp_path / "alpha.mp4")
    with av.open(str(tmp_path / "alpha.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12

    # past jobs survive a reload; delete removes the job
    page.reload()
    page.locator("#jobs tbody tr[data-state=done]").wait_for(timeout=10_000)
    page.click("#jobs tbody tr button")
    page.locator("#no-jobs").wait_for(state="visible", timeout=10_000)
    assert errors == []


def test_ui_rejects_non_video(browser, server, tmp_path):
    bogus = tmp_path / "holiday.mp4"
    bogus.write_text("this is not a video")
    page = browser.new_page()
    page.goto(server.url)
    page.set_input_files("#file", str(bogus))
    page.wait_for_function("document.querySelector('#message').textContent.length > 0",
                           timeout=30_000)
    assert "not a video" in page.inner_text("#message")
    assert page.locator("#start").is_disabled()
