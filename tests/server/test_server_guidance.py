"""Guidance over HTTP: a mask of the people to keep (``select_mask_file`` /
``select_mask_upload``, as ``convert --select-mask``) and a clean background plate
(``plate_file`` / ``plate_upload``, as ``--background-plate``), stored as the job's uploads,
handed to the runner, and applied by the real conversion (the stand-in network, whose matte
is known: the scene's bright shapes)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rvm_clips import make_clip, standin_weights
from server_helpers import CopyRunner, wait_state

W, H = 160, 96
PERSON = (slice(16, 80), slice(35, 50))   # covered by the moving shape on every frame
POSTER = (slice(20, 76), slice(112, 138))  # the static shape


def scene(i: int, w: int, h: int, person: bool = True) -> np.ndarray:
    """A dark room, a static bright 'poster' on the right, a bright 'person' moving on the
    left (the stand-in mattes both)."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[20:76, 110:140] = (220, 220, 200)
    if person:
        x = 20 + 3 * i
        img[16:80, x:x + 30] = (230, 200, 180)
    return img


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    d = tmp_path_factory.mktemp("room")
    clip = make_clip(d / "room.mp4", w=W, h=H, n=6, image=scene, audio=False)
    plate = png(scene(0, W, H, person=False))
    mask = np.zeros((H, W), np.uint8)
    mask[10:86, 10:60] = 255  # the person on frame 0, not the poster
    return clip, plate, png(mask), standin_weights(d)


def submit(c, clip: Path, files=None, **data):
    files = {"file": ("room.mp4", clip.read_bytes(), "video/mp4"), **(files or {})}
    return c.post("/api/jobs", files=files, data=data)


def alpha_frames(data: bytes, folder: Path) -> np.ndarray:
    path = folder / "alpha.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)]) / 255.0


def test_mask_and_plate_are_the_jobs_uploads(make_client, room):
    """Sent as files, the mask and the plate become uploads that the job names; the runner
    gets their paths; while the job waits they cannot be deleted; sent by id they are used
    as they are; errors are JSON and store nothing."""
    from rvmatte.post.people import Selection

    clip, plate, mask, _ = room
    runner = CopyRunner(gate=threading.Event())
    c = make_client(runner)
    job = submit(c, clip, files={"plate_file": ("p.png", plate, "image/png"),
                                 "select_mask_file": ("m.png", mask, "image/png")}).json()
    opts = job["options"]
    assert all(c.get(f"/api/uploads/{opts[k]}").json()["kind"] == "image"
               for k in ("plate_upload", "select_mask_upload"))
    ups = {k: c.app.state.store.get_upload(opts[k]) for k in ("plate_upload",
                                                               "select_mask_upload")}
    for k in ups:
        r = c.delete(f"/api/uploads/{opts[k]}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    runner.gate.set()
    assert wait_state(c, job["id"])["state"] == "done"
    spec = runner.specs[-1]
    data_dir = c.app.state.manager.data_dir
    assert spec.plate == data_dir / ups["plate_upload"]["path"] and spec.plate.is_file()
    assert spec.select == Selection(mask=str(data_dir / ups["select_mask_upload"]["path"]))
    assert Image.open(spec.select.mask).size == (W, H)
    # by id, with a point too
    job = submit(c, clip, plate_upload=opts["plate_upload"], select="40,40",
                 select_mask_upload=opts["select_mask_upload"]).json()
    assert wait_state(c, job["id"])["state"] == "done"
    assert runner.specs[-1].plate == spec.plate
    assert runner.specs[-1].select.points == ((40, 40),)
    assert c.delete(f"/api/uploads/{opts['plate_upload']}").status_code == 200
    before = len(c.app.state.store.list_uploads())
    both = submit(c, clip, files={"plate_file": ("p.png", plate, "image/png")},
                  plate_upload=opts["select_mask_upload"])
    assert both.status_code == 422 and "plate_file or plate_upload" in both.text
    gone = submit(c, clip, plate_upload="0" * 32)
    assert gone.status_code == 404 and gone.json()["error"]
    video = submit(c, clip, files={"select_mask_file": ("m.png", clip.read_bytes(),
                                                        "image/png")})
    assert video.status_code == 415 and video.json()["error"]["code"] == "unsupported_type"
    assert len(c.app.state.store.list_uploads()) == before  # refused: nothing kept


@pytest.mark.slow
def test_mask_and_plate_change_the_matte(make_client, room, tmp_path):
    """The real conversion: without guidance both shapes are matted; with the mask of the
    person only the person stays; with the plate the static poster goes, the person stays;
    the preview with the plate shows the same."""
    clip, plate, mask, weights = room
    c = make_client(weights=str(weights))
    results = {}
    for name, files in (("none", {}),
                        ("mask", {"select_mask_file": ("m.png", mask, "image/png")}),
                        ("plate", {"plate_file": ("p.png", plate, "image/png")})):
        job = submit(c, clip, files=files, outputs="alpha", ratio="1").json()
        job = wait_state(c, job["id"], timeout=120)
        assert job["state"] == "done", job
        a = alpha_frames(c.get(job["results"]["alpha"]).content, tmp_path)
        results[name] = (a[(slice(None), *PERSON)].mean(), a[(slice(None), *POSTER)].mean())
    assert results["none"][0] > 0.95 and results["none"][1] > 0.95, results
    assert results["mask"][0] > 0.95 and results["mask"][1] < 0.03, results
    assert results["plate"][0] > 0.95 and results["plate"][1] < 0.03, results
    up = c.post("/api/uploads", files={"file": ("room.mp4", clip.read_bytes())}).json()
    img = c.post("/api/uploads", files={"file": ("p.png", plate)}, data={"kind": "image"}).json()
    r = c.get(f"/api/uploads/{up['id']}/preview",
              params={"view": "alpha", "ratio": "1", "plate_upload": img["id"]})
    assert r.status_code == 200, r.text
    a = np.asarray(Image.open(io.BytesIO(r.content)).convert("L")) / 255.0
    assert a[PERSON].mean() > 0.95 and a[POSTER].mean() < 0.03
