"""Screenshots of the web UI and of live mode for docs/ (not a test).

    .venv/bin/python tests/server/make_screenshots.py [OUT_DIR=docs/images]

Runs the real server on 127.0.0.1 with the bundled weights, drives headless Chromium through
the sample clip, and writes server-upload.png, server-progress.png, server-done.png and
live-output.png.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from server_helpers import ServerThread  # noqa: E402
from test_server_browser import CHROMIUM, CHROMIUM_ARGS, SAMPLE  # noqa: E402

from rvmatte.server.app import ServerConfig  # noqa: E402


def web_ui(out: Path, tmp: Path) -> None:
    from playwright.sync_api import sync_playwright

    srv = ServerThread(ServerConfig(data_dir=tmp / "data")).start()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1120, "height": 1000}, device_scale_factor=1)
            page.goto(srv.url)
            page.set_input_files("#file", str(SAMPLE))
            ready = ("document.querySelector('#preview-status').textContent"
                     ".startsWith('Preview of')")
            page.wait_for_function(ready, timeout=120_000)
            page.select_option("#background", "blur")
            page.select_option("#ratio", "0.25")
            page.check("input[name=outputs][value=alpha]")
            time.sleep(0.5)
            page.wait_for_function(ready, timeout=120_000)
            page.screenshot(path=str(out / "server-upload.png"), full_page=True)
            page.click("#start")
            page.locator("#jobs tbody tr[data-state=running]").wait_for(timeout=60_000)
            page.wait_for_function(
                "document.querySelector('#jobs tbody tr .small-text:last-child')"
                " && /fps/.test(document.querySelector('#jobs tbody').innerText)",
                timeout=60_000)
            page.locator("section.card").nth(1).screenshot(path=str(out / "server-progress.png"))
            page.locator("#jobs tbody tr[data-state=done]").wait_for(timeout=600_000)
            page.locator("section.card").nth(1).screenshot(path=str(out / "server-done.png"))
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
        live(out, Path(tmp))
    print("wrote", *sorted(p.name for p in out.glob("*.png")))
