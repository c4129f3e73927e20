"""Tiny generated clips for the pipeline tests (moving shapes + an audio tone), made with PyAV."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Optional

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


# The stand-in network: alpha = clamp(GAIN * (luma - THRESHOLD)), foreground = the frame.
STANDIN_LUMA = (0.299, 0.587, 0.114)
STANDIN_GAIN, STANDIN_THRESHOLD = 8.0, 0.5
_STANDIN = None


def standin_model():
    """A real :class:`~rvmatte.models.MattingNetwork` (MobileNetV3, Fast Guided Filter) whose
    output is known: alpha = clamp(8 * (luma - 0.5)) -- 1 on the bright shapes of the
    generated clips, 0 on their dark backgrounds, a soft ramp between -- and foreground = the
    frame (a zero residual). Only the last layers are set by hand (the output block routes
    the source's luma through; the projection thresholds it); the encoder and the recurrent
    decoder run as usual with random weights whose features are multiplied by zero, so the
    network exports to ONNX and runs on every backend (torch, ONNX Runtime, the fused CPU
    kernel) like the real one. At ratio 1 the alpha is exactly :func:`standin_alpha` of the
    frame; below 1 the guided filter smooths the ramp (flat regions stay 0 or 1)."""
    global _STANDIN
    if _STANDIN is None:
        import torch

        import rvmatte

        torch.manual_seed(0)
        m = rvmatte.load_model(weights=None, refiner="fast_guided_filter", device="cpu")
        conv0, bn0, _, conv1, bn1, _ = m.decoder.decode0.conv
        proj = m.project_mat.conv
        with torch.no_grad():
            for conv in (conv0, conv1, proj):
                conv.weight.zero_()
            conv0.weight[0, -3:, 1, 1] = torch.tensor(STANDIN_LUMA)  # channel 0 = luma of src
            conv1.weight[0, 0, 1, 1] = 1.0                          # passed on
            for bn in (bn0, bn1):  # identity BatchNorm: y = x
                bn.weight.fill_(1.0)
                bn.bias.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            proj.weight[3, 0, 0, 0] = STANDIN_GAIN                   # alpha logit
            proj.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -STANDIN_GAIN * STANDIN_THRESHOLD]))
        _STANDIN = m.eval()
    return _STANDIN


def standin_weights(folder) -> Path:
    """The stand-in network saved as a checkpoint (official keys), for ``--weights`` /
    ``ModelSpec(weights=...)`` in other processes (the CLI, the server)."""
    import torch

    path = Path(folder) / "standin.pth"
    if not path.exists():
        torch.save(standin_model().state_dict(), path)
    return path


def standin_alpha(rgb: np.ndarray) -> np.ndarray:
    """The stand-in's alpha (float in [0, 1]) of uint8 RGB frames (..., 3) at ratio 1."""
    y = (rgb.astype(np.float32) / 255.0) @ np.asarray(STANDIN_LUMA, np.float32)
    return np.clip(STANDIN_GAIN * (y - STANDIN_THRESHOLD), 0.0, 1.0)


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
              audio_rate=44100, image=None, sound=None) -> Path:
    """Write a clip; ``pts`` (list, in ``time_base``) makes it VFR. ``image(i, w, h)`` draws
    frame ``i`` (default :func:`frame_image`); ``sound(c, a, seconds, fmt)`` writes the audio
    (default :func:`write_tone`)."""
    image, sound = image or frame_image, sound or write_tone
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
        f = av.VideoFrame.from_ndarray(image(i, w, h), format="rgb24")
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
        sound(c, a, seconds, "flt" if path.suffix == ".webm" else "fltp")
    c.close()
    return path


def write_tone(c, a, seconds: float, fmt: str = "fltp") -> None:
    """Encode ``seconds`` of a 440 Hz mono tone into audio stream ``a`` of container ``c``
    (and flush it)."""
    ns = int(seconds * a.rate)
    sig = (0.2 * np.sin(2 * np.pi * 440 * np.arange(ns) / a.rate)).astype(np.float32)
    _encode_audio(c, a, sig, fmt)


def write_click(c, a, seconds: float, at: float, fmt: str = "fltp") -> None:
    """Encode ``seconds`` of silence with one click (a 5 ms 1 kHz burst at 0.8) starting at
    ``at`` seconds into audio stream ``a`` of container ``c`` (and flush it)."""
    ns, k0 = int(seconds * a.rate), int(round(at * a.rate))
    sig = np.zeros(ns, np.float32)
    burst = np.arange(int(0.005 * a.rate))
    sig[k0:k0 + burst.size] = 0.8 * np.sin(2 * np.pi * 1000 * burst / a.rate)
    _encode_audio(c, a, sig, fmt)


