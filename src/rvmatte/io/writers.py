"""Writers: output formats, video segments, image sequences, final assembly with audio.

Video outputs are encoded in *segments* (fixed frame ranges, the unit of a resume checkpoint)
inside a job folder; when the job is complete the segments' packets are remuxed, without
re-encoding, into the final container together with the input's audio (stream copy where the
container allows it, else re-encoded), into a temporary file that is renamed into place.
Segment boundaries are fixed frame indices, so an interrupted-and-resumed job writes the same
frames as an uninterrupted one (the same bytes, as far as the encoder is deterministic:
docs/PIPELINE.md). :mod:`rvmatte.io.segments` runs the segment writers.
"""

from __future__ import annotations

import errno
import functools
import heapq
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import OutputError, one_line
from .readers import IMAGE_EXTS, is_pattern
from .yuv import image_to_yuv420

# user-facing codec name -> PyAV encoder
CODECS = {"h264": "libx264", "h265": "libx265", "hevc": "libx265", "vp9": "libvpx-vp9",
          "prores": "prores_ks", "ffv1": "ffv1", "png": "png", "qtrle": "qtrle"}
ALPHA_CODECS = {"vp9", "prores", "ffv1", "png", "qtrle"}


@dataclass(frozen=True)
class ContainerSpec:
    format: str          # libavformat muxer
    codecs: tuple        # allowed user codec names, first = default
    audio_copy: tuple    # audio codecs that can be stream-copied into it
    audio_encoder: str   # encoder used when the input's audio cannot be copied


CONTAINERS = {
    ".mp4": ContainerSpec("mp4", ("h264", "h265"), ("aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"), "aac"),
    ".m4v": ContainerSpec("mp4", ("h264", "h265"), ("aac", "mp3", "alac", "ac3", "eac3"), "aac"),
    ".mkv": ContainerSpec("matroska", ("h264", "h265", "vp9", "ffv1"),
                          ("aac", "mp3", "opus", "vorbis", "flac", "ac3", "eac3", "alac",
                           "pcm_s16le", "pcm_s24le", "pcm_f32le"), "aac"),
    ".mov": ContainerSpec("mov", ("prores", "h264", "h265", "qtrle", "png"),
                          ("aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"), "aac"),
    ".webm": ContainerSpec("webm", ("vp9",), ("opus", "vorbis"), "libopus"),
}
# Segments are stored in a container that keeps each codec's timestamps exactly (decode
# timestamps included: Matroska drops them for B-frames).
SEGMENT_FORMAT = {"h264": ("mp4", ".mp4"), "h265": ("mp4", ".mp4"), "vp9": ("webm", ".webm"),
                  "prores": ("mov", ".mov"), "qtrle": ("mov", ".mov"), "png": ("mov", ".mov"),
                  "ffv1": ("matroska", ".mkv")}
DEFAULT_QUALITY = {"h264": 18, "h265": 22, "vp9": 28}
# x264/x265 speed presets (--preset), fastest first. The default is "veryfast": at the same
# CRF it costs about half of "medium"'s encoding time for a difference of ~0.6 dB (alpha,
# 53.4 vs 52.8 dB against a lossless encode; sizes within 10 %, either way); encoding
# is what bounds a conversion on a GPU and a large share of it on a CPU.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow")
DEFAULT_PRESET = "veryfast"
# The alpha stream of an H.264/H.265 output: "yuv420" (Y = alpha in limited range, flat grey
# chroma: plays everywhere H.264 does) or "gray" (one plane, 4:0:0: H.264 High profile
# monochrome, H.265 Range Extensions; Y = alpha in full range, every level kept). 4:0:0 costs
# about 20 % less CPU but few hardware decoders take it (docs/PIPELINE.md, Output formats).
ALPHA_FORMATS = ("yuv420", "gray")
DEFAULT_ALPHA_FORMAT = "yuv420"
# x264 encodes an H.264 alpha stream this many presets faster than --preset (veryfast ->
# ultrafast). A matte is flat: at 1080p ultrafast halves its CPU time (5.4 against 11 ms a
# frame) and is the more exact (max |dalpha| 8-11 against 35-53 at CRF 18), as it spends no
# AQ / mb-tree bits away from the moving edges; it writes 3-5x the bytes of a very small stream
# (17-19 KiB a frame against 3-6) and Constrained Baseline, which every H.264 decoder plays.
# benchmarks/alpha_encode.py measures it.
ALPHA_PRESET_STEPS = 2
# NVIDIA hardware encoders, tried for H.264/H.265 when the model runs on a CUDA GPU.
HARDWARE_ENCODERS = {"h264": "h264_nvenc", "h265": "hevc_nvenc"}
# x264 preset -> NVENC preset (p1 fastest .. p7 best)
_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3",
                 "fast": "p3", "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7"}
