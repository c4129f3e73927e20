"""End to end through the HTTP API with the real pipeline (convert_video)."""

from __future__ import annotations

import io

import av
import pytest

from server_helpers import wait_state

pytest.importorskip("rvmatte.inference.convert")


def decode(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
        return s.codec_context.name, frames


@pytest.mark.slow
def test_convert_through_api(make_client, clip):
    c = make_client(weights="default")  # the real ConvertRunner with the bundled weights
    r = c.post("/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
               data={"outputs": "composite,alpha", "background": "#0000ff", "ratio": "0.5"})
    assert r.status_code == 201, r.text
    job = wait_state(c, r.json()["id"], timeout=120)
    assert job["state"] == "done", job
    assert job["progress"]["done"] == 12 and job["progress"]["fraction"] == 1.0
    codec, frames = decode(c.get(job["results"]["composite"]).content)
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (96, 64)
    # the dark gradient background became blue; the bright square stayed
    img = frames[6].to_ndarray(format="rgb24").astype(int)
    assert img[:, :, 2].mean() > 100
    _, alpha = decode(c.get(job["results"]["alpha"]).content)
    assert len(alpha) == 12

    # transparent WebM: the format that keeps alpha
    r = c.post("/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
               data={"background": "transparent", "ratio": "0.5"})
    assert r.status_code == 201, r.text
    job = wait_state(c, r.json()["id"], timeout=120)
    assert job["state"] == "done", job
    assert job["options"]["format"] == "webm"
    resp = c.get(f"/api/jobs/{job['id']}/result")
    assert resp.headers["content-type"] == "video/webm"
    codec, frames = decode(resp.content)
    assert codec.startswith("vp9") or codec.startswith("libvpx")
    assert len(frames) == 12


@pytest.mark.slow
def test_cancel_running_conversion(make_client, tmp_path):
    from server_helpers import make_clip

    clip = make_clip(tmp_path / "long.mp4", frames=40)
    c = make_client()
    job = c.post("/api/jobs", files={"file": ("long.mp4", clip.read_bytes())},
                 data={"ratio": "0.25"}).json()
    wait_state(c, job["id"], states=("running", "done"))
    assert c.delete(f"/api/jobs/{job['id']}").status_code == 200
    assert c.get(f"/api/jobs/{job['id']}").status_code == 404
    manager = c.app.state.manager
    import time

    deadline = time.monotonic() + 30
    while (manager.jobs_dir / job["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (manager.jobs_dir / job["id"]).exists()


@pytest.mark.slow
def test_quality_and_selection_options_run_the_real_pipeline(make_client, tmp_path):
    """The HTTP fields reach convert_video: stabilised, foreground-estimated, the person kept
    by a box around them (the sample clip, 640x360); a point outside the video, or a box on
    nobody, fails the job with the reason."""
    from server_helpers import short_sample

    clip = short_sample(tmp_path / "talk.mp4", frames=6)
    c = make_client(weights="default")

    def alpha_mean(**fields):
        data = {"outputs": "alpha", "ratio": "0.25", **fields}
        r = c.post("/api/jobs", files={"file": ("talk.mp4", clip.read_bytes())}, data=data)
        assert r.status_code == 201, r.text
        job = wait_state(c, r.json()["id"], timeout=120)
        assert job["state"] == "done", job.get("error")
        _, alpha = decode(c.get(job["results"]["alpha"]).content)
        assert len(alpha) == 6
        return alpha[-1].to_ndarray(format="gray").mean()

    everyone = alpha_mean()
    kept = alpha_mean(stabilize="true", foreground_estimation="true",
                      select_box="160,0,640,360")
    assert everyone > 20 and abs(kept - everyone) < 0.05 * everyone
    for fields, needle in (({"select": "5000,10"}, "5000"),
                           ({"select_box": "0,0,100,100"}, "covers no person")):
        r = c.post("/api/jobs", files={"file": ("talk.mp4", clip.read_bytes())},
                   data={"ratio": "0.25", **fields})
        assert r.status_code == 201, r.text
        job = wait_state(c, r.json()["id"], timeout=120)
        assert job["state"] == "failed"
        assert needle in job["error"] and "\n" not in job["error"], job["error"]
