"""Live outputs: a window, a virtual camera (pyvirtualcam) or a video file."""

from __future__ import annotations

import os
import platform
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import OutputError

FILE_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9"}


def has_display() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux/BSD)."""
    if platform.system() in ("Windows", "Darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Sink:
    alpha_ok = False

    def open(self, width: int, height: int, fps: float) -> None: ...

    def write(self, image: np.ndarray, overlay: str = "") -> bool:
        """Show/write one (H, W, 3|4) uint8 frame; False when the user asked to stop."""
        raise NotImplementedError

    def close(self) -> None: ...

    def abort(self) -> None:
        self.close()


class FileSink(Sink):
    """H.264 (.mp4/.mkv/.mov) or VP9 (.webm, keeps alpha). Written to a temporary name and
    renamed into place when closed, so an interrupted run never leaves a file that looks
    complete."""

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in FILE_CODECS:
            raise OutputError(f"unknown output {path}: use window, virtualcam or a file "
                              f"ending in {', '.join(FILE_CODECS)}")
        if self.path.exists() and not overwrite:
            raise OutputError(f"output exists: {path} (pass --overwrite to replace it)")
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}")
        self.codec = FILE_CODECS[ext]
        self.alpha_ok = ext == ".webm"
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{ext}")
        self._out = self._stream = None
        self._pts = 0

    def open(self, width: int, height: int, fps: float) -> None:
        import av

        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        try:
            self._out = av.open(str(self.tmp), "w")
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.path}: {getattr(e, 'strerror', e)}") from None
        s = self._out.add_stream(self.codec, rate=rate)
        # 4:2:0 needs even sizes: frames are padded by one pixel where needed.
        s.width, s.height = width + width % 2, height + height % 2
        s.pix_fmt = "yuva420p" if self.alpha_ok else "yuv420p"
        s.time_base = 1 / rate
        if self.codec == "libx264":
            s.options = {"preset": "veryfast", "crf": "18"}
        self._stream = s

    def write(self, image: np.ndarray, overlay: str = "") -> bool:
        import av

        h, w = image.shape[:2]
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        fmt = "rgba" if image.shape[2] == 4 else "rgb24"
        if fmt == "rgba" and not self.alpha_ok:
            image, fmt = image[..., :3], "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        frame.pts = self._pts
        self._pts += 1
        for pkt in self._stream.encode(frame):
            self._out.mux(pkt)
        return True

    def close(self) -> None:
        if self._out is None:
            return
        for pkt in self._stream.encode():
            self._out.mux(pkt)
        self._out.close()
        self._out = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            finally:
                self._out = None
                self.tmp.unlink(missing_ok=True)


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

    def open(self, width: int, height: int, fps: float) -> None:
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

    def write(self, image: np.ndarray, overlay: str = "") -> bool:
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

    def close(self) -> None:
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

    def open(self, width: int, height: int, fps: float) -> None:
        import pyvirtualcam

        try:
            self._cam = pyvirtualcam.Camera(width=width, height=height, fps=fps or 30)
        except RuntimeError as e:
            raise OutputError(f"cannot start the virtual camera: {e}") from None

    def write(self, image: np.ndarray, overlay: str = "") -> bool:
        self._cam.send(np.ascontiguousarray(image[..., :3]))
        self._cam.sleep_until_next_frame()
        return True

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def make_sink(output: str, *, overwrite: bool = False) -> Sink:
    o = str(output).strip()
    if o.lower() == "window":
        return WindowSink()
    if o.lower() == "virtualcam":
        return VirtualCamSink()
    return FileSink(o, overwrite=overwrite)
