"""Peer person-segmentation models (ONNX, run with onnxruntime) for side-by-side comparison.

The three models are the ones the OBS background-removal plugin ships (see
``benchmarks/peers/PROVENANCE.md``). Each takes one frame and returns a person probability at
its own input size; :class:`Peer` resizes the frame in, and the probability back to the frame
size (bilinear), so it can be scored with the same metrics as a matte. Peers have no memory and
no foreground estimate.

Preprocessing follows the plugin. Channel order was measured on clips with known alpha
(``benchmarks/peers/PROVENANCE.md`` has the numbers) and the better order is the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["PeerSpec", "PEERS", "Peer", "available_peers"]


@dataclass(frozen=True)
class PeerSpec:
    """How to feed one peer model and read its output."""

    name: str
    file: str
    title: str
    height: int
    width: int
    layout: str                     # "nhwc" or "nchw"
    channel_order: str              # "rgb" or "bgr": the order that scored better
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)   # subtracted from 0..255 pixels
    scale: tuple[float, float, float] = (255.0, 255.0, 255.0)  # then divided by this
    output: str = "prob"            # "prob" (1 channel), "softmax1" (2-ch probs), "logits1"


PEERS: dict[str, PeerSpec] = {
    "mediapipe_selfie": PeerSpec(
        name="mediapipe_selfie", file="selfie_segmentation.onnx",
        title="MediaPipe selfie segmentation (256x256)", height=256, width=256, layout="nhwc",
        channel_order="bgr", output="prob"),
    "mediapipe_meet": PeerSpec(
        name="mediapipe_meet", file="mediapipe.onnx",
        title="MediaPipe meet segmentation (256x144)", height=144, width=256, layout="nhwc",
        channel_order="rgb", output="logits1"),
    "sinet": PeerSpec(
        name="sinet", file="SINet_Softmax_simple.onnx", title="SINet portrait segmentation (320x320)",
        height=320, width=320, layout="nchw", channel_order="bgr",
        mean=(102.890434, 111.25247, 126.91212),
        scale=(62.93292 * 255, 62.82138 * 255, 66.355705 * 255), output="softmax1"),
}


def available_peers(model_dir: str | os.PathLike) -> list[str]:
    """Names of the peers whose ONNX file is in ``model_dir``."""
    d = Path(model_dir)
    return [n for n, s in PEERS.items() if (d / s.file).is_file()]


class Peer:
    """One peer model. ``peer(frame)`` with uint8 (H, W, 3) RGB -> float32 (H, W) in [0, 1]."""

    def __init__(self, name: str, model_dir: str | os.PathLike, *, channel_order: str | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        if name not in PEERS:
            raise InputError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
        self.spec = PEERS[name]
        self.name = name
        self.channel_order = channel_order or self.spec.channel_order
        path = Path(model_dir) / self.spec.file
        if not path.is_file():
            raise InputError(f"peer model not found: {path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the SINet file triggers a page of harmless warnings
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        s = self.spec
        x = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(s.height, s.width), mode="bilinear", align_corners=False,
                          antialias=True)[0]
        if self.channel_order == "bgr":
            x = x.flip(0)
        x = (x - torch.tensor(s.mean)[:, None, None]) / torch.tensor(s.scale)[:, None, None]
        if s.layout == "nhwc":
            x = x.permute(1, 2, 0)
        return x[None].contiguous().numpy().astype(np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        y = self.session.run(None, {self.input_name: self.preprocess(frame)})[0][0]
        if self.spec.layout == "nhwc":
            y = np.moveaxis(y, -1, 0)
        kind = self.spec.output
        if kind == "prob":
            p = y[0]
            lo, hi = float(p.min()), float(p.max())  # the plugin min-max normalises
            p = (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)
        elif kind == "softmax1":
            p = y[1]
        elif kind == "logits1":  # two-class logits: P(person) = softmax(...)[1]
            p = 1.0 / (1.0 + np.exp(-(y[1] - y[0])))
        else:  # pragma: no cover - specs are fixed above
            raise ValueError(kind)
        t = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))[None, None]
        out = F.interpolate(t, size=frame.shape[:2], mode="bilinear", align_corners=False)
        return out[0, 0].clamp_(0, 1).numpy()
