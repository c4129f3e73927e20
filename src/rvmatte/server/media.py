"""Checks on uploaded files: the type is decided by the bytes, never by the name.

A video must start with a known container signature *and* open in PyAV with a decodable
video stream; an image must be a PNG/JPEG/WebP that Pillow can decode.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import InputError

# Container signatures (offset, bytes) -> file extension used for the stored copy.
_VIDEO_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", ".mp4"),              # MP4 / MOV / M4V / 3GP (ISO base media)
    (4, b"moov", ".mov"), (4, b"mdat", ".mov"), (4, b"wide", ".mov"), (4, b"free", ".mov"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"),  # Matroska / WebM (EBML)
    (0, b"GIF87a", ".gif"), (0, b"GIF89a", ".gif"),
    (0, b"\x00\x00\x01\xba", ".mpg"), (0, b"\x47", ".ts"),  # MPEG-PS / MPEG-TS sync byte
)
_IMAGE_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"\xff\xd8\xff", ".jpg"),
)


def _sniff(head: bytes, table) -> str | None:
    for offset, magic, ext in table:
        if head[offset:offset + len(magic)] == magic:
            return ext
    return None


def sniff_video(head: bytes) -> str | None:
    """Extension for a video container recognised from the first bytes, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    ext = _sniff(head, _VIDEO_MAGIC)
    if ext == ".ts" and not (len(head) > 188 and head[188:189] == b"\x47"):
        return None  # one 0x47 byte alone is too weak a signature
    return ext


def sniff_image(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return _sniff(head, _IMAGE_MAGIC)


def probe_video(path: str | Path) -> dict[str, Any]:
    """Open ``path`` with PyAV and decode its first frame; return basic facts.

    Raises :class:`InputError` when it is not a video we can read.
    """
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            if not streams:
                raise InputError("the file has no video stream")
            stream = streams[0]
            frame = next(container.decode(stream), None)
            if frame is None:
                raise InputError("the video has no decodable frames")
            fps = float(stream.average_rate) if stream.average_rate else None
            frames = stream.frames or None
            duration = (float(stream.duration * stream.time_base)
                        if stream.duration and stream.time_base else
                        (container.duration / 1e6 if container.duration else None))
            if frames is None and fps and duration:
                frames = int(round(fps * duration))
            return {"width": frame.width, "height": frame.height, "fps": fps,
                    "frames": frames, "duration": duration,
                    "codec": stream.codec_context.name, "audio": bool(container.streams.audio)}
    except InputError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError, OSError) as e:
        raise InputError(f"not a readable video ({type(e).__name__})") from None


def thumbnail(path: str | Path, width: int = 160) -> bytes:
    """A JPEG of the first frame of the video at ``path``, ``width`` pixels wide.

    Raises :class:`InputError` when no frame can be decoded.
    """
    import io

    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise InputError("the video has no decodable frames")
            image = frame.to_image()
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as e:
        raise InputError(f"not a readable video ({type(e).__name__})") from None
    height = max(1, round(image.height * width / max(1, image.width)))
    buf = io.BytesIO()
    image.convert("RGB").resize((width, height)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def probe_image(path: str | Path) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return {"width": im.width, "height": im.height, "mode": im.mode}
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"not a readable image ({type(e).__name__})") from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def display_name(filename: str | None, default: str = "upload") -> str:
    """A client's file name reduced to something safe to show and to offer for download.

    Only the last path component is kept, non-ASCII is folded, anything outside
    ``[A-Za-z0-9._ -]`` is replaced, and leading dots are dropped: the result never
    contains a separator and is never ``.``/``..``. It is *not* used to name stored files.
    """
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("_", name).strip(" .")[:120]
    return name or default
