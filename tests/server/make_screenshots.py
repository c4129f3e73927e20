"""Screenshots of the web UI and of live mode for docs/ (not a test).

    .venv/bin/python tests/server/make_screenshots.py [OUT_DIR=docs/images] [--web-only]

Runs the real server on 127.0.0.1 with the bundled weights, drives headless Chromium through
the sample clip and writes, at desktop size (1280x800): server-upload.png (the clip uploaded,
its preview), server-progress.png (the job running, shown under the button and in the list),
server-done.png (the finished job in the before/after player); at phone size (390x844):
server-phone-upload.png and server-phone-done.png; and live-output.png (unless --web-only).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from server_helpers import CHROMIUM, CHROMIUM_ARGS, SAMPLE, ServerThread  # noqa: E402

from rvmatte.server.app import ServerConfig  # noqa: E402

READY = "document.querySelector('#preview-status').textContent.startsWith('Preview of')"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _choose(page, background: str) -> None:
    page.set_input_files("#file", str(SAMPLE))
    page.wait_for_function(READY, timeout=120_000)
    page.select_option("#background", background)
    page.select_option("#ratio", "0.25")
    page.check("input[name=outputs][value=alpha]")
    page.wait_for_timeout(500)
    page.wait_for_function(READY, timeout=120_000)


def _wait_done(page) -> None:
    page.locator("#player").wait_for(state="visible", timeout=600_000)
    page.wait_for_function("document.querySelector('#after').readyState >= 2", timeout=30_000)
    page.evaluate("""() => { for (const v of document.querySelectorAll('#compare video'))
                               v.currentTime = 1.5; }""")
    page.wait_for_timeout(1000)


def desktop(browser, url: str, out: Path) -> None:
    page = browser.new_context(viewport=DESKTOP, device_scale_factor=1).new_page()
    page.goto(url)
    _choose(page, "blur")
    page.screenshot(path=str(out / "server-upload.png"))
    page.click("#start")
    page.wait_for_function("/fps/.test(document.querySelector('#current .info')?.textContent)",
                           timeout=120_000)
    page.screenshot(path=str(out / "server-progress.png"))
    _wait_done(page)
    page.screenshot(path=str(out / "server-done.png"))
    page.context.close()


def phone(browser, url: str, out: Path) -> None:
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    page.goto(url)
    _choose(page, "transparent")
    page.screenshot(path=str(out / "server-phone-upload.png"))
    page.click("#start")
    _wait_done(page)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(out / "server-phone-done.png"))
    ctx.close()


def web_ui(out: Path, tmp: Path) -> None:
    from playwright.sync_api import sync_playwright

    srv = ServerThread(ServerConfig(data_dir=tmp / "data")).start()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            desktop(b, srv.url, out)
            phone(b, srv.url, out)
            b.close()
    finally:
        srv.stop()


def live(out: Path, tmp: Path) -> None:
    import torch
    from PIL import ImageFont

    from rvmatte.live import run_live

    torch.set_num_threads(1)  # faster than two contending threads on a small shared machine
    video = tmp / "live.mp4"
    stats = run_live(str(SAMPLE), str(video), background="blur:12", max_frames=60)
    with av.open(str(SAMPLE)) as c:
        src = [f.to_ndarray(format="rgb24") for _, f in zip(range(60), c.decode(video=0))][-1]
    with av.open(str(video)) as c:
        res = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][-1]
    canvas = Image.fromarray(np.concatenate([src, res], axis=1))
    d = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=20)
    d.text((12, 10), "source", fill=(255, 255, 0), font=font, stroke_width=2,
           stroke_fill=(0, 0, 0))
    d.text((src.shape[1] + 12, 10), f"rvmatte live --background blur   "
           f"{stats.fps:.1f} fps, ratio {stats.ratio:g}", fill=(255, 255, 0), font=font,
           stroke_width=2, stroke_fill=(0, 0, 0))
    canvas.save(out / "live-output.png")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "--live-only" not in sys.argv:
            web_ui(out, Path(tmp))
        if "--web-only" not in sys.argv:
            live(out, Path(tmp))
    print("wrote", *sorted(p.name for p in out.glob("*.png")))
