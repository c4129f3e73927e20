"""Segment encoders in their own processes (``convert_video(encode_processes=True)``,
``--encode-processes``).

Why: in one process, encoders on worker threads share the interpreter lock with everything
else. PyAV releases it while libavcodec encodes but takes it again for every frame, packet
and mux call, and a thread coming back from C waits for it. On a 16-vCPU H200 machine, 16
one-thread x264 encoders (1080p, ultrafast) encoded 572 frames/s as threads and 912 as
processes (7.8 vs 11.3 cores busy), and the GPU conversion's decode and model threads slowed
down as encoder threads were added (docs/SPEED.md). So, on request, where several segments
of an output are encoded at a time (:mod:`rvmatte.io.segments`), each is encoded in a child
process running :func:`_child` (started with ``python -c``, so the caller's script needs no
``if __name__ == "__main__"`` guard and the working directory is not on its path).

Frames: each child has a ring of shared-memory slots (a ``memfd``, so not bound by the size
of /dev/shm, which containers keep small). The parent copies a frame into a free slot (one
copy, without the interpreter lock) and sends the slot's number; the child encodes straight
from the slot and gives it back. The ring has as many slots as a segment may hold frames, so
the producer can run a whole segment ahead, as with threads. Without memfd (not Linux), or
for a frame larger than a slot, the pixels go through the pipe instead.

Protocol over the child's stdin and a reply pipe (not its stdout, where an import might
print): each message is a little-endian ``(header length, payload length)`` pair, a pickled
header tuple, then the payload bytes (pixels sent through the pipe, if any).

parent -> child: ``("open", seg, kwargs)`` (a :class:`~rvmatte.io.writers.SegmentWriter`'s
arguments), ``("frame", seg, pts, shape, dtype, slot)`` (+ pixels when ``slot`` is None),
``("close", seg)``, ``("abort", seg)``, ``("exit",)``.
child -> parent: ``("ready",)``, ``("free", None, slot)``, ``("closed", seg, frames)``,
``("aborted", seg)``, ``("error", seg, message)`` (one line).

The child reads its stdin on a thread into a queue, so an ``abort`` overtakes the frames
still queued (they are dropped, their slots given back). It ignores Ctrl-C (the parent
decides) and exits when its stdin closes, so it never outlives the parent.
"""

from __future__ import annotations

import collections
import mmap
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import OutputError, one_line

_HEAD = struct.Struct("<IQ")
_START_TIMEOUT = 60.0  # seconds for the children to start (imports on a loaded machine)


def _read_exact(f, n: int, into: Optional[bytearray] = None):
    buf = into if into is not None else bytearray(n)
    view, got = memoryview(buf)[:n], 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf


def _read_message(f, spare: collections.deque):
    """One message; a payload is read into a buffer from ``spare`` (returned ones, reused:
    deque.append/pop are atomic) when one of its size is there."""
    hn, pn = _HEAD.unpack(_read_exact(f, _HEAD.size))
    header = pickle.loads(_read_exact(f, hn))
    payload = None
    if pn:
        try:
            buf = spare.pop()
        except IndexError:
            buf = None
        payload = _read_exact(f, pn, buf if buf is not None and len(buf) == pn else None)
    return header, payload


def _write_all(f, data) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = f.write(view)  # the interpreter lock is released while the pipe takes the bytes
        view = view[n if n is not None else len(view):]


def _write_message(f, header: tuple, payload=None) -> None:
    h = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    n = 0 if payload is None else memoryview(payload).nbytes
    _write_all(f, _HEAD.pack(len(h), n) + h)
    if payload is not None:
        _write_all(f, payload)
    f.flush()


# ---- child ----------------------------------------------------------------------------------

