"""Readers: videos (anything PyAV decodes), image folders, printf patterns, single images.

A reader is opened lazily: :func:`probe` checks the input and returns a :class:`SourceInfo`
(decoding the first frame, so an undecodable file fails here with one clear line), and
:meth:`Source.frames` opens its own handle when iterated, so it can run in a worker thread.

Frames come out as :class:`Frame`: RGB uint8 (H,W,3), upright (rotation metadata applied),
with the presentation timestamp of the input (VFR kept).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import InputError, one_line

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v", ".mpg", ".mpeg", ".ts",
              ".mts", ".m2ts", ".flv", ".wmv", ".ogv", ".3gp", ".mxf", ".nut", ".y4m"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_IMAGE_RATE = Fraction(25)


@dataclass
class Frame:
    index: int            # 0-based, counted from the first frame of the processed range
    pts: int              # presentation timestamp in SourceInfo.time_base
    image: np.ndarray     # (H, W, 3) uint8 RGB, upright; or (H*3/2, W) YUV 4:2:0 planes


@dataclass
class SourceInfo:
    path: Path
    kind: str                        # "video" | "images" | "image"
    width: int                       # upright (after rotation)
    height: int
    time_base: Fraction
    rate: Fraction                   # average frame rate (VFR inputs keep their own pts)
    frames: Optional[int] = None     # as declared by the container (may be None / approximate)
    duration: Optional[float] = None  # seconds
    rotation: int = 0                # degrees counter-clockwise applied to decoded frames
    pix_fmt: str = "rgb24"
    codec: str = ""
    start_pts: int = 0
    audio: Optional[dict] = None     # {"index", "codec", "rate", "channels"} of the first audio stream
    files: list = field(default_factory=list)  # image inputs: the files, in order
    colorspace: int = 2              # AVColorSpace of the first frame (2 = unspecified)
    color_range: int = 0             # AVColorRange of the first frame (2 = full / "jpeg")

    @property
    def yuv420_ok(self) -> bool:
        """Frames can be handed over as YUV 4:2:0 planes (:meth:`Source.frames` ``yuv=True``):
        8-bit 4:2:0 video, even size, no rotation."""
        return (self.kind == "video" and self.pix_fmt in ("yuv420p", "yuvj420p")
                and self.rotation == 0 and self.width % 2 == 0 and self.height % 2 == 0)

    @property
    def is_still(self) -> bool:
        return self.kind == "image"


def _to_rgb(frame, width: int, height: int, rotation: int) -> np.ndarray:
    """Decoded frame -> upright RGB uint8 (H, W, 3); a mid-stream size change is rescaled."""
    try:
        arr = frame.to_ndarray(format="rgb24", width=width, height=height)
    except (ValueError, NotImplementedError) as e:
        raise InputError(f"unsupported pixel format {frame.format.name!r} ({one_line(e)})") from None
    k = (rotation // 90) % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k))
    return arr


def _to_yuv420(frame, width: int, height: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Decoded frame -> (H*3/2, W) uint8 YUV 4:2:0 planes (converted only if it is not), in
    PyAV's ``to_ndarray()`` layout, written into ``out`` when given (a C-contiguous array of
    that shape, e.g. a frame of a chunk). One copy straight from the decoder's planes, where
    ``to_ndarray()`` then ``np.stack`` made two or three (docs/SPEED.md)."""
    if frame.format.name not in ("yuv420p", "yuvj420p") or (frame.width, frame.height) != (width, height):
        frame = frame.reformat(format="yuv420p", width=width, height=height)
    shape = (height * 3 // 2, width)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    y, u, v = frame.planes
    if min(y.line_size, u.line_size, v.line_size) < 0:  # bottom-up rows: let PyAV lay them out
        out[...] = frame.to_ndarray()
        return out
    h2, w2 = height // 2, width // 2
    out[:height] = np.frombuffer(y, np.uint8).reshape(height, y.line_size)[:, :width]
    chroma = out[height:].reshape(2, h2, w2)  # U then V, each h2 x w2, row-major
    chroma[0] = np.frombuffer(u, np.uint8).reshape(h2, u.line_size)[:, :w2]
    chroma[1] = np.frombuffer(v, np.uint8).reshape(h2, v.line_size)[:, :w2]
    return out


def _frame_rotation(frame) -> int:
    try:
        rot = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round((rot or 0) / 90.0)) * 90 % 360


