"""Checkpoints: what a killed conversion needs to continue, in ``<first output>.rvmatte-resume/``.

The folder holds the finished video segments (``segments/``), the PNG frames written so far
and, once the first segment is encoded, two files replaced atomically at every segment end::

    job.json    {"fingerprint", "done", "last_pts", "range_offset", "input",
                 "segments": {kind: [[file name, start pts], ...]}}
    state.npz   the recurrent state after frame ``done`` (four float32 arrays; none before
                the first frame) and the post stage's processors' states (``post/<name>/<i>``)

A checkpoint is used only by a job with the same fingerprint: a hash of the request
(:meth:`~rvmatte.inference.plan.ConvertRequest.identity`, the model spec's fingerprint
included), the plan's machine-dependent choices (:meth:`~rvmatte.inference.plan.OutputPlan.identity`)
and the input file's identity (path, size, modification time). Anything else is discarded.
A failed job keeps its folder only when it holds a checkpoint (it can be resumed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import OutputError

CHECKPOINT_VERSION = 2  # 2: the recurrent state as float32 numpy arrays (state.npz)
RESUME_SUFFIX = ".rvmatte-resume"
DISCARDED_NOTE = "discarded a checkpoint made with other settings"
UNREADABLE_NOTE = "discarded a checkpoint that could not be read"


def job_dir_for(first_output: Path) -> Path:
    """The checkpoint folder of a job whose first output is ``first_output``."""
    return Path(str(first_output).replace("%", "_") + RESUME_SUFFIX)


def input_identity(path: Path) -> dict:
    """The input as a checkpoint knows it: resolved path, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        st = None
    return {"path": str(path.resolve()), "size": st.st_size if st else None,
            "mtime": st.st_mtime_ns if st else None}


def fingerprint(request, plan, *, model: Optional[str] = None) -> str:
    """The hash a checkpoint must carry to be resumed by this ``request`` planned as
    ``plan``. ``model``: a label for a network given as an object (its weights are not a
    file the spec can name), e.g. ``"model:MattingNetwork"``."""
    parts = {"v": CHECKPOINT_VERSION, "input": input_identity(request.input),
             "request": request.identity(), "plan": plan.identity(), "model": model}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Checkpoint:
    """Where a job stands after its last complete segment.

    done: frames written (the next frame's index). last_pts: input timestamp of frame
    ``done - 1``. range_offset: the timestamp subtracted from the outputs' (the range's first
    frame; 0 from the start). segments: kind -> ``[(path, start_pts), ...]``, in order.
    state: the recurrent state after frame ``done - 1``, float32 arrays (empty: none).
    post: processor name -> its ``state_arrays()`` after frame ``done - 1`` (the post stage).
    """

    done: int = 0
    last_pts: Optional[int] = None
    range_offset: Optional[int] = None
    segments: dict = field(default_factory=dict)
    state: list = field(default_factory=list)
    post: dict = field(default_factory=dict)


class CheckpointDir:
    """The checkpoint folder of one job (``path``) for a job with ``fingerprint``."""

    def __init__(self, path: Path, fingerprint: str, *, input: str = "") -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.input = input

    @property
    def segments_dir(self) -> Path:
        return self.path / "segments"

    @property
    def saved(self) -> bool:
        """A checkpoint is on disk (the job can be resumed)."""
        return (self.path / "job.json").is_file()

    def open(self, *, resume: bool) -> tuple[Optional[Checkpoint], Optional[str]]:
        """Make the folder; with ``resume`` load a matching checkpoint (and remove what was
        written after it). Any other content is discarded. Returns ``(checkpoint or None,
        note or None)``: the note says why an existing checkpoint was not used."""
        ckpt, note = None, None
        if self.path.exists():
            if resume:
                ckpt, note = self._load()
            if ckpt is None:
                shutil.rmtree(self.path, ignore_errors=True)  # another job's, or stale
        try:
            self.segments_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {self.path}: {e.strerror or e}") from None
        if ckpt is not None:
            self._prune(ckpt)
        return ckpt, note

    def _load(self) -> tuple[Optional[Checkpoint], Optional[str]]:
        meta_path, state_path = self.path / "job.json", self.path / "state.npz"
        if not meta_path.is_file():
            return None, None  # a job stopped before its first checkpoint: nothing to use
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != self.fingerprint:
                return None, DISCARDED_NOTE
            with np.load(state_path) as z:
                state, post = _unpack_state(z)
            segments = {k: [(self.segments_dir / name, pts) for name, pts in v]
                        for k, v in meta["segments"].items()}
            return Checkpoint(int(meta["done"]), meta["last_pts"], meta["range_offset"],
                              segments, state, post), None
        except Exception:  # noqa: BLE001 - an unreadable checkpoint: start over
            return None, UNREADABLE_NOTE

    def _prune(self, ckpt: Checkpoint) -> None:
        """Remove segment files written after the checkpoint (a killed job's last ones)."""
        keep = {p.name for v in ckpt.segments.values() for p, _ in v}
        for f in self.segments_dir.iterdir():
            if f.name not in keep:
                f.unlink()

    def save(self, ckpt: Checkpoint) -> None:
        """Write ``ckpt`` (state first, then job.json: a job.json always has its state)."""
        buf = io.BytesIO()
        np.savez(buf, *ckpt.state, **{f"post/{name}/{i}": a for name, arrays in
                                      ckpt.post.items() for i, a in enumerate(arrays)})
        meta = {"fingerprint": self.fingerprint, "done": ckpt.done, "last_pts": ckpt.last_pts,
                "range_offset": ckpt.range_offset, "input": self.input,
                "segments": {k: [(p.name, s) for p, s in v] for k, v in ckpt.segments.items()}}
        try:
            _atomic_write(self.path / "state.npz", buf.getvalue())
            _atomic_write(self.path / "job.json", json.dumps(meta).encode())
        except OSError as e:
            raise OutputError(f"disk full while writing the checkpoint in {self.path}"
                              if e.errno == 28 else f"cannot write checkpoint in {self.path}: "
                              f"{e.strerror or e}") from None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def discard_unless_saved(self) -> None:
        """After a failure: keep the folder only if the job can be resumed from it."""
        if not self.saved:
            self.discard()


def _unpack_state(z) -> tuple[list, dict]:
    """state.npz -> (recurrent state arrays, {processor name: [arrays]})."""
    n = sum(1 for k in z.files if k.startswith("arr_"))
    post: dict = {}
    for k in sorted((k for k in z.files if k.startswith("post/")),
                    key=lambda k: (k.split("/")[1], int(k.split("/")[2]))):
        post.setdefault(k.split("/")[1], []).append(z[k])
    return [z[f"arr_{i}"] for i in range(n)], post