def _child(ring_fd: int = -1, slot_bytes: int = 0, slots: int = 0, reply_fd: int = 1) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .writers import SegmentWriter

    ring = mmap.mmap(ring_fd, slot_bytes * slots) if ring_fd >= 0 else None
    inp, out = sys.stdin.buffer, os.fdopen(reply_fd, "wb", buffering=0)
    inbox: queue.Queue = queue.Queue()
    aborted: set = set()
    spare: collections.deque = collections.deque()  # frame buffers to reuse

    def reader() -> None:
        try:
            while True:
                header, payload = _read_message(inp, spare)
                if header[0] == "abort":
                    aborted.add(header[1])
                inbox.put((header, payload))
                if header[0] == "exit":
                    return
        except BaseException:  # EOF, or a message it cannot read (e.g. an unimportable class)
            inbox.put((("exit",), None))

    threading.Thread(target=reader, daemon=True).start()
    _write_message(out, ("ready",))
    writer, seg, failed = None, None, False
    while True:
        (kind, *args), payload = inbox.get()
        if kind == "exit":
            if writer is not None:  # the parent went away mid-segment: drop it
                writer.abort()
                writer.path.unlink(missing_ok=True)
            return
        try:
            if kind == "open":
                seg, kwargs = args
                failed = False
                writer = SegmentWriter(**kwargs)
            elif kind == "frame":
                _, pts, shape, dtype, slot = args
                try:
                    if args[0] in aborted or failed or writer is None:
                        continue
                    if slot is None:
                        image = np.frombuffer(payload, dtype=dtype)
                    else:
                        image = np.frombuffer(ring, dtype=dtype, offset=slot * slot_bytes,
                                              count=int(np.prod(shape)))
                    writer.write(image.reshape(shape), pts)
                finally:  # the pixels were copied into the encoder's frame (or dropped)
                    if slot is not None:
                        _write_message(out, ("free", None, slot))
                    elif len(spare) < 4:
                        spare.append(payload)
            elif kind == "close":
                if args[0] in aborted or failed or writer is None:
                    continue
                writer.close()
                _write_message(out, ("closed", seg, writer.frames))
                writer = None
            elif kind == "abort":
                if writer is not None and seg == args[0]:
                    writer.abort()
                    writer.path.unlink(missing_ok=True)
                    writer = None
                _write_message(out, ("aborted", args[0]))
        except Exception as e:  # noqa: BLE001 - reported to the parent as one line
            failed = True
            if writer is not None:
                writer.abort()
                writer.path.unlink(missing_ok=True)
                writer = None
            _write_message(out, ("error", seg, one_line(e)))


# ---- parent ---------------------------------------------------------------------------------