ENCODER_CHOICES = ("auto", "software", "hardware")


@dataclass
class OutputSpec:
    """One requested output. ``kind``: composite | alpha | foreground."""

    kind: str
    path: Path
    mode: str                 # "video" | "images" | "image"
    codec: str = "png"        # user-facing codec name
    rgba: bool = False        # frames carry an alpha channel (transparent composite / foreground)
    alpha_bits: int = 8       # alpha as PNG: 8 or 16 bit grayscale
    quality: Optional[int] = None
    preset: str = DEFAULT_PRESET  # x264/x265 speed preset (NVENC: the nearest p1..p7)
    encoder: Optional[str] = None  # libavcodec encoder; None = the software one for the codec
    alpha_format: str = DEFAULT_ALPHA_FORMAT  # an H.264/H.265 alpha stream: yuv420 | gray

    @property
    def encoder_name(self) -> str:
        return self.encoder or CODECS[self.codec]

    @property
    def container(self) -> Optional[ContainerSpec]:
        return CONTAINERS.get(self.path.suffix.lower()) if self.mode == "video" else None

    @property
    def channels(self) -> str:
        """What the encode thread feeds: "rgb", "rgba" or "gray"."""
        if self.kind == "alpha":
            return "gray"
        return "rgba" if self.rgba else "rgb"

    @property
    def gray(self) -> bool:
        """An alpha stream encoded as one plane (4:0:0): asked for, and the encoder takes it
        (x264 / x265; NVENC and the other codecs keep their usual form)."""
        return (self.kind == "alpha" and self.mode == "video" and self.alpha_format == "gray"
                and self.encoder_name in ("libx264", "libx265"))

    @property
    def encode_preset(self) -> str:
        """The x264/x265 preset this output is encoded with: :attr:`preset`, or for an H.264
        alpha stream :data:`ALPHA_PRESET_STEPS` faster."""
        if self.kind == "alpha" and self.encoder_name == "libx264" and self.preset in PRESETS:
            return PRESETS[max(0, PRESETS.index(self.preset) - ALPHA_PRESET_STEPS)]
        return self.preset

    def describe(self) -> str:
        if self.mode == "video":
            return self.codec + (" +alpha" if self.rgba else "") + (" gray" if self.gray else "")
        return "png" + (" rgba" if self.rgba else (f" gray{self.alpha_bits}" if self.kind == "alpha" else ""))


def check_alpha_format(value: Optional[str]) -> str:
    """``None`` -> :data:`DEFAULT_ALPHA_FORMAT`; an unknown name -> :class:`OutputError`."""
    if value is None:
        return DEFAULT_ALPHA_FORMAT
    name = str(value).strip().lower()
    if name not in ALPHA_FORMATS:
        raise OutputError(f"unknown alpha format {value!r}; choose from "
                          f"{', '.join(ALPHA_FORMATS)}")
    return name


