"""The web UI in headless Chromium with the real pipeline: upload the sample clip, preview,
convert, download, play the result (a transparent WebM plays with its alpha), delete."""

from __future__ import annotations

import re

import av
import pytest
from PIL import Image

from server_helpers import SAMPLE, short_sample

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PREVIEW_READY = ("document.querySelector('#preview-status').textContent"
                 ".startsWith('Preview of')")


@pytest.fixture
def real_server(make_server):
    pytest.importorskip("rvmatte.inference.convert")
    if not SAMPLE.exists():
        pytest.skip(f"sample clip missing: {SAMPLE}")
    return make_server()  # the real pipeline, bundled weights


def test_ui_end_to_end(open_page, real_server, tmp_path):
    clip = short_sample(tmp_path / "talking head.mp4")
    page = open_page(real_server, 1100, 900)
    assert page.locator("#no-jobs").is_visible()
    assert page.locator("#start").is_disabled()

    page.set_input_files("#file", str(clip))
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
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
    page.wait_for_function(PREVIEW_READY, timeout=60_000)

    page.select_option("#ratio", "0.25")
    page.select_option("#background", "blur")
    page.check("input[name=outputs][value=alpha]")
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    page.click("#start")
    row = page.locator("#jobs li.job").first
    row.locator("[data-testid=download-composite]").wait_for(timeout=120_000)
    assert row.get_attribute("data-state") == "done"
    assert "12/12 frames" in row.inner_text()
    assert "blur" in row.inner_text()
    # the thumbnail is the video's first frame
    assert row.locator("img.thumb").evaluate("i => i.complete && i.naturalWidth") == 160

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

    # past jobs survive a reload (same browser); delete asks first
    page.reload()
    page.locator("#jobs li.job[data-state=done]").wait_for(timeout=10_000)
    page.click("#jobs li.job button.delete")
    assert page.locator("#confirm").is_visible()
    page.click("#confirm-cancel")                       # "Keep it": nothing happens
    assert page.locator("#jobs li.job").count() == 1
    page.click("#jobs li.job button.delete")
    page.click("#confirm-ok")
    page.locator("#no-jobs").wait_for(state="visible", timeout=10_000)
    assert page.errors == []


# the frame drawn on a canvas: alpha at a corner (background) and at the person's chest
_ALPHA_AT = """async (v) => {
  if (v.readyState < 2) await new Promise(r => v.addEventListener('loadeddata', r, {once: true}));
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const a = (x, y) => g.getImageData(x, y, 1, 1).data[3];
  return {w: v.videoWidth, h: v.videoHeight, corner: a(8, 8), person: a(320, 330)};
}"""


def test_result_player_plays_transparent_webm(open_page, real_server, tmp_path):
    clip = short_sample(tmp_path / "talking head.mp4")
    page = open_page(real_server)
    page.set_input_files("#file", str(clip))
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    page.select_option("#background", "transparent")
    assert page.input_value("#format") == "webm"
    page.select_option("#ratio", "0.25")
    page.click("#start")
    player = page.locator("#player")
    player.wait_for(state="visible", timeout=120_000)
    assert "checkerboard" in page.inner_text("#player-note")
    after, before = page.locator("#after"), page.locator("#before")
    assert after.get_attribute("src").endswith("/result/composite")
    assert before.get_attribute("src").endswith("/source")
    # the transparent WebM keeps its alpha in the browser: clear around, opaque person
    seen = after.evaluate(_ALPHA_AT)
    assert (seen["w"], seen["h"]) == (640, 360)
    assert seen["corner"] < 40 and seen["person"] > 200, seen
    assert before.evaluate(_ALPHA_AT)["corner"] == 255  # the original: opaque
    # before/after: the slider moves the split (keyboard: End = all "before")
    page.focus("#split")
    page.keyboard.press("End")
    assert page.evaluate("getComputedStyle(document.querySelector('#compare'))"
                         ".getPropertyValue('--split').trim()") == "100%"
    page.keyboard.press("Home")
    # play: both videos run, in step
    page.click("#play")
    page.wait_for_function("document.querySelector('#after').currentTime > 0.1",
                           timeout=10_000)
    assert page.inner_text("#play") == "Pause"
    assert not page.evaluate("document.querySelector('#before').paused")
    assert page.errors == []


