"""Per-clip diagnostics without ground truth (``rvmatte diagnose``).

Runs the model of a :class:`~rvmatte.spec.ModelSpec` over a user's clip (through
:class:`~rvmatte.inference.session.Matter`) and measures, per frame:

- **flicker**: mean ``|a_t - a_t-1|`` (x1e3) over the pixels whose image did not change
  (mean RGB change below ``static_threshold``, 0..1 scale). Alpha that moves where the picture
  stands still is flicker, whatever the ground truth would be.
- **coverage**: mean alpha (the share of the frame the subject covers); a *coverage jump* is a
  frame whose coverage differs from the previous one by more than ``jump_threshold``
  (a limb or a person lost or found at once).
- **uncertain**: the share of pixels with ``0.05 < a < 0.95``; a lot of it means a hesitant matte.

The first frame has no flicker (0). Results are a dict (JSON-ready) and a PNG plot over time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputError
from ..spec import ModelSpec

__all__ = ["FrameStats", "diagnose_frames", "diagnose"]

UNCERTAIN_RANGE = (0.05, 0.95)


class FrameStats:
    """Accumulates the per-frame diagnostics from (image, alpha) pairs in frame order."""

    def __init__(self, static_threshold: float = 0.02, jump_threshold: float = 0.02) -> None:
        self.static_threshold = static_threshold
        self.jump_threshold = jump_threshold
        self.flicker: list[float] = []
        self.coverage: list[float] = []
        self.uncertain: list[float] = []
        self.static_share: list[float] = []
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, image: np.ndarray, alpha: np.ndarray) -> None:
        """``image``: uint8 (H,W,3) RGB (or float in [0,1]); ``alpha``: (H,W) float in [0,1]."""
        img = np.asarray(image, dtype=np.float32)
        if np.asarray(image).dtype == np.uint8:
            img = img / 255.0
        a = np.asarray(alpha, dtype=np.float32)
        if img.shape[:2] != a.shape:
            raise ValueError(f"image {img.shape[:2]} and alpha {a.shape} sizes differ")
        if self._prev is None:
            self.flicker.append(0.0)
            self.static_share.append(1.0)
        else:
            static = np.abs(img - self._prev[0]).mean(axis=-1) < self.static_threshold
            self.static_share.append(float(static.mean()))
            change = np.abs(a - self._prev[1])
            self.flicker.append(float(change[static].mean() * 1e3) if static.any() else 0.0)
        self.coverage.append(float(a.mean()))
        lo, hi = UNCERTAIN_RANGE
        self.uncertain.append(float(((a > lo) & (a < hi)).mean()))
        self._prev = (img, a)

    def jumps(self) -> list[dict]:
        out = []
        for t in range(1, len(self.coverage)):
            delta = self.coverage[t] - self.coverage[t - 1]
            if abs(delta) > self.jump_threshold:
                out.append({"frame": t, "coverage_change": delta})
        return out

    def result(self) -> dict:
        n = len(self.coverage)
        return {
            "summary": {
                "frames": n,
                "flicker": float(np.mean(self.flicker[1:])) if n > 1 else 0.0,
                "flicker_max": float(np.max(self.flicker)) if n else 0.0,
                "flicker_worst_frame": int(np.argmax(self.flicker)) if n else None,
                "coverage_mean": float(np.mean(self.coverage)) if n else 0.0,
                "coverage_jumps": len(self.jumps()),
                "uncertain": float(np.mean(self.uncertain)) if n else 0.0,
            },
            "thresholds": {"static": self.static_threshold, "coverage_jump": self.jump_threshold,
                           "uncertain_range": list(UNCERTAIN_RANGE)},
            "coverage_jumps": self.jumps(),
            "frames": {"flicker": self.flicker, "coverage": self.coverage,
                       "uncertain": self.uncertain, "static_share": self.static_share},
        }


def diagnose_frames(pairs: Iterable[tuple[np.ndarray, np.ndarray]], **thresholds: float) -> dict:
    """Diagnostics of (image, alpha) pairs already computed (no model)."""
    stats = FrameStats(**thresholds)
    for image, alpha in pairs:
        stats.add(image, alpha)
    if not stats.coverage:
        raise InputError("no frames to diagnose")
    return stats.result()


def diagnose(input: str | os.PathLike, out: str | os.PathLike | None = None, *,
             spec: ModelSpec | None = None, start: Any = None, end: Any = None,
             max_frames: int | None = None, chunk: int | None = None,
             static_threshold: float = 0.02, jump_threshold: float = 0.02,
             overwrite: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """Matte ``input`` (video, image folder or image) with the model of ``spec`` (default:
    :class:`~rvmatte.spec.ModelSpec`'s, backend ``auto``) and diagnose it.

    ``chunk``: frames per model call (default: 1 on the CPU, 12 on a GPU, as ``convert``; the
    numbers do not depend on it, the state is carried across calls). Writes
    ``out/diagnosis.json`` and ``out/diagnosis.png`` when ``out`` is given. Returns the
    diagnosis dict (``summary``, ``coverage_jumps``, per-frame series in ``frames``).
    """
    from ..inference.session import Matter
    from ..io.readers import Source, parse_range, probe

    if out is not None:
        out = Path(out)
        if not overwrite and ((out / "diagnosis.json").exists() or (out / "diagnosis.png").exists()):
            raise OutputError(f"{out} already holds a diagnosis (pass --overwrite)")
    if max_frames is not None and max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if chunk is not None and chunk < 1:
        raise InputError("--seq-chunk must be at least 1")
    spec = spec if spec is not None else ModelSpec()
    info = probe(input)
    matter = Matter(spec)
    chunk = chunk or (1 if spec.on_cpu() else 12)
    stats = FrameStats(static_threshold=static_threshold, jump_threshold=jump_threshold)
    batch: list[np.ndarray] = []

    def flush() -> None:
        matted = matter.process(np.stack(batch))
        for img, a in zip(batch, matted.pha):
            stats.add(img, a)
        batch.clear()
        if progress:
            progress(len(stats.coverage))

    for i, frame in enumerate(Source(info, parse_range(start, end)).frames()):
        if max_frames is not None and i >= max_frames:
            break
        batch.append(frame.image)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if not stats.coverage:
        raise InputError(f"{input}: no frames in the chosen range")
    result = {"input": str(input), "width": info.width, "height": info.height,
              "downsample_ratio": matter.ratio_for(info.height, info.width), **stats.result()}
    if out is not None:
        from .plots import plot_diagnosis

        out.mkdir(parents=True, exist_ok=True)
        (out / "diagnosis.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_diagnosis(result, out / "diagnosis.png")
    return result