class _Child:
    """One encoder process and the thread that reads its replies. Frames reach it through a
    ring of ``slots`` shared-memory slots of ``slot_bytes`` (a memfd: not bound by the size of
    /dev/shm, which containers keep small), one copy in, released by the child once encoded;
    without memfd (not Linux), or for a larger frame, through the pipe."""

    def __init__(self, slot_bytes: int = 0, slots: int = 0) -> None:
        self.ring, self.slot_bytes, fd = None, int(slot_bytes), -1
        if slot_bytes > 0 and slots > 0 and hasattr(os, "memfd_create"):
            fd = os.memfd_create("rvmatte-encoder")
            try:
                os.ftruncate(fd, self.slot_bytes * slots)
                self.ring = mmap.mmap(fd, self.slot_bytes * slots)
            except BaseException:
                os.close(fd)
                raise
        self.free = collections.deque(range(slots) if self.ring is not None else ())
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        r, w = os.pipe()  # the child's replies (not its stdout: imports may print there)
        # -c, dropping sys.path[0] (the working directory: a numpy.py there must not load);
        # rvmatte's folder is appended if the parent found rvmatte elsewhere than on its
        # path (a sys.path entry added at run time), never put before the standard library.
        root = str(Path(__file__).resolve().parents[2])
        boot = ("import sys; del sys.path[0]; r = sys.argv[5]; "
                "r in sys.path or sys.path.append(r); "
                "from rvmatte.io.encoder_process import _child; "
                "_child(*(int(a) for a in sys.argv[1:5]))")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", boot, str(fd), str(self.slot_bytes), str(slots), str(w),
                 root],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, bufsize=0, pass_fds=(fd, w) if fd >= 0 else (w,))
        except BaseException:
            os.close(r)
            if self.ring is not None:
                self.ring.close()
            raise
        finally:
            os.close(w)
            if fd >= 0:
                os.close(fd)  # the child has its own copy; the mapping stays
        self.stdout = os.fdopen(r, "rb", buffering=0)
        self.stdin = self.proc.stdin
        try:  # a 1 MiB pipe for frames sent through it: 3 writes for 1080p, not 48
            import fcntl

            fcntl.fcntl(self.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass
        self.replies: dict = {}   # seg -> ("closed", frames) | ("error", msg) | ("aborted",)
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.dead = False
        self.busy: Optional[int] = None  # the segment it encodes
        self.reader = threading.Thread(target=self._read, daemon=True, name="rvmatte-enc-reply")
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                (kind, *args), _ = _read_message(self.stdout, collections.deque())
                if kind == "ready":
                    self.ready.set()
                    continue
                with self.cond:
                    if kind == "free":
                        self.free.append(args[1])
                        self.cond.notify_all()
                        continue
                    self.replies[args[0]] = (kind, *args[1:])
                    self.cond.notify_all()
        except Exception:  # noqa: BLE001 - EOF, or a stream it cannot read: the child is lost
            pass
        with self.cond:
            self.dead = True
            self.cond.notify_all()
        self.ready.set()

    def put(self, seg: int, pts: int, image: np.ndarray, check, stop=None) -> None:
        """Frame ``pts`` of segment ``seg``: into a free slot of the ring (waiting for one,
        calling ``check`` meanwhile to raise the segment's error), else through the pipe."""
        nbytes = image.nbytes
        if self.ring is None or nbytes > self.slot_bytes:
            a = np.ascontiguousarray(image)
            self.send(("frame", seg, pts, a.shape, a.dtype.str, None), a)
            return
        with self.cond:
            while not self.free:
                check()
                if stop is not None and stop.is_set():
                    return  # the job is stopping: the frame is dropped
                self.cond.wait(0.1)
            slot = self.free.pop()  # the most recently freed: pages already resident
        dst = np.frombuffer(self.ring, dtype=image.dtype, offset=slot * self.slot_bytes,
                            count=image.size).reshape(image.shape)
        np.copyto(dst, image)  # one copy, without the interpreter lock
        self.send(("frame", seg, pts, image.shape, image.dtype.str, slot))

    def send(self, header: tuple, payload=None) -> None:
        try:
            _write_message(self.stdin, header, payload)
        except (BrokenPipeError, OSError):
            self.dead = True
            raise OutputError(f"an encoder process stopped unexpectedly "
                              f"(exit code {self.exit_code()})") from None

    def exit_code(self) -> Optional[int]:
        """The child's exit status, waiting a moment for a child that is just ending."""
        try:
            return self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None

    def close(self, timeout: float = 10.0) -> None:
        try:
            if not self.dead:
                _write_message(self.stdin, ("exit",))
            self.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout)  # EOF now that the child is gone
        if not self.reader.is_alive():
            self.stdout.close()
        if self.ring is not None:
            try:
                self.ring.close()
            except BufferError:  # a view still exported (an error path): freed with it
                pass