def is_pattern(path: str | os.PathLike) -> bool:
    return bool(re.search(r"%0?\d*d", str(path)))


def _list_images(path: Path) -> list[Path]:
    if is_pattern(path):
        regex = re.compile("^" + re.sub(r"%0?(\d*)d", r"(\\d+)", re.escape(path.name).replace(r"\%", "%")) + "$")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            return []
        found = []
        for name in os.listdir(parent):
            m = regex.match(name)
            if m:
                found.append((int(m.group(1)), parent / name))
        return [p for _, p in sorted(found)]
    return sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()),
                  key=lambda p: p.name)


def list_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS
                  and not p.name.startswith("."))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)  # honour EXIF orientation, like video rotation
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as e:
        # a header declaring more pixels than Pillow decodes (a crafted or broken file)
        raise InputError(f"cannot read image {path}: too large ({one_line(e)})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {one_line(e)}") from None


def probe(path: str | os.PathLike) -> SourceInfo:
    """Check an input and describe it. Raises :class:`InputError` with one clear line."""
    p = Path(path)
    if is_pattern(p):
        files = _list_images(p)
        if not files:
            raise InputError(f"no images match the pattern {p}")
        return _image_info(p, "images", files)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        files = _list_images(p)
        if not files:
            if list_videos(p):
                raise InputError(f"input folder {p} holds videos, not image frames: convert it as a "
                                 "batch (rvmatte convert FOLDER -o OUTPUT_FOLDER, or convert_folder)")
            raise InputError(f"input folder {p} contains no images ({', '.join(sorted(IMAGE_EXTS))})")
        return _image_info(p, "images", files)
    if not os.access(p, os.R_OK):
        raise InputError(f"input is not readable (permission denied): {p}")
    if p.stat().st_size == 0:
        raise InputError(f"input file is empty: {p}")
    if p.suffix.lower() in IMAGE_EXTS:
        return _image_info(p, "image", [p])
    return _video_info(p)


def _image_info(p: Path, kind: str, files: list[Path]) -> SourceInfo:
    first = _read_image(files[0])
    h, w = first.shape[:2]
    return SourceInfo(path=p, kind=kind, width=w, height=h, time_base=1 / DEFAULT_IMAGE_RATE,
                      rate=DEFAULT_IMAGE_RATE, frames=len(files),
                      duration=len(files) / float(DEFAULT_IMAGE_RATE), files=files)


def _open_container(p: Path):
    import av

    try:
        return av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"cannot read {p}: not a video or image file rvmatte can decode "
                         f"({one_line(e)})") from None


def _video_info(p: Path) -> SourceInfo:
    import av

    with _open_container(p) as c:
        if not c.streams.video:
            what = "an audio-only file" if c.streams.audio else "no video stream"
            raise InputError(f"{p} has no video stream ({what}); nothing to matte")
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        first = None
        try:
            for frame in c.decode(vs):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise InputError(f"cannot decode video in {p}: {one_line(e)}") from None
        if first is None:
            raise InputError(f"{p} contains no video frames (empty or truncated video)")
        rotation = _frame_rotation(first)
        w, h = first.width, first.height
        _to_rgb(first, w, h, 0)  # fails here, once, if the pixel format cannot be converted
        if rotation in (90, 270):
            w, h = h, w
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        duration = None
        if vs.duration is not None:
            duration = float(vs.duration * tb)
        elif c.duration is not None:
            duration = c.duration / 1e6
        frames = vs.frames or (int(round(duration * rate)) if duration else None)
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = {"index": a.index, "codec": a.codec_context.name, "rate": a.rate,
                     "channels": a.channels}
        return SourceInfo(path=p, kind="video", width=w, height=h, time_base=Fraction(tb),
                          rate=Fraction(rate), frames=frames or None, duration=duration,
                          rotation=rotation, pix_fmt=first.format.name,
                          codec=vs.codec_context.name,
                          start_pts=first.pts if first.pts is not None else 0, audio=audio,
                          colorspace=enum_int(first.colorspace, 2),
                          color_range=enum_int(first.color_range, 0))


