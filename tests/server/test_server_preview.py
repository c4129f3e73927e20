"""The web preview goes through the job's path: the preview of frame 0 is the job's first
frame (same model spec, background and ratio, through convert_video), not a look-alike."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from server_helpers import make_textured_clip, wait_state

pytest.importorskip("rvmatte.inference.convert")


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> Path:
    # on this clip the old preview (eager PyTorch on the frame) was 1 level off the job in
    # every case below but the colour at ratio auto
    return make_textured_clip(tmp_path_factory.mktemp("clips") / "textured.mp4")


def png_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def job_first_frame_lossless(client, job_id: str, kind: str, folder: Path) -> np.ndarray:
    """Frame 0 of ``kind`` as the job's own runner makes it from the job's stored options,
    written as PNG (lossless) instead of the job's H.264."""
    manager = client.app.state.manager
    task = manager.spec_for(client.app.state.store.get_job(job_id))
    task = replace(task, outputs={kind: folder / "%06d.png"}, workdir=folder)
    manager.runner(task, progress=lambda info: None, cancel=threading.Event(), resume=False)
    first = sorted(folder.glob("*.png"))[0]
    return np.asarray(Image.open(first))


@pytest.mark.slow
@pytest.mark.parametrize("background, ratio, view", [
    ("#0000ff", "0.5", "composite"),     # the fused CPU path (a colour, ratio < 1)
    ("blur:4", "0.5", "composite"),      # a background only the PyTorch compositor makes
    ("transparent", "auto", "composite"),
    ("#0000ff", "0.5", "alpha"),
])
def test_preview_is_the_jobs_first_frame(make_client, textured, tmp_path, background, ratio,
                                         view):
    c = make_client(weights="default")  # the real ConvertRunner with the bundled weights
    up = c.post("/api/uploads", files={"file": ("v.mp4", textured.read_bytes())}).json()
    r = c.get(f"/api/uploads/{up['id']}/preview",
              params={"background": background, "ratio": ratio, "view": view})
    assert r.status_code == 200, r.text
    preview = png_array(r.content)

    outputs = "composite" if view == "composite" else "alpha"
    r = c.post("/api/jobs", data={"upload_id": up["id"], "outputs": outputs,
                                  "background": background, "ratio": ratio})
    assert r.status_code == 201, r.text
    job = wait_state(c, r.json()["id"], timeout=120)
    assert job["state"] == "done", job
    lossless = job_first_frame_lossless(c, job["id"], outputs, tmp_path / "job")
    assert preview.shape == lossless.shape and preview.dtype == np.uint8
    diff = np.abs(preview.astype(int) - lossless.astype(int))
    assert diff.max() == 0, f"max |diff| {diff.max()}, {np.count_nonzero(diff)} values differ"

    if background == "transparent":
        return  # (the served VP9's alpha needs libvpx's decoder to read back)
    # and the file the job served (H.264, lossy) shows the same frame
    with av.open(io.BytesIO(c.get(job["results"][outputs]).content)) as f:
        served = next(f.decode(video=0)).to_ndarray(format="rgb24")
    if preview.ndim == 2:  # the alpha video: gray, stored as luma
        served = served[..., 0]
    assert np.abs(served.astype(int) - preview.astype(int)).mean() < 4


@pytest.fixture(scope="module")
def standin_pth(tmp_path_factory) -> Path:
    from rvm_clips import standin_weights

    return standin_weights(tmp_path_factory.mktemp("weights"))


@pytest.mark.parametrize("background, ratio", [
    ("#ff0000", "0.5"),    # the fused CPU path (a colour, ratio < 1)
    ("#3366cc", "1"),      # the tensor path
    ("image", "auto"),     # an uploaded, asymmetric image
    ("blur:4", "0.5"),
])
def test_preview_composite_is_the_matte_over_the_background(make_client, clip, standin_pth,
                                                            background, ratio):
    """The preview (PNG, lossless) is fgr * alpha + bg * (1 - alpha) within 2 levels, with
    fgr and alpha from the transparent and alpha previews of the same frame, the stand-in
    network's matte (0 on the clip's background, 1 on its box) and the background the
    request named."""
    import torch

    from rvm_clips import asymmetric_image, assert_composite, video_frames
    from rvmatte.io.compose import BlurBackground, parse_color

    c = make_client(weights=str(standin_pth))
    up = c.post("/api/uploads", files={"file": ("v.mp4", clip.read_bytes())}).json()
    url = f"/api/uploads/{up['id']}/preview"

    def preview(**params) -> np.ndarray:
        r = c.get(url, params={"ratio": ratio, "frame": 2, **params})
        assert r.status_code == 200, r.text
        return png_array(r.content)

    rgba, alpha = preview(background="transparent"), preview(view="alpha")
    assert rgba.shape == (64, 96, 4) and np.array_equal(rgba[..., 3], alpha)
    assert (alpha == 0).mean() > 0.5 and (alpha == 255).mean() > 0.05
    frame = video_frames(clip)[1][2]
    params = {"background": background}
    if background == "image":
        bg = asymmetric_image(64, 96)
        buf = io.BytesIO()
        Image.fromarray(bg).save(buf, "PNG")
        img = c.post("/api/uploads", files={"file": ("bg.png", buf.getvalue())},
                     data={"kind": "image"}).json()
        params["background_upload"] = img["id"]
    elif background.startswith("blur"):
        src = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        bg = BlurBackground(4).get(src, 0)[0].permute(1, 2, 0).numpy() * 255
    else:
        bg = np.broadcast_to(parse_color(background), frame.shape)
    comp = preview(**params)
    assert comp.shape == (64, 96, 3)
    assert_composite(comp, rgba[..., :3], alpha, bg)
