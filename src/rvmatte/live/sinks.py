"""Live outputs: a window, a virtual camera (pyvirtualcam) or a video file.

A sink is told at :meth:`Sink.open` what it will get: RGB or RGBA uint8 images, or, where
:meth:`Sink.yuv_ok` says it takes them, the encoder's 4:2:0 planes (``(H*3/2, W)`` uint8,
BT.601 limited range, as the fused kernel writes them). :attr:`Sink.realtime` sinks (a window,
a virtual camera) show frames as they come: the live pipeline drops frames for them rather
than queueing. All calls of one sink come from one thread, the pipeline's output stage (Tk
needs that).

Files are written as ``convert`` writes them (:class:`~rvmatte.io.writers.SegmentWriter`: its
codec settings and colour tags), into a temporary file next to the output; :meth:`FileSink.close`
remuxes that with the source's audio (:func:`~rvmatte.io.writers.assemble`) and renames the
result into place, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import os
import platform
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import OutputError

# file extension -> the codec written there (opaque; .webm keeps alpha)
FILE_CODECS = {".mp4": "h264", ".mkv": "h264", ".mov": "h264", ".webm": "vp9"}


def has_display() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux/BSD)."""
    if platform.system() in ("Windows", "Darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Sink:
    """Where the matted frames go. Subclasses implement :meth:`write` (and :meth:`open`,
    :meth:`close` as needed)."""

    alpha_ok = False   # can show / store a transparent background
    realtime = False   # shows frames as they come: late frames are dropped, not queued

    def yuv_ok(self, width: int, height: int) -> bool:
        """Whether :meth:`write` can take 4:2:0 planes at this size."""
        return False

    def open(self, width: int, height: int, *, rate: Fraction = Fraction(30),
             time_base: Optional[Fraction] = None, start_pts: int = 0, form: str = "rgb",
             audio=None) -> None:
        """Before the first frame. ``rate``: the source's nominal frame rate; ``time_base``:
        the unit of the ``pts`` given to :meth:`write` (default ``1 / rate``), ``start_pts``
        the first one; ``form``: ``"rgb"``, ``"rgba"`` or ``"yuv"``; ``audio``: an
        :class:`~rvmatte.io.writers.AudioPlan` to carry into a file, or None."""

    def write(self, image: np.ndarray, overlay: str = "", pts: int = 0) -> bool:
        """Show/write one frame (``form`` as opened); False when the user asked to stop."""
        raise NotImplementedError

    def close(self, *, complete: bool = True) -> None:
        """After the last frame. ``complete``: the source was read to its end (a file keeps
        all of its audio; else the audio stops with the last frame)."""

    def abort(self) -> None:
        """After a failure: release everything, keep nothing that looks complete."""
        self.close(complete=False)


class FileSink(Sink):
    """H.264 (.mp4/.mkv/.mov) or VP9 (.webm, keeps alpha), with colour tags and the source's
    audio. ``threads``: the encoder's threads (default: its own choice)."""

    def __init__(self, path: str | Path, *, overwrite: bool = False,
                 threads: Optional[int] = None) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in FILE_CODECS:
            raise OutputError(f"unknown output {path}: use window, virtualcam or a file "
                              f"ending in {', '.join(FILE_CODECS)}")
        if self.path.is_dir():
            raise OutputError(f"output {path} is a directory; expected a file name")
        if self.path.exists() and not overwrite:
            raise OutputError(f"output exists: {path} (pass --overwrite to replace it)")
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}")
        self.codec = FILE_CODECS[ext]
        self.alpha_ok = ext == ".webm"
        self.threads = threads
        # the encoder's file (a segment in convert's terms), then the muxed file with audio
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{ext}")
        self.tmp_final = self.path.with_name(f".{self.path.stem}.rvmatte-tmp{ext}")
        self._writer = None
        self._last_pts: Optional[int] = None

    def _spec(self, rgba: bool):
        from ..io.writers import plan_output

        return plan_output("composite", self.path, codec=self.codec, transparent=rgba)

    def yuv_ok(self, width: int, height: int) -> bool:
        from ..io.writers import pix_fmt_for

        return pix_fmt_for(self._spec(False), width, height) == "yuv420p"

    def open(self, width: int, height: int, *, rate: Fraction = Fraction(30),
             time_base: Optional[Fraction] = None, start_pts: int = 0, form: str = "rgb",
             audio=None) -> None:
        from ..io.writers import SegmentWriter

        self.spec = self._spec(form == "rgba")
        self.rate = Fraction(rate)
        self.time_base = Fraction(time_base) if time_base else 1 / self.rate
        self.start_pts, self.form, self.audio = start_pts, form, audio
        self._writer = SegmentWriter(self.spec, self.tmp, width, height, self.time_base,
                                     self.rate, start_pts, yuv=form == "yuv",
                                     threads=self.threads)

    def write(self, image: np.ndarray, overlay: str = "", pts: int = 0) -> bool:
        if self.form == "yuv" and image.ndim == 3:  # an RGB frame (not from the kernel)
            image = rgb_to_planes(image)
        elif self.form == "rgb" and image.ndim == 3 and image.shape[2] == 4:
            image = np.ascontiguousarray(image[..., :3])
        self._writer.write(image, pts)
        self._last_pts = pts
        return True

    def close(self, *, complete: bool = True) -> None:
        from ..io.writers import assemble, replace_into_place

        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
            audio = self.audio
            if audio is not None and not complete and self._last_pts is not None:
                end = float(self._last_pts * self.time_base) + 1.0 / float(self.rate)
                audio = type(audio)(audio.path, audio.index, audio.start, end, audio.offset)
            assemble(self.spec, [(self.tmp, self.start_pts)], self.tmp_final,
                     time_base=self.time_base, rate=self.rate, audio=audio)
            replace_into_place(self.tmp_final, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
            self.tmp_final.unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.abort()
        finally:
            self._writer = None
            self.tmp.unlink(missing_ok=True)
            self.tmp_final.unlink(missing_ok=True)


def rgb_to_planes(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3), even size -> (H*3/2, W) 4:2:0 planes, BT.601 limited range (what
    libswscale does for the encoder, and what the kernel writes)."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(format="yuv420p").to_ndarray()


class WindowSink(Sink):
    """A Tk window showing the frames and the FPS; closing it or pressing q/Esc stops."""

    def __init__(self, title: str = "rvmatte live") -> None:
        if not has_display():
            raise OutputError("--output window needs a display, and none is available "
                              "(DISPLAY is not set); use --output FILE.mp4 or virtualcam")
        try:
            import tkinter as tk
            from PIL import ImageTk  # noqa: F401
        except ImportError as e:
            raise OutputError(f"--output window needs Tk ({e.name} is missing); "
                              "use --output FILE.mp4 or virtualcam") from None
        self.tk = tk
        self.title = title
        self._root = None
        self._open = False

    realtime = True

    def open(self, width: int, height: int, **_: object) -> None:
        try:
            self._root = self.tk.Tk()
        except self.tk.TclError as e:
            raise OutputError(f"cannot open a window: {e}") from None
        self._root.title(self.title)
        self._label = self.tk.Label(self._root)
        self._label.pack()
        self._open = True
        self._root.protocol("WM_DELETE_WINDOW", self._closed)
        self._root.bind("<Escape>", lambda e: self._closed())
        self._root.bind("q", lambda e: self._closed())

    def _font(self):
        from PIL import ImageFont

        if not hasattr(self, "_font_obj"):
            try:
                self._font_obj = ImageFont.load_default(size=18)
            except TypeError:  # Pillow < 10.1
                self._font_obj = ImageFont.load_default()
        return self._font_obj

    def _closed(self) -> None:
        self._open = False

    def write(self, image: np.ndarray, overlay: str = "", pts: int = 0) -> bool:
        from PIL import Image, ImageDraw, ImageTk

        if not self._open:
            return False
        if image.shape[2] == 4:  # show transparency over a checkerboard
            h, w = image.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 255)
            a = image[..., 3:4] / 255.0
            image = (image[..., :3] * a + board * (1 - a)).astype(np.uint8)
        img = Image.fromarray(image)
        if overlay:
            ImageDraw.Draw(img).text((8, 6), overlay, fill=(255, 255, 0), font=self._font(),
                                     stroke_width=2, stroke_fill=(0, 0, 0))
        self._photo = ImageTk.PhotoImage(img)
        self._label.configure(image=self._photo)
        self._root.update()
        return self._open

    def close(self, *, complete: bool = True) -> None:
        if self._root is not None:
            try:
                self._root.destroy()
            except self.tk.TclError:
                pass
            self._root = None


