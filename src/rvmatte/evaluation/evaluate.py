"""Score predicted alpha frame folders against ground truth (``rvmatte evaluate``).

``PRED`` and ``GT`` are folders of per-clip subfolders of grayscale PNG frames with matching
names (see :mod:`rvmatte.evaluation.frames`). Every clip of ``GT`` must be in ``PRED`` with the
same frame names and sizes; extra clips in ``PRED`` are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError
from .frames import list_clips, list_frames, read_alpha
from ..metrics import ALPHA_METRICS, ClipScorer, mean_of_clips

__all__ = ["evaluate_folders", "format_table"]

LABELS = {"mad": "MAD", "mse": "MSE", "grad": "Grad", "conn": "Conn", "dtssd": "dtSSD",
          "fgr_mse": "fgr MSE"}


def evaluate_folders(pred: str | os.PathLike, gt: str | os.PathLike,
                     metrics: Sequence[str] = ALPHA_METRICS) -> dict:
    """Metrics of every clip of ``gt`` against ``pred``.

    Returns ``{"mad": ..., "mse": ..., "grad": ..., "conn": ..., "dtssd": ...,
    "clips": {name: {metric: clip mean, "frames": n}}}``; top-level values are means of the
    clip means.
    """
    pred, gt = Path(pred), Path(gt)
    if not pred.is_dir():
        raise InputError(f"prediction folder not found: {pred}")
    clips: dict[str, dict] = {}
    for clip in list_clips(gt):
        if not (pred / clip).is_dir():
            raise InputError(f"clip {clip!r} is in the ground truth but not in {pred}")
        names = list_frames(gt / clip)
        missing = [n for n in names if not (pred / clip / n).is_file()]
        if missing:
            raise InputError(f"{pred / clip} lacks {len(missing)} frame(s) of the ground truth, "
                             f"first {missing[0]}")
        scorer = ClipScorer(metrics=tuple(metrics))
        for n in names:
            p, g = read_alpha(pred / clip / n), read_alpha(gt / clip / n)
            if p.shape != g.shape:
                raise InputError(f"{pred / clip / n}: size {p.shape[1]}x{p.shape[0]} differs from "
                                 f"the ground truth's {g.shape[1]}x{g.shape[0]}")
            scorer.add(p, g)
        clips[clip] = {**scorer.means(), "frames": len(names)}
    result = mean_of_clips({k: v for k, v in c.items() if k != "frames"} for c in clips.values())
    return {**result, "clips": clips}


def format_table(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = ALPHA_METRICS,
                 first: str = "clip") -> str:
    """A markdown table: one row per key of ``rows``, one column per metric."""
    head = f"| {first} | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |"
    sep = "|---|" + "---:|" * len(metrics)
    lines = [head, sep]
    for name, vals in rows.items():
        cells = [f"{vals[m]:.2f}" if m in vals else "–" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