def _encode_audio(c, a, sig: np.ndarray, fmt: str) -> None:
    fs = a.codec_context.frame_size or 1024
    for k in range(0, sig.size, fs):
        af = av.AudioFrame.from_ndarray(sig[None, k:k + fs].copy(), format=fmt, layout="mono")
        af.sample_rate = a.rate
        af.pts = k
        for p in a.encode(af):
            c.mux(p)
    for p in a.encode():
        c.mux(p)


MARKER = (255, 130, 130)  # the click clip's marker: a light red frame (stand-in alpha 1)


def make_click_clip(path, *, n=20, rate=25, click_frame=12, w=64, h=48,
                    audio_rate=44100) -> Path:
    """A clip whose audio is silent but for one click at ``click_frame / rate`` seconds, the
    moment frame ``click_frame`` is shown -- the one frame painted :data:`MARKER` (the others
    are :func:`frame_image`'s). Audio and video last ``n / rate`` s."""

    def image(i, w, h):
        return np.full((h, w, 3), MARKER, np.uint8) if i == click_frame else frame_image(i, w, h)

    def sound(c, a, seconds, fmt):
        write_click(c, a, seconds, click_frame / rate, fmt)

    return make_clip(path, n=n, rate=Fraction(rate), w=w, h=h, audio_rate=audio_rate,
                     image=image, sound=sound)


def click_time(path, threshold: float = 0.3) -> float:
    """When the first audio sample louder than ``threshold`` plays (seconds, by the decoded
    frames' timestamps)."""
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.audio[0]):
            x = np.abs(f.to_ndarray()).max(axis=0)
            loud = np.flatnonzero(x > threshold)
            if loud.size:
                return float(f.pts * f.time_base) + loud[0] / f.sample_rate
    raise AssertionError(f"no click in the audio of {path}")


def marker_time(path) -> float:
    """When the video frame showing :data:`MARKER` is shown (its timestamp, seconds): the one
    frame whose red channel is bright and green not, on average."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        hits = [float(f.pts * f.time_base) for f in c.decode(s)
                if (lambda x: x[..., 0].mean() > 200 and x[..., 1].mean() < 170)(
                    f.to_ndarray(format="rgb24"))]
    assert len(hits) == 1, f"{len(hits)} marker frames in {path}"
    return hits[0]


def audio_frame_seconds(path) -> float:
    """One frame of the output's audio codec, in seconds (AAC: 1024 samples)."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return (a.codec_context.frame_size or 1024) / a.rate


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


def asymmetric_image(h: int, w: int) -> np.ndarray:
    """A background image: red on the left, blue on the right, a green ramp down (a swap of
    red and blue, a mirror or a flip all change it)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 220
    img[:, w // 2:, 2] = 200
    img[..., 1] = np.linspace(0, 160, h).astype(np.uint8)[:, None]
    return img


def png_frames(folder) -> np.ndarray:
    """The PNG files of ``folder``, sorted by name, stacked."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(Path(folder).glob("*.png"))])


def assert_composite(comp, fgr, alpha, bg, *, tol: float = 2.0,
                     lossy: Optional[tuple] = None) -> None:
    """``comp`` (uint8 (..., 3)) is ``fgr * alpha + bg * (1 - alpha)`` within ``tol`` levels
    everywhere. ``fgr`` (..., 3) and ``bg`` in levels (0-255, uint8 or float), ``alpha``
    levels (...) too. ``lossy=(mean, p99)``: for a lossy (4:2:0) output, the mean and the 99th
    percentile of the differences instead (chroma subsampling blurs colour edges)."""
    a = np.asarray(alpha, np.float64)[..., None] / 255.0
    want = np.asarray(fgr, np.float64) * a + np.asarray(bg, np.float64) * (1.0 - a)
    diff = np.abs(np.asarray(comp, np.float64) - want)
    where = np.unravel_index(int(diff.argmax()), diff.shape)
    msg = (f"composite off by up to {diff.max():.1f} levels (mean {diff.mean():.2f}, 99th "
           f"percentile {np.percentile(diff, 99):.1f}) at {where}: got "
           f"{np.asarray(comp)[where[:-1]]}, want {want[where[:-1]].round(1)} "
           f"(alpha {a[where[:-1]][0]:.3f})")
    if lossy is None:
        assert diff.max() <= tol, msg
    else:
        assert diff.mean() <= lossy[0] and np.percentile(diff, 99) <= lossy[1], msg
