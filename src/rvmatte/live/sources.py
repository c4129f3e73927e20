"""Live sources: a camera index, a video file or a stream URL, read with PyAV.

:class:`LiveSource` yields ``(pts, frame)``: the frame's presentation timestamp (in
:attr:`LiveSource.time_base`, repaired where missing or not increasing) and the RGB uint8
(H, W, 3) image. Video files are read by :mod:`rvmatte.io.readers` (rotation applied, the same
frames ``convert`` reads) and carry their audio (:attr:`LiveSource.audio`); cameras and streams
are decoded here. The reader does not drop frames itself: the capture stage of the live
pipeline (:mod:`rvmatte.live.pipeline`) keeps only the newest frame of a real-time source when
the model is late.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import InputError


@dataclass
class SourceSpec:
    kind: str          # "camera" | "file" | "url"
    target: str        # device path / file path / URL
    format: Optional[str] = None

    @property
    def live(self) -> bool:
        """Frames arrive in real time (a camera or a stream): late frames are dropped."""
        return self.kind != "file"


def parse_source(text: str) -> SourceSpec:
    """``0``/``1``/… = camera index, ``scheme://…`` = stream URL, else a video file path."""
    t = str(text).strip()
    if not t:
        raise InputError("empty --source: give a camera index (0), a video file or a URL")
    if t.isdigit():
        system = platform.system()
        if system == "Linux":
            return SourceSpec("camera", f"/dev/video{int(t)}", "v4l2")
        if system == "Darwin":
            return SourceSpec("camera", t, "avfoundation")
        raise InputError(f"camera by index is not supported on {system}; pass the device "
                         "as a URL or file PyAV can open")
    if "://" in t:
        return SourceSpec("url", t)
    p = Path(t).expanduser()
    if not p.exists():
        raise InputError(f"source not found: {t} (use a camera index, a video file or a URL)")
    if p.is_dir():
        raise InputError(f"source is a directory, expected a video file: {t}")
    return SourceSpec("file", str(p))


class LiveSource:
    """The frames of one source. :meth:`open` checks it and fills in :attr:`fps`,
    :attr:`time_base`, :attr:`size` ((width, height), or None until the first frame where the
    container does not say) and, for files, :attr:`info` (a
    :class:`~rvmatte.io.readers.SourceInfo`, with the audio stream). :meth:`frames` yields
    ``(pts, image)``; call it from one thread."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fps: Optional[float] = None
        self.time_base = Fraction(1, 90000)
        self.size: Optional[tuple[int, int]] = None
        self.info = None  # SourceInfo of a file
        self._container = None

    @property
    def rate(self) -> Fraction:
        """The nominal frame rate as a fraction (30 where the source does not say)."""
        return Fraction(self.fps).limit_denominator(1001) if self.fps else Fraction(30)

    def open(self) -> "LiveSource":
        if self.spec.kind == "file":
            return self._open_file()
        import av

        opts = {"rw_timeout": "10000000"} if self.spec.kind == "url" else {}
        try:
            self._container = av.open(self.spec.target, format=self.spec.format, options=opts,
                                      timeout=10)
        except (av.error.FFmpegError, OSError) as e:
            what = {"camera": "camera", "url": "stream"}[self.spec.kind]
            raise InputError(f"cannot open {what} {self.spec.target}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        if not self._container.streams.video:
            self.close()
            raise InputError(f"{self.spec.target} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self.fps = float(stream.average_rate) if stream.average_rate else None
        if stream.time_base:
            self.time_base = Fraction(stream.time_base)
        w, h = stream.codec_context.width, stream.codec_context.height
        self.size = (w, h) if w and h else None
        return self

    def _open_file(self) -> "LiveSource":
        from ..io.readers import probe

        info = probe(self.spec.target)  # an undecodable file: one InputError line
        if info.kind != "video":
            raise InputError(f"cannot open video {self.spec.target}: not a video file")
        self.info = info
        self.fps = float(info.rate) if info.rate else None
        self.time_base = Fraction(info.time_base)
        self.size = (info.width, info.height)
        return self

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.info is None and self._container is None:
            self.open()
        if self.info is not None:
            from ..io.readers import Source

            for fr in Source(self.info).frames():
                yield fr.pts, fr.image
            return
        yield from self._decode()

    def _decode(self) -> Iterator[tuple[int, np.ndarray]]:
        import av

        step = max(1, round(1 / (float(self.rate) * float(self.time_base))))
        last = None
        try:
            for frame in self._container.decode(video=0):
                pts = frame.pts
                if pts is None or (last is not None and pts <= last):
                    pts = last + step if last is not None else 0
                last = pts
                yield pts, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise InputError(f"reading {self.spec.target} failed: {e}") from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "LiveSource":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
