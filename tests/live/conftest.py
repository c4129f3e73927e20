"""Shared inputs of the live tests: small generated clips and a random network."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def make_clip(path: Path, frames: int = 12, w: int = 96, h: int = 64, fps: int = 12) -> Path:
    """A small H.264 clip: a light block moving over a dark background."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            img = np.full((h, w, 3), 40, np.uint8)
            x0 = (i * 5) % (w - 24)
            img[20:44, x0:x0 + 24] = (230, 200, 180)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("live") / "cam.mp4")


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory) -> Path:
    """24 frames: enough for the ratio controller's window and cool-down."""
    return make_clip(tmp_path_factory.mktemp("live") / "long.mp4", frames=24)


@pytest.fixture(scope="session")
def model():
    from rvmatte.weights import load_model

    return load_model(weights=None)