def plan_output(kind: str, path, *, codec: Optional[str], transparent: Optional[bool],
                quality: Optional[int] = None, alpha_bits: int = 8, still: bool = False,
                alpha_format: Optional[str] = None) -> OutputSpec:
    """Decide how to write ``path``. ``transparent``: True (must store alpha), False (opaque),
    None (store alpha if the format can). ``alpha_format``: an H.264/H.265 alpha output's
    stream, ``"yuv420"`` (default) or ``"gray"`` (4:0:0; other codecs keep their form).
    Raises :class:`OutputError` for impossible requests."""
    p = Path(path)
    if alpha_bits not in (8, 16):
        raise OutputError(f"alpha bit depth must be 8 or 16, got {alpha_bits}")
    alpha_format = check_alpha_format(alpha_format)
    codec_name = codec.lower() if codec else None
    if codec_name is not None and codec_name not in CODECS:
        raise OutputError(f"unknown codec {codec!r}; choose from {', '.join(sorted(set(CODECS) - {'hevc'}))}")
    suffix = p.suffix.lower()
    if is_pattern(p) or (not suffix and not still) or (p.is_dir() and not still):
        if is_pattern(p) and suffix != ".png":
            raise OutputError(f"image-sequence output {p} must end in .png (e.g. frames/%06d.png)")
        if codec_name not in (None, "png"):
            raise OutputError(f"image-sequence output {p} is written as PNG; --codec {codec} does not apply")
        mode = "images"
    elif suffix in IMAGE_EXTS:
        if not still:
            raise OutputError(f"output {p} is an image but the input is a video; use a video "
                              "extension (.mp4 .mkv .mov .webm) or a folder / %06d.png pattern")
        mode = "image"
    elif suffix in CONTAINERS:
        if still:
            raise OutputError(f"the input is a single image; write an image (.png) instead of {p}")
        mode = "video"
    else:
        raise OutputError(f"unknown output extension {suffix or '(none)'!r} for {p}; use .mp4 .mkv "
                          ".mov .webm, a folder, a %06d.png pattern" + (" or .png/.jpg" if still else ""))
    if mode == "video":
        spec = CONTAINERS[suffix]
        if codec_name == "hevc":
            codec_name = "h265"
        if codec_name is None:
            codec_name = spec.codecs[0]
            if transparent and codec_name not in ALPHA_CODECS:
                codec_name = next((c for c in spec.codecs if c in ALPHA_CODECS), codec_name)
        if codec_name not in spec.codecs:
            raise OutputError(f"codec {codec_name} cannot be written to {suffix} files; "
                              f"{suffix} takes {', '.join(spec.codecs)}")
        can_alpha = codec_name in ALPHA_CODECS
    elif mode == "image":
        can_alpha = suffix in (".png", ".webp", ".tif", ".tiff")
        codec_name = suffix.lstrip(".")
    else:
        can_alpha = True
        codec_name = "png"
    if kind == "alpha":
        rgba = False
    elif transparent is True and not can_alpha:
        raise OutputError(f"{p}: {codec_name} {suffix or 'output'} cannot store transparency; use "
                          ".mov (ProRes 4444), .webm (VP9), .png frames, or pick a background colour")
    else:
        rgba = can_alpha if transparent is None else bool(transparent)
    if quality is not None and not (0 <= int(quality) <= 63):
        raise OutputError(f"invalid quality {quality}: use a CRF-like value, 0 (best) .. 51")
    return OutputSpec(kind=kind, path=p, mode=mode, codec=codec_name, rgba=rgba,
                      alpha_bits=alpha_bits, quality=quality, alpha_format=alpha_format)


def pix_fmt_for(spec: OutputSpec, width: int, height: int) -> str:
    """The pixel format ``spec``'s encoder is given at ``width`` x ``height``."""
    odd = width % 2 or height % 2
    c = spec.codec
    if spec.gray:
        return "gray"                            # 4:0:0 has no chroma to subsample: any size
    if c in ("h264", "h265"):
        return "yuv444p" if odd else "yuv420p"   # 4:2:0 needs even sizes; keep the exact size
    if c == "vp9":
        return "yuva420p" if spec.rgba else "yuv420p"
    if c == "prores":
        return "yuva444p10le" if spec.rgba else "yuv444p10le"
    if c == "ffv1":
        return "bgra" if spec.rgba else ("gray" if spec.channels == "gray" else "bgr0")
    if c == "qtrle":
        return "argb" if spec.rgba else "rgb24"
    if c == "png":
        return "rgba" if spec.rgba else ("gray" if spec.channels == "gray" else "rgb24")
    raise OutputError(f"no pixel format for codec {c}")