def enum_int(value, default: int) -> int:
    """A PyAV enum (or int) as an int; ``default`` when there is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass
class FrameRange:
    """``--start/--end``: either times in seconds or frame numbers (``150f``)."""

    start: Optional[float] = None
    end: Optional[float] = None
    unit: str = "s"  # "s" or "f"

    @property
    def empty(self) -> bool:
        return self.start is None and self.end is None


def parse_position(text: str | float | int | None) -> tuple[Optional[float], str]:
    """``"12.5"``, ``"12.5s"``, ``"1:02.5"``, ``"00:01:02.5"`` -> seconds; ``"150f"`` -> frame."""
    if text is None:
        return None, "s"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise InputError(f"invalid position {text!r}: must be >= 0")
        return float(text), "s"
    s = str(text).strip().lower()
    try:
        if s.endswith("f"):
            n = int(s[:-1])
            if n < 0:
                raise ValueError
            return float(n), "f"
        if s.endswith("s"):
            s = s[:-1]
        parts = s.split(":")
        if len(parts) > 3:
            raise ValueError
        value = 0.0
        for part in parts:
            value = value * 60 + float(part)
        if value < 0 or value != value:
            raise ValueError
        return value, "s"
    except ValueError:
        raise InputError(f"invalid position {text!r}: use seconds (12.5), [hh:]mm:ss(.ms) "
                         "or a frame number (150f)") from None


def parse_range(start=None, end=None) -> FrameRange:
    s, su = parse_position(start)
    e, eu = parse_position(end)
    if s is not None and e is not None:
        if su != eu:
            raise InputError("--start and --end must both be times or both be frame numbers")
        if e <= s:
            raise InputError(f"--end ({end}) must be after --start ({start})")
    unit = su if s is not None else eu
    return FrameRange(s, e, unit)


class Source:
    """Iterates the frames of an input; opens its own file handle in :meth:`frames`."""

    def __init__(self, info: SourceInfo, frame_range: FrameRange | None = None) -> None:
        self.info = info
        self.range = frame_range or FrameRange()

    def frames(self, resume_index: int = 0, resume_pts: Optional[int] = None, *,
               yuv: bool = False, into=None) -> Iterator[Frame]:
        """Frames of the range, starting at relative index ``resume_index`` (whose input pts is
        ``resume_pts``, for seeking). ``yuv``: images are YUV 4:2:0 planes, not RGB (only
        where :attr:`SourceInfo.yuv420_ok`); ``into``: with ``yuv``, a callable giving the
        array each frame's planes are written into (``(H*3/2, W)`` uint8, C-contiguous: a
        slot of the caller's chunk), which is then the frame's image."""
        if yuv and not self.info.yuv420_ok:
            raise ValueError(f"{self.info.path}: frames cannot be read as YUV 4:2:0 planes")
        if self.info.kind == "video":
            yield from self._video_frames(resume_index, resume_pts, yuv, into)
        else:
            yield from self._image_frames(resume_index)

    def _in_range(self, rel_index_abs: int, t: float) -> int:
        """-1 before the range, 0 inside, 1 after."""
        r = self.range
        pos = rel_index_abs if r.unit == "f" else t
        if r.start is not None and pos < r.start - (1e-6 if r.unit == "s" else 0):
            return -1
        if r.end is not None and pos >= r.end - (1e-6 if r.unit == "s" else 0):
            return 1
        return 0

    def _image_frames(self, resume_index: int) -> Iterator[Frame]:
        info = self.info
        index = 0
        for abs_i, path in enumerate(info.files):
            where = self._in_range(abs_i, abs_i / float(info.rate))
            if where < 0:
                continue
            if where > 0:
                break
            if index >= resume_index:
                img = _read_image(path)
                if img.shape[:2] != (info.height, info.width):
                    from PIL import Image

                    img = np.asarray(Image.fromarray(img).resize((info.width, info.height), Image.BILINEAR))
                yield Frame(index, abs_i, img)
            index += 1

    def _video_frames(self, resume_index: int, resume_pts: Optional[int],
                      yuv: bool = False, into=None) -> Iterator[Frame]:
        import av

        info = self.info
        tb = info.time_base
        r = self.range
        cw, ch = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        if yuv:
            def image(frame):
                return _to_yuv420(frame, cw, ch, into() if into is not None else None)
        else:
            def image(frame):
                return _to_rgb(frame, cw, ch, info.rotation)
        can_seek = info.path.suffix.lower() != ".gif"
        with _open_container(info.path) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            mode = None
            target = None
            if resume_index > 0 and resume_pts is not None and r.unit != "f":
                mode, target = "resume", resume_pts
            elif r.start is not None and r.unit == "s" and r.start > 0:
                mode, target = "start", info.start_pts + int(r.start / tb)
            if mode is not None and can_seek:
                try:
                    c.seek(target, backward=True, any_frame=False, stream=vs)
                except av.error.FFmpegError:
                    pass  # decode from the start; frames before the target are skipped
            if mode == "start":
                mode = None
            index = resume_index if mode == "resume" else 0
            last_pts = None
            abs_i = 0
            # One nominal frame in time-base units, to repair missing or non-increasing
            # timestamps (broken muxers write e.g. pts 0 for every frame): never drop a frame.
            step = max(1, int(round(1 / (float(info.rate) * float(tb))))) if info.rate else 1
            try:
                for frame in c.decode(vs):
                    pts = frame.pts
                    if pts is None or (last_pts is not None and pts <= last_pts):
                        pts = (last_pts + step) if last_pts is not None else info.start_pts
                    last_pts = pts
                    t = float((pts - info.start_pts) * tb)
                    if mode == "resume":
                        if pts < resume_pts:
                            continue
                        if r.end is not None and t >= r.end - 1e-6:
                            return
                        yield Frame(index, pts, image(frame))
                        index += 1
                        continue
                    where = self._in_range(abs_i, t)
                    abs_i += 1
                    if where < 0:
                        continue
                    if where > 0:
                        return
                    if index >= resume_index:
                        yield Frame(index, pts, image(frame))
                    index += 1
            except av.error.FFmpegError as e:
                raise InputError(f"cannot decode video in {info.path}: {one_line(e)}") from None


def read_frames(path: str | os.PathLike, start=None, end=None, *,
                max_frames: Optional[int] = None) -> np.ndarray:
    """The frames of a video, image folder, ``%06d.png`` pattern or image, in memory.

    ``start`` / ``end``: as in ``convert_video`` -- seconds (``1.5``, ``"0:01.5"``) or frame
    numbers (``"8f"``); ``end`` is exclusive. ``max_frames``: stop after that many.
    Returns uint8 RGB ``(T, H, W, 3)``, upright (rotation applied); ``T`` may be 0 when the
    range holds no frame. Every frame is held in memory (a minute of 1080p is about 11 GB):
    read short ranges, or use :func:`rvmatte.convert_video` for whole files. A bad input is
    an :class:`~rvmatte.errors.InputError` (one line)::

        frames = rvmatte.read_frames("talk.mp4", end="8f")    # the first 8 frames
        out = rvmatte.Matter().process(frames)                 # MattingOutput(fgr, pha, state)
    """
    if max_frames is not None and (isinstance(max_frames, bool) or int(max_frames) < 0):
        raise InputError(f"max_frames must be >= 0, got {max_frames!r}")
    info = probe(path)
    images = []
    for frame in Source(info, parse_range(start, end)).frames():
        if max_frames is not None and len(images) >= int(max_frames):
            break
        images.append(frame.image)
    if not images:
        return np.zeros((0, info.height, info.width, 3), np.uint8)
    return np.stack(images)
