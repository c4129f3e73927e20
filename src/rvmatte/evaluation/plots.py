"""Report figures (matplotlib, Agg backend): per-frame curves and image montages."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_mad_curves(methods: Mapping[str, dict], titles: Mapping[str, str], path: str | os.PathLike,
                    title: str = "Per-frame MAD") -> None:
    """One panel per clip, one line per method: MAD (x1e3) against frame index."""
    plt = _pyplot()
    clips = list(next(iter(methods.values()))["per_frame_mad"]) if methods else []
    n = max(1, len(clips))
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3 * rows), squeeze=False)
    for ax, clip in zip(axes.ravel(), clips):
        for name, pm in methods.items():
            ax.plot(pm["per_frame_mad"][clip], label=titles.get(name, name), lw=1.5)
        ax.set_title(f"clip {clip}")
        ax.set_xlabel("frame")
        ax.set_ylabel("MAD x1e3")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(clips):]:
        ax.axis("off")
    fig.suptitle(title)
    if clips:
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(methods) - 1) // 3), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tile(img: np.ndarray, size: tuple[int, int], label: str) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    im = Image.fromarray(img).resize(size, Image.BILINEAR)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 7 * len(label) + 6, 14], fill=(0, 0, 0))
    d.text((3, 1), label, fill=(255, 255, 0))
    return np.asarray(im)


def save_montage(shots: Sequence[dict], methods: Sequence[str], path: str | os.PathLike,
                 tile: tuple[int, int] = (320, 180)) -> None:
    """Rows = frames; columns = input, ground truth, then each method's alpha."""
    rows = []
    for s in shots:
        h, w = s["gt"].shape
        size = (tile[0], max(1, round(tile[0] * h / w)))
        label = f"{s['res']} {s['clip']}/{s['frame']}"
        cells = [_tile(s["input"], size, label), _tile(s["gt"], size, "ground truth")]
        cells += [_tile(s["preds"][m], size, m) for m in methods if m in s["preds"]]
        rows.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def plot_diagnosis(d: Mapping, path: str | os.PathLike) -> None:
    """Coverage (jumps marked), flicker and uncertain share over time."""
    plt = _pyplot()
    f = d["frames"]
    t = np.arange(len(f["coverage"]))
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(t, f["coverage"], lw=1.5)
    for j in d["coverage_jumps"]:
        axes[0].axvline(j["frame"], color="red", alpha=0.5, lw=1)
    axes[0].set_ylabel("coverage\n(mean alpha)")
    axes[1].plot(t, f["flicker"], lw=1.5, color="tab:orange")
    axes[1].set_ylabel("flicker\n(x1e3)")
    axes[2].plot(t, f["uncertain"], lw=1.5, color="tab:green")
    axes[2].set_ylabel("uncertain\nshare")
    axes[2].set_xlabel("frame")
    for ax in axes:
        ax.grid(alpha=0.3)
    s = d["summary"]
    fig.suptitle(f"{os.path.basename(str(d['input']))}: flicker {s['flicker']:.2f}, "
                 f"{len(d['coverage_jumps'])} coverage jump(s), uncertain {100 * s['uncertain']:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