def test_click_a_person_in_the_preview_to_matte_only_them(open_page, real_server, tmp_path):
    """A click on the preview keeps the person there (the preview and the job get
    ``select``); a click on the empty background says why nothing can be kept; "Matte
    everyone" takes the selection back."""
    clip = short_sample(tmp_path / "talk.mp4", frames=6)
    page = open_page(real_server, 1100, 900)
    page.set_input_files("#file", str(clip))
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    page.select_option("#ratio", "0.25")
    page.wait_for_function(PREVIEW_READY, timeout=60_000)

    def click_preview(fx, fy):
        before = page.get_attribute("#preview-alpha", "src")
        box = page.locator("#preview-composite").bounding_box()
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function(
            f"document.querySelector('#preview-alpha').getAttribute('src') !== {before!r}"
            " || document.querySelector('#preview-status').textContent.startsWith('Preview "
            "failed')", timeout=60_000)

    click_preview(0.02, 0.05)  # the wall, top left: nobody there
    assert "Preview failed" in page.inner_text("#preview-status")
    assert page.locator("#selection").is_visible()
    click_preview(0.5, 0.6)  # the speaker
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    x, y = (int(v) for v in re.search(r"\((\d+), (\d+)\)",
                                      page.inner_text("#selection")).groups())
    assert abs(x - 320) <= 4 and abs(y - 216) <= 4  # the click, in the video's pixels
    page.click("#start")
    row = page.locator("#jobs li.job[data-state=done]").first
    row.wait_for(timeout=120_000)
    job = page.evaluate("[...state.jobs.values()][0]")
    assert job["options"]["select"]["points"] == [[x, y]]
    page.click("#select-everyone")
    assert page.locator("#selection").is_hidden()
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    assert page.errors == []


# the mean of an <img>'s pixels (drawn on a canvas), in levels
_IMG_MEAN = """(i) => {
  const c = document.createElement('canvas');
  c.width = i.naturalWidth; c.height = i.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(i, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let k = 0; k < d.length; k += 4) s += d[k];
  return s / (d.length / 4);
}"""


def test_empty_scene_photo_reaches_preview_and_job(open_page, real_server, tmp_path):
    """An empty-scene photo (here the first frame itself, so everything in it matches the
    'plate' and the matte empties) changes the preview's matte and goes with the job;
    "No photo" takes it back."""
    clip = short_sample(tmp_path / "talk.mp4", frames=6)
    with av.open(str(clip)) as c:
        first = next(c.decode(video=0)).to_image()
    plate = tmp_path / "empty room.png"
    first.save(plate)
    page = open_page(real_server, 1100, 900)
    page.set_input_files("#file", str(clip))
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    plain = page.locator("#preview-alpha").evaluate(_IMG_MEAN)
    before = page.get_attribute("#preview-alpha", "src")
    page.set_input_files("#plate", str(plate))
    page.locator("#plate-info").wait_for(state="visible", timeout=30_000)
    assert "empty room.png" in page.inner_text("#plate-info")
    page.wait_for_function(
        f"document.querySelector('#preview-alpha').getAttribute('src') !== {before!r}",
        timeout=60_000)
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    with_plate = page.locator("#preview-alpha").evaluate(_IMG_MEAN)
    assert plain > 40 and with_plate < 0.25 * plain, (plain, with_plate)
    page.click("#start")
    row = page.locator("#jobs li.job[data-state=done]").first
    row.wait_for(timeout=120_000)
    assert "empty-scene photo" in row.inner_text()
    job = page.evaluate("[...state.jobs.values()][0]")
    assert job["options"]["plate_upload"] == page.evaluate("state.plateUpload")
    page.click("#plate-clear")
    assert page.locator("#plate-info").is_hidden() and page.evaluate("state.plateUpload") is None
    page.wait_for_function(PREVIEW_READY, timeout=60_000)
    assert page.errors == []