def check_preset(preset: Optional[str]) -> str:
    """``None`` -> the default; an unknown name -> :class:`OutputError`."""
    if preset is None:
        return DEFAULT_PRESET
    name = str(preset).lower()
    if name not in PRESETS:
        raise OutputError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return name


@functools.cache
def hardware_encoder_error(name: str) -> Optional[str]:
    """Why the encoder ``name`` (e.g. ``h264_nvenc``) cannot be used here, or ``None`` if it can.

    PyAV's FFmpeg lists NVENC whether or not the machine has an NVIDIA GPU with an encoder
    (H100 and H200 have none; GeForce, RTX and L4/L40 cards do), so the only reliable test is
    to open one and encode a frame. The answer is cached per process."""
    import av

    err: Optional[str] = None
    if name not in av.codecs_available:
        err = f"this FFmpeg build has no {name} encoder"
    else:
        try:
            cc = av.CodecContext.create(name, "w")
            cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
            cc.time_base = Fraction(1, 25)
            cc.framerate = Fraction(25)
            cc.open()
            frame = av.VideoFrame(256, 256, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = 0
            cc.encode(frame)
            cc.encode(None)
        except Exception as e:  # noqa: BLE001 - any failure means "not usable here"
            err = f"{name} cannot encode on this machine ({one_line(e)})"
    return err


def check_encoder_choice(choice: str) -> str:
    """``choice`` if it is one of :data:`ENCODER_CHOICES`, else :class:`OutputError`."""
    if choice not in ENCODER_CHOICES:
        raise OutputError(f"unknown encoder choice {choice!r}; choose from {', '.join(ENCODER_CHOICES)}")
    return choice


def pick_encoder(codec: str, choice: str = "auto", *, gpu: bool = False) -> tuple[Optional[str], Optional[str]]:
    """``(encoder, note)`` for a video codec. ``choice``: ``"software"`` (libx264 etc.),
    ``"hardware"`` (NVENC, or :class:`OutputError` if it cannot run here) or ``"auto"``
    (NVENC when ``gpu`` and it works here, else software; ``note`` says why software)."""
    check_encoder_choice(choice)
    hw = HARDWARE_ENCODERS.get(codec)
    if choice == "software" or (choice == "auto" and not gpu):
        return None, None
    if hw is None:
        if choice == "hardware":
            raise OutputError(f"no hardware encoder for {codec}; hardware encoding covers "
                              f"{', '.join(HARDWARE_ENCODERS)}")
        return None, None
    err = hardware_encoder_error(hw)
    if err is None:
        return hw, None
    if choice == "hardware":
        raise OutputError(f"{err}; use --encoder software")
    return None, f"{err}: using {CODECS[codec]}"


def encoder_options(spec: OutputSpec) -> dict:
    """The libavcodec options ``spec``'s encoder is opened with."""
    q = spec.quality if spec.quality is not None else DEFAULT_QUALITY.get(spec.codec)
    # No B-frames for H.264/H.265: every segment then has decode time == presentation
    # time, so segments concatenate into one stream with exact timestamps (a segment with
    # a different reordering delay would break the muxer's durations).
    if spec.encoder_name.endswith("_nvenc"):
        return {"preset": _NVENC_PRESET[spec.preset], "rc": "vbr", "cq": str(q), "b": "0",
                "bf": "0"}
    if spec.codec == "h264":
        opts = {"crf": str(q), "preset": spec.encode_preset, "bf": "0"}
        if x264_cpu() is not None:
            opts["x264-params"] = f"asm={x264_cpu()}"
        return opts
    if spec.codec == "h265":
        return {"crf": str(q), "preset": spec.encode_preset,
                "x265-params": "log-level=error:bframes=0"}
    if spec.codec == "vp9":
        opts = {"crf": str(q), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
        if spec.rgba:
            opts["auto-alt-ref"] = "0"  # required by libvpx for alpha
        return opts
    if spec.codec == "prores":
        opts = {"profile": "4", "vendor": "apl0"}  # 4444 (alpha when rgba)
        if spec.quality is not None:
            opts["qscale"] = str(max(1, min(32, int(spec.quality))))
        return opts
    return {}


@functools.cache
def x264_cpu() -> Optional[str]:
    """The CPU capabilities libx264 is told to use (its ``asm`` option): the ones it detects
    here, less AVX-512; ``None`` where it uses no AVX-512 (nothing to change) or does not say.

    With its AVX-512 code, the x264 in PyAV 18.1 (core 165) now and then codes the same
    frames a few levels differently from run to run (about 1 in 1000 encodes of 96x48
    pictures on the reference AMD EPYC, one thread or several); without it, none in 22,500
    (scripts/x264_determinism.py), for no measurable speed (1080p, one thread: 9.2 against
    9.4 ms a frame ultrafast, 20.2 against 20.3 veryfast; benchmarks/encode_speed.py
    --avx512). The capabilities are read from the "using cpu capabilities" line x264 logs
    when it opens, once per process, so only names it detected here are passed back."""
    import av
    import av.logging

    try:
        with av.logging.Capture() as logs:
            level = av.logging.get_level()
            av.logging.set_level(av.logging.INFO)
            try:
                cc = av.CodecContext.create("libx264", "w")
                cc.width, cc.height, cc.pix_fmt = 64, 48, "yuv420p"
                cc.time_base = Fraction(1, 25)
                cc.open()
            finally:
                av.logging.set_level(level)
    except (av.error.FFmpegError, ValueError):
        return None
    prefix = "using cpu capabilities:"
    names = next((m.split(prefix, 1)[1].split() for _, _, m in logs if prefix in m), [])
    kept = [n for n in names if not n.upper().startswith("AVX512")]
    return ",".join(kept) if kept and len(kept) < len(names) else None


def _ndarray_format(channels: str) -> str:
    return {"rgb": "rgb24", "rgba": "rgba", "gray": "gray"}[channels]


class SegmentWriter:
    """Encodes one segment (a fixed frame range) of one video output into its own file.
    Timestamps in the segment start at 0; :func:`assemble` adds the segment's offset back."""

    def __init__(self, spec: OutputSpec, path: Path, width: int, height: int,
                 time_base: Fraction, rate: Fraction, start_pts: int, *, yuv: bool = False,
                 threads: Optional[int] = None) -> None:
        """``yuv``: :meth:`write` receives YUV 4:2:0 planes ``(H*3/2, W)`` (see
        :mod:`rvmatte.io.yuv`) instead of RGB / RGBA / gray images. ``threads``: the
        encoder's thread count (default: its own choice)."""
        import av

        self.spec, self.path, self.start_pts = spec, path, start_pts
        fmt, _ = SEGMENT_FORMAT[spec.codec]
        try:
            self.container = av.open(str(path), "w", format=fmt)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {path}: {e}") from None
        s = self.container.add_stream(spec.encoder_name, rate=rate)
        s.width, s.height = width, height
        s.pix_fmt = pix_fmt_for(spec, width, height)
        if s.pix_fmt.startswith("yuv"):
            # Say which matrix the YUV was made with: BT.601, limited range (libswscale's
            # default for RGB input, and what rvmatte.io.yuv writes). Untagged, players guess,
            # and most guess BT.709 for HD, which shifts the colours slightly.
            s.codec_context.colorspace = 6      # AVCOL_SPC_SMPTE170M (BT.601)
            s.codec_context.color_range = 1     # AVCOL_RANGE_MPEG (limited)
        elif s.pix_fmt == "gray" and spec.codec in ("h264", "h265"):
            s.codec_context.color_range = 2     # AVCOL_RANGE_JPEG: Y is the alpha, 0..255
        s.time_base = time_base
        s.codec_context.time_base = time_base
        s.options = encoder_options(spec)
        if threads is not None:
            s.codec_context.thread_count = int(threads)
        self.stream = s
        if yuv and s.pix_fmt != "yuv420p":
            raise OutputError(f"{path}: {s.pix_fmt} output cannot be fed YUV 4:2:0 planes")
        # Images for a 4:2:0 stream (even sizes) are converted here (rvmatte.io.yuv: the fused
        # path's arithmetic and colours, less CPU), not by libswscale inside encode().
        self._convert = (not yuv and s.pix_fmt in ("yuv420p", "yuva420p")
                         and width % 2 == 0 and height % 2 == 0)
        self._fmt = "yuv420p" if yuv else _ndarray_format(spec.channels)
        self._last = None
        self.frames = 0

    def write(self, image: np.ndarray, pts: int) -> None:
        import av

        if self._convert:
            frame = _yuv420_frame(image, self.stream.pix_fmt)
        else:
            frame = av.VideoFrame.from_ndarray(image, format=self._fmt)
        if self.spec.codec == "prores":
            # prores_ks writes the colour tags of each frame (not the stream's) into the file:
            # convert here (what encode() would do) and tag the result as BT.601 limited.
            frame = frame.reformat(format=self.stream.pix_fmt)
            frame.colorspace, frame.color_range = 6, 1
        rel = pts - self.start_pts
        if self._last is not None and rel <= self._last:
            rel = self._last + 1
        self._last = rel
        frame.pts = rel
        frame.time_base = self.stream.codec_context.time_base
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise _write_error(self.path, e) from None
        self.frames += 1

    def close(self) -> None:
        import av

        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise _write_error(self.path, e) from None

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on an error path; the file is discarded
            pass


def _yuv420_frame(image: np.ndarray, pix_fmt: str):
    """A ``yuv420p`` frame of a uint8 RGB ``(H, W, 3)`` or gray ``(H, W)`` image, or a
    ``yuva420p`` one of an RGBA ``(H, W, 4)`` image (alpha copied as it is), made by
    :func:`~rvmatte.io.yuv.image_to_yuv420`. Even sizes."""
    import av

    planes = image_to_yuv420(image[..., :3] if image.ndim == 3 else image)
    if pix_fmt == "yuv420p":
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")
    h, w = image.shape[:2]
    chroma = planes[h:].reshape(2, h // 2, w // 2)
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, data in zip(frame.planes, (planes[:h], chroma[0], chroma[1], image[..., 3])):
        rows = np.frombuffer(plane, np.uint8).reshape(data.shape[0], plane.line_size)
        rows[:, :data.shape[1]] = data
    return frame


def _write_error(path, e) -> OutputError:
    text = str(e)
    if "No space" in text or getattr(e, "errno", None) == 28:
        return OutputError(f"disk full while writing {path}")
    if "File too large" in text or getattr(e, "errno", None) == 27:
        return OutputError(f"file size limit reached while writing {path} (disk full?)")
    return OutputError(f"cannot write {path}: {one_line(e)}")


def write_png(path: Path, image: np.ndarray, *, bits: int = 8) -> None:
    """Write an RGB, RGBA or grayscale (uint8, or uint16 when ``bits`` is 16) PNG/image."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image))  # L, I;16, RGB or RGBA from the dtype/shape
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), None)
    tmp = path.with_name(path.name + ".part")
    try:
        im.save(tmp, format=fmt or "PNG")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from None


def image_name(spec: OutputSpec, index: int) -> str:
    if is_pattern(spec.path):
        return spec.path.name % index
    return f"{index:06d}.png"


# ---- final assembly ------------------------------------------------------------------------

@dataclass
class AudioPlan:
    path: Path
    index: int
    start: Optional[float]   # seconds of input to keep (None = from the start)
    end: Optional[float]
    offset: float            # seconds subtracted from input timestamps


def _packets(container, stream, offset_pts: int) -> Iterator:
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        packet.pts += offset_pts
        if packet.dts is not None:
            packet.dts += offset_pts
        yield packet


def assemble(spec: OutputSpec, segments: list, final_path: Path, *, time_base: Fraction,
             rate: Fraction, audio: Optional[AudioPlan]) -> Optional[str]:
    """Remux ``segments`` [(path, start_pts)] (+ audio) into ``final_path``. Returns how the
    audio was carried ("copy", "aac", ... or None)."""
    import av

    cspec = spec.container
    opened = []
    try:
        # bitexact: no random Matroska segment UID, so a resumed job writes the same bytes
        out = av.open(str(final_path), "w", format=cspec.format, options={"fflags": "+bitexact"})
    except (av.error.FFmpegError, OSError) as e:
        raise _write_error(final_path, e) from None
    audio_mode = None
    try:
        for seg_path, _ in segments:
            opened.append(av.open(str(seg_path), "r"))
        template = opened[0].streams.video[0]
        vs = out.add_stream_from_template(template)
        vs.time_base = time_base
        if spec.codec == "vp9" and spec.rgba:
            vs.metadata["alpha_mode"] = "1"  # the alpha plane travels as BlockAdditional data
        try:
            vs.codec_context.framerate = rate
        except (AttributeError, ValueError):
            pass

        def video_iter():
            for c, (_, start_pts) in zip(opened, segments):
                st = c.streams.video[0]
                off = int(round(start_pts * time_base / st.time_base))
                for packet in _packets(c, st, off):
                    packet.stream = vs
                    yield (float(packet.dts if packet.dts is not None else packet.pts) * float(st.time_base), 0, packet)

        streams = [video_iter()]
        audio_in = None
        if audio is not None:
            audio_in = av.open(str(audio.path), "r")
            opened.append(audio_in)
            a = audio_in.streams[audio.index]
            if a.codec_context.name in cspec.audio_copy:
                os_ = out.add_stream_from_template(a)
                streams.append(_audio_copy(audio_in, a, os_, audio,
                                           drop_negative=cspec.format in ("matroska", "webm")))
                audio_mode = "copy"
            else:
                streams.append(_audio_encode(audio_in, a, out, cspec.audio_encoder, audio))
                audio_mode = cspec.audio_encoder.replace("lib", "")
        for _, _, packet in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
            out.mux(packet)
        out.close()
    except av.error.FFmpegError as e:
        try:
            out.close()
        except Exception:  # noqa: BLE001 - already failing; report the first error
            pass
        final_path.unlink(missing_ok=True)
        raise _write_error(final_path, e) from None
    except OSError as e:
        final_path.unlink(missing_ok=True)
        raise _write_error(final_path, e) from None
    finally:
        for c in opened:
            c.close()
    return audio_mode


def _audio_copy(container, stream, out_stream, plan: AudioPlan, drop_negative: bool = False):
    tb = float(stream.time_base)
    off = int(round(plan.offset / tb))
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        t = packet.pts * tb
        if plan.start is not None and t < plan.start - 1e-6:
            continue
        if plan.end is not None and t >= plan.end - 1e-6:
            break
        packet.pts -= off
        if packet.dts is not None:
            packet.dts -= off
        if drop_negative and packet.pts + (packet.duration or 0) <= 0:
            # encoder priming before t=0 (mp4 hides it with an edit list; Matroska cannot
            # store negative times and would shift the video instead)
            continue
        packet.stream = out_stream
        yield (float((packet.dts if packet.dts is not None else packet.pts) * tb) - plan.offset, 1, packet)


def _audio_encode(container, stream, out, encoder: str, plan: AudioPlan):
    import av

    rate = 48000 if encoder == "libopus" else (stream.rate or 48000)
    layout = "stereo" if (stream.channels or 2) >= 2 else "mono"
    os_ = out.add_stream(encoder, rate=rate)
    os_.layout = layout
    fmt = "flt" if encoder == "libopus" else "fltp"
    os_.format = fmt
    os_.time_base = Fraction(1, rate)
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    fifo = av.AudioFifo()

    def gen():
        next_pts = None

        def drain(final=False):
            nonlocal next_pts
            fs = os_.codec_context.frame_size or 1024
            while fifo.samples >= fs or (final and fifo.samples > 0):
                fr = fifo.read(min(fs, fifo.samples) if final else fs)
                fr.pts = next_pts
                fr.time_base = Fraction(1, rate)
                next_pts += fr.samples
                for p in os_.encode(fr):
                    yield (float(p.pts * p.time_base) if p.pts is not None else 0.0, 1, p)

        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if plan.start is not None and t < plan.start - 1e-6:
                continue
            if plan.end is not None and t >= plan.end - 1e-6:
                break
            if next_pts is None:
                next_pts = int(round((t - plan.offset) * rate))
            for rf in resampler.resample(frame):
                rf.pts = None
                fifo.write(rf)
            yield from drain()
        if next_pts is None:
            return
        for rf in resampler.resample(None):
            rf.pts = None
            fifo.write(rf)
        yield from drain(final=True)
        for p in os_.encode(None):
            yield (float(p.pts * p.time_base) if p.pts is not None else 1e18, 1, p)

    return gen()


def replace_into_place(tmp: Path, final: Path) -> None:
    """Atomic rename of a finished temporary output (copied first to a temporary name next to
    ``final`` when the two are on different file systems)."""
    try:
        try:
            os.replace(tmp, final)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            near = final.with_name(f".{final.name}.rvmatte-tmp")
            try:
                shutil.copyfile(tmp, near)
                os.replace(near, final)
            finally:
                near.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise _write_error(final, e) from None


def move_images(tmp_dir: Path, spec: OutputSpec) -> None:
    """Move finished PNG frames from ``tmp_dir`` to the output folder / pattern location."""
    if is_pattern(spec.path):
        target = spec.path.parent if str(spec.path.parent) else Path(".")
        target.mkdir(parents=True, exist_ok=True)
    else:
        target = spec.path
        if not target.exists():
            try:
                os.replace(tmp_dir, target)  # the whole folder appears at once
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise _write_error(target, e) from None
            target.mkdir()
    for f in sorted(tmp_dir.iterdir()):
        replace_into_place(f, target / f.name)
    shutil.rmtree(tmp_dir, ignore_errors=True)


def check_output_target(spec: OutputSpec, *, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse outputs equal to the input, existing outputs without overwrite, missing or
    unwritable folders."""
    p = spec.path
    for inp in inputs:
        try:
            if p.exists() and inp.exists() and os.path.samefile(p, inp):
                raise OutputError(f"output {p} is the input file; choose another name")
        except OSError:
            pass
        if p.resolve() == inp.resolve():
            raise OutputError(f"output {p} is the input file; choose another name")
    if spec.mode == "images":
        folder = (p.parent if str(p.parent) else Path(".")) if is_pattern(p) else p
        parent = folder if is_pattern(p) else (p.parent if str(p.parent) else Path("."))
        if not is_pattern(p) and p.exists() and not p.is_dir():
            raise OutputError(f"output folder {p} exists and is a file")
        if not is_pattern(p) and p.is_dir() and any(p.iterdir()) and not overwrite:
            raise OutputError(f"output folder {p} is not empty (use --overwrite to write into it)")
        if is_pattern(p) and folder.is_dir() and not overwrite:
            if (folder / (p.name % 0)).exists() or (folder / (p.name % 1)).exists():
                raise OutputError(f"output frames {p} already exist (use --overwrite)")
        if is_pattern(p):  # frames/%06d.png: "frames" is created if its parent exists
            check_folder = folder if folder.exists() else (folder.parent if str(folder.parent) else Path("."))
        else:
            check_folder = parent
    else:
        if p.is_dir():
            raise OutputError(f"output {p} is a directory; expected a file name such as out.mp4")
        if p.exists() and not overwrite:
            raise OutputError(f"output {p} exists (use --overwrite to replace it)")
        check_folder = p.parent if str(p.parent) else Path(".")
    if not check_folder.exists():
        raise OutputError(f"output folder {check_folder} does not exist")
    if not check_folder.is_dir():
        raise OutputError(f"output folder {check_folder} is not a folder")
    if not os.access(check_folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {check_folder} is not writable")