class RemoteSegmentWriter:
    """A :class:`~rvmatte.io.writers.SegmentWriter` living in an encoder process: the same
    ``write`` / ``close`` / ``abort``, plus ``done`` and ``wait`` (close only asks)."""

    def __init__(self, child: _Child, seg: int, path: Path, start_pts: int) -> None:
        self.child, self.seg, self.path, self.start_pts = child, seg, Path(path), start_pts
        self.frames = 0

    def write(self, image: np.ndarray, pts: int, stop: Optional[threading.Event] = None) -> None:
        self._check()
        self.child.put(self.seg, int(pts), np.asarray(image), self._check, stop)

    def close(self) -> None:
        self._check()
        self.child.send(("close", self.seg))

    def abort(self) -> None:
        if self.child.busy == self.seg and not self.child.dead:
            try:
                self.child.send(("abort", self.seg))
            except OutputError:
                pass

    def _reply(self):
        return self.child.replies.get(self.seg)

    def _check(self) -> None:
        r = self._reply()
        if r is not None and r[0] == "error":
            self._release()
            raise OutputError(r[1])
        if self.child.dead:
            raise OutputError(f"an encoder process stopped unexpectedly "
                              f"(exit code {self.child.exit_code()})")

    def done(self) -> bool:
        return self._reply() is not None or self.child.dead

    def wait(self, stop: threading.Event, poll: float = 0.1) -> None:
        """Until the child has finished (or dropped) the segment; raises its error. Returns
        early when ``stop`` is set."""
        with self.child.cond:
            while self._reply() is None and not self.child.dead and not stop.is_set():
                self.child.cond.wait(poll)
        r = self._reply()
        if r is None:
            if stop.is_set():
                return
            raise OutputError(f"an encoder process stopped unexpectedly "
                              f"(exit code {self.child.exit_code()})")
        self._release()
        if r[0] == "error":
            raise OutputError(r[1])
        if r[0] == "closed":
            self.frames = r[1]

    def _release(self) -> None:
        if self.child.busy == self.seg:
            self.child.busy = None


class EncoderProcesses:
    """``count`` encoder processes, started together; :meth:`open` gives a segment writer on
    an idle one. Raises :class:`OutputError` if they cannot start (the caller then encodes on
    threads)."""

    def __init__(self, count: int, *, frame_bytes: int = 0, slots: int = 0) -> None:
        """``frame_bytes``: the largest frame; ``slots``: frames each child may hold (its
        shared ring; 0: frames go through the pipes)."""
        self.children: list[_Child] = []
        self._seg = 0
        try:
            for _ in range(count):
                self.children.append(_Child(frame_bytes, slots))
        except OSError as e:  # no interpreter to start (an embedded Python, say)
            self.shutdown()
            raise OutputError(f"encoder processes could not start: {one_line(e)}") from None
        except BaseException:
            self.shutdown()
            raise
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            for c in self.children:
                c.ready.wait(max(0.0, deadline - time.monotonic()))
        except BaseException:  # Ctrl-C while they start: do not leave them behind
            self.shutdown()
            raise
        if any(c.dead or not c.ready.is_set() for c in self.children):
            self.shutdown()
            raise OutputError("encoder processes could not start")

    def open(self, **kwargs) -> RemoteSegmentWriter:
        """A new segment (``kwargs``: :class:`~rvmatte.io.writers.SegmentWriter`'s)."""
        for c in self.children:
            r = c.replies.get(c.busy) if c.busy is not None else None
            if c.busy is not None and r is not None:
                c.busy = None  # finished or failed, whether or not anyone waited for it
        child = next((c for c in self.children if c.busy is None and not c.dead), None)
        if child is None:
            lost = next((c for c in self.children if c.dead), None)
            if lost is not None:
                raise OutputError(f"an encoder process stopped unexpectedly "
                                  f"(exit code {lost.exit_code()})")
            raise OutputError("no idle encoder process (more segments open than processes)")
        seg = self._seg + 1
        try:
            child.send(("open", seg, kwargs))
        except (pickle.PicklingError, TypeError, AttributeError) as e:  # nothing was written
            raise OutputError(f"cannot hand a segment to an encoder process: {one_line(e)}") from None
        self._seg = child.busy = seg
        return RemoteSegmentWriter(child, seg, kwargs["path"], kwargs["start_pts"])

    def shutdown(self) -> None:
        """Stop every child (each drops what it has not finished) and wait for them."""
        for c in self.children:
            try:
                if not c.dead:
                    _write_message(c.stdin, ("exit",))
            except OSError:
                pass
        for c in self.children:
            c.close()

