"""Live sources: a camera index, a video file or a stream URL, read with PyAV.

Files are read frame by frame (every frame is matted). Cameras and streams are read on a
thread that keeps only the newest frame, so a slow matting loop shows the present rather
than falling ever further behind.
"""

from __future__ import annotations

import platform
import threading
from dataclasses import dataclass
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
    """Iterate RGB uint8 (H, W, 3) frames; ``fps`` is the source's nominal rate (or None)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fps: Optional[float] = None
        self._container = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def open(self) -> "LiveSource":
        import av

        opts = {"rw_timeout": "10000000"} if self.spec.kind == "url" else {}
        try:
            self._container = av.open(self.spec.target, format=self.spec.format, options=opts,
                                      timeout=10 if self.spec.kind != "file" else None)
        except (av.error.FFmpegError, OSError) as e:
            what = {"camera": "camera", "url": "stream", "file": "video"}[self.spec.kind]
            raise InputError(f"cannot open {what} {self.spec.target}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        if not self._container.streams.video:
            self.close()
            raise InputError(f"{self.spec.target} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self.fps = float(stream.average_rate) if stream.average_rate else None
        return self

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        try:
            for frame in self._container.decode(video=0):
                if self._stop.is_set():
                    return
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise InputError(f"reading {self.spec.target} failed: {e}") from None

    def frames(self) -> Iterator[np.ndarray]:
        if self._container is None:
            self.open()
        if not self.spec.live:
            yield from self._decode()
            return
        # Live: a reader thread overwrites a one-slot mailbox; we always take the newest.
        slot: list = [None]
        error: list = [None]
        cond = threading.Condition()
        done = threading.Event()

        def reader() -> None:
            try:
                for img in self._decode():
                    with cond:
                        slot[0] = img
                        cond.notify()
            except BaseException as e:  # handed over to the consumer
                error[0] = e
            finally:
                done.set()
                with cond:
                    cond.notify()

        t = threading.Thread(target=reader, name="rvmatte-live-reader", daemon=True)
        t.start()
        self._thread = t
        try:
            while True:
                with cond:
                    while slot[0] is None and not done.is_set():
                        cond.wait(0.5)
                    img, slot[0] = slot[0], None
                if img is None:
                    if error[0] is not None:
                        raise error[0]
                    return
                yield img
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():  # stuck in a blocking read: never close under it
                return
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "LiveSource":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