class VirtualCamSink(Sink):
    """A virtual camera other apps (video calls) can pick, through pyvirtualcam."""

    def __init__(self) -> None:
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError:
            raise OutputError("--output virtualcam needs pyvirtualcam: pip install "
                              "pyvirtualcam (plus a virtual camera driver, e.g. v4l2loopback "
                              "on Linux)") from None
        self._cam = None

    realtime = True

    def open(self, width: int, height: int, *, rate: Fraction = Fraction(30),
             **_: object) -> None:
        import pyvirtualcam

        try:
            self._cam = pyvirtualcam.Camera(width=width, height=height, fps=float(rate or 30))
        except RuntimeError as e:
            raise OutputError(f"cannot start the virtual camera: {e}") from None

    def write(self, image: np.ndarray, overlay: str = "", pts: int = 0) -> bool:
        self._cam.send(np.ascontiguousarray(image[..., :3]))
        self._cam.sleep_until_next_frame()
        return True

    def close(self, *, complete: bool = True) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def make_sink(output, *, overwrite: bool = False) -> Sink:
    """``"window"``, ``"virtualcam"``, a file path, or a :class:`Sink` (returned as is)."""
    if isinstance(output, Sink):
        return output
    o = str(output).strip()
    if o.lower() == "window":
        return WindowSink()
    if o.lower() == "virtualcam":
        return VirtualCamSink()
    return FileSink(o, overwrite=overwrite)
