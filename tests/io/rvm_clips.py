"""Tiny generated clips for the pipeline tests (moving shapes + an audio tone), made with PyAV."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_MODEL = None


def tiny_model():
    """A random-init MobileNetV3 model (fixed seed), shared by all pipeline tests."""
    global _MODEL
    if _MODEL is None:
        import torch

        import rvmatte

        torch.manual_seed(0)
        _MODEL = rvmatte.load_model(weights=None, refiner="fast_guided_filter", device="cpu")
    return _MODEL


def frame_image(i: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 90
    img[..., 2] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
    cx = (i * 5) % w
    img[(np.abs(xx - cx) < max(2, w // 6)) & (np.abs(yy - h // 2) < h // 3)] = (230, 190, 170)
    return img


def truncated_faststart_mp4(folder, n: int = 60) -> Path:
    """A faststart MP4 (index first) cut in half: the container still declares ``n`` frames
    (a truncated download whose index survived)."""
    full = Path(folder) / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.options = {"preset": "ultrafast"}
        for i in range(n):
            for p in v.encode(av.VideoFrame.from_ndarray(frame_image(i, 64, 48), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    cut = Path(folder) / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    return cut


def make_clip(path, *, w=64, h=48, n=8, rate=Fraction(25), audio=True, codec="libx264",
              pix_fmt="yuv420p", pts=None, time_base=None, rotation=None,
              audio_rate=44100) -> Path:
    """Write a clip; ``pts`` (list, in ``time_base``) makes it VFR."""
    path = Path(path)
    c = av.open(str(path), "w")
    v = c.add_stream(codec, rate=rate)
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    if codec == "libx264":
        v.options = {"preset": "ultrafast"}
    if time_base is not None:
        v.time_base = time_base
        v.codec_context.time_base = time_base
    if rotation:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        acodec = "libopus" if path.suffix == ".webm" else "aac"
        arate = 48000 if acodec == "libopus" else audio_rate
        a = c.add_stream(acodec, rate=arate)
        a.layout = "mono"
    for i in range(n):
        f = av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")
        f.pts = pts[i] if pts is not None else i
        if time_base is not None:
            f.time_base = time_base
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    if a is not None:
        seconds = (float((pts[-1] + (pts[-1] - pts[-2])) * time_base) if pts is not None
                   else n / float(rate))
        write_tone(c, a, seconds, fmt="flt" if path.suffix == ".webm" else "fltp")
    c.close()
    return path


def write_tone(c, a, seconds: float, fmt: str = "fltp") -> None:
    """Encode ``seconds`` of a 440 Hz mono tone into audio stream ``a`` of container ``c``
    (and flush it)."""
    ns = int(seconds * a.rate)
    sig = (0.2 * np.sin(2 * np.pi * 440 * np.arange(ns) / a.rate)).astype(np.float32)
    fs = a.codec_context.frame_size or 1024
    for k in range(0, ns, fs):
        af = av.AudioFrame.from_ndarray(sig[None, k:k + fs].copy(), format=fmt, layout="mono")
        af.sample_rate = a.rate
        af.pts = k
        for p in a.encode(af):
            c.mux(p)
    for p in a.encode():
        c.mux(p)


def video_frames(path, fmt="rgb24", decoder=None):
    """(list of pts, array (N,H,W,C)) of the first video stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts, imgs = [], []
        if decoder:
            dec = av.CodecContext.create(decoder, "r")
            frames = (f for pkt in c.demux(s) for f in dec.decode(pkt))
        else:
            frames = c.decode(s)
        for f in frames:
            pts.append(f.pts)
            imgs.append(f.to_ndarray(format=fmt))
        return pts, np.stack(imgs)


def stream_info(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"time_base": v.time_base, "rate": v.average_rate, "codec": v.codec_context.name,
                "width": v.codec_context.width, "height": v.codec_context.height,
                "metadata": dict(v.metadata), "audio": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            n = 0
            first = last = None
            for f in c.decode(a):
                t = float(f.pts * f.time_base)
                first = t if first is None else first
                last = t + f.samples / f.sample_rate
                n += f.samples
            info["audio"] = {"codec": a.codec_context.name, "samples": n, "rate": a.rate,
                             "start": first, "end": last}
        return info


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
