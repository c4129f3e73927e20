"""Seam error of a split video against warm-up length, on real clips.

A part of a split video (``rvmatte convert --split``) starts ``W`` frames before its first
frame from a zero recurrent state, mattes those frames without writing them, then writes its
own. This script measures what that costs in accuracy: for each clip and seam position ``s``
it converts frames ``s .. s+K-1`` exactly as a part does (rvmatte.cluster.work.convert_part:
the warm-up, then the part seeded with the warm-up's state) and compares their alpha with the
sequential run's (one conversion from the clip's first frame), both written losslessly
(FFV1), for each ``W``.

Per frame: mean |delta alpha| and its 99th percentile over the pixels (alpha in [0, 1]). Per
W, over every seam: the seam frame (the part's first) and the worst of the K frames after
it. The default warm-up is the smallest W whose seam frames have mean |delta alpha| <= 5e-4
(over all seams) and a 99th percentile <= 2/255 at every seam; the table also says which
seams miss the bound on their own, and by how much (docs/CLUSTER.md).

    RVMATTE_MEDIA=DIR python benchmarks/seam_error.py     # the real clips of DIR + the sample
    python benchmarks/seam_error.py --clips a.mp4 b.mp4 --warmups 0 30 60 --after 20
    python benchmarks/seam_error.py --json seam.json      # the numbers, for docs/CLUSTER.md
    python benchmarks/seam_error.py --summary seam.json more.json   # the table again, merged

Costs about (sum of W + K per W) frames per seam plus one sequential run per clip: 20-40
minutes at 720p on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rvmatte.cluster import split as sp
from rvmatte.cluster import work
from rvmatte.inference.convert import convert_video
from rvmatte.io.readers import probe
from rvmatte.spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]
# Real clips: every .mp4 of the folder named by $RVMATTE_MEDIA (the project's shared media
# set), and the bundled sample clip.
_MEDIA = os.environ.get("RVMATTE_MEDIA")
DEFAULT_CLIPS = ((sorted(Path(_MEDIA).glob("*.mp4")) if _MEDIA else [])
                 + [REPO / "examples" / "sample_talking_head_640x360.mp4"])
WARMUPS = (0, 15, 30, 60, 120, 240)
BOUND_MEAN, BOUND_P99 = sp.SEAM_BOUND["mean"], sp.SEAM_BOUND["p99"]


def alpha_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


def sequential(clip: Path, frames: int, spec: ModelSpec, tmp: Path) -> np.ndarray:
    """The sequential run's alpha of the first ``frames`` frames (uint8)."""
    out = tmp / "sequential.mkv"
    convert_video(clip, None, alpha=out, codec="ffv1", spec=spec, end=f"{frames}f",
                  overwrite=True)
    return alpha_frames(out)


def part_alpha(clip: Path, seam: int, warmup: int, after: int, spec: ModelSpec,
               tmp: Path) -> np.ndarray:
    """Alpha of frames ``seam .. seam+after-1`` made as a split part is (the product's code)."""
    info = probe(clip)
    pts = sp.frame_timestamps(info)
    times = [float((p - info.start_pts) * info.time_base) for p in pts]
    w0 = max(0, seam - warmup)
    out = tmp / f"part_{seam}_{warmup}.mkv"
    part = sp.Part(index=0, count=1, first=seam, stop=seam + after, start=times[seam],
                   end=times[seam + after] if seam + after < len(times) else None,
                   warm_start=None if w0 == 0 else times[w0], warm_frames=seam - w0,
                   offset=pts[seam], outputs=[("alpha", str(out))])
    plan = sp.SplitPlan(input=str(clip), parts=[part], warmup=warmup, range_offset=0,
                        last_pts=pts[seam + after - 1], frames=after,
                        parts_dir=str(tmp / "parts"))
    job = work.ClipJob(str(clip), [("alpha", str(out))], spec, options={"codec": "ffv1"},
                       overwrite=True)
    rec = work.convert_part(job, plan.as_dict(), 0)
    if rec["status"] != "done":
        raise SystemExit(f"{clip.name}: part failed: {rec['error']}")
    a = alpha_frames(out)
    out.unlink()
    return a


def frame_stats(a: np.ndarray, b: np.ndarray) -> list:
    """Per frame: (mean, p99, max) of |a - b| in alpha units."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)) / 255.0
    d = d.reshape(len(d), -1)
    return [(float(x.mean()), float(np.percentile(x, 99)), float(x.max())) for x in d]


def seams_of(n: int, after: int, count: int) -> list:
    """``count`` seam positions spread over the clip, the last as late as ``after`` allows."""
    last = n - after
    return sorted({max(1, last * (k + 1) // count) for k in range(count)})


def measure(clips, warmups, after: int, seams: int, spec: ModelSpec) -> list:
    rows = []
    for clip in clips:
        n = probe(clip).frames or 0
        if n < after + 2:
            print(f"{clip.name}: too short ({n} frames)", file=sys.stderr)
            continue
        tmp = Path(tempfile.mkdtemp(prefix="seam-"))
        try:
            positions = seams_of(n, after, seams)
            t = time.perf_counter()
            ref = sequential(clip, positions[-1] + after, spec, tmp)
            print(f"{clip.name}: {n} frames, sequential run {time.perf_counter() - t:.0f} s, "
                  f"seams at {positions}", file=sys.stderr)
            for s in positions:
                for w in warmups:
                    if w >= s:
                        continue  # reaches the clip's start: the part is the sequential run
                    t = time.perf_counter()
                    st = frame_stats(part_alpha(clip, s, w, after, spec, tmp), ref[s:s + after])
                    rows.append({"clip": clip.name, "frames": n, "seam": s, "warmup": w,
                                 "per_frame": st})
                    worst = max(st, key=lambda x: x[0])
                    print(f"  seam {s:4d} W {w:4d}: seam frame mean {st[0][0]:.2e} p99 "
                          f"{st[0][1] * 255:5.2f}/255 max {st[0][2]:.3f} | worst of {after}: "
                          f"mean {worst[0]:.2e} p99 {max(x[1] for x in st) * 255:5.2f}/255 "
                          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _within(x) -> bool:
    return x[0] <= BOUND_MEAN and x[1] <= BOUND_P99 + 1e-9


def summary(rows: list, warmups) -> tuple[list, int | None]:
    """Per W over every genuine seam measured (W < seam): the seam frame's mean / p99 / max
    (average over the seams, and the worst seam), the worst frame of the window, how many
    seams meet the bound at the seam frame and over the whole window; and the chosen W: the
    smallest whose seam frames have a mean |delta alpha| (over all of them) within the mean
    bound and a 99th percentile within the p99 bound at every seam."""
    table, chosen = [], None
    for w in warmups:
        rs = [r for r in rows if r["warmup"] == w and w < r["seam"]]
        if not rs:
            continue
        first = [r["per_frame"][0] for r in rs]
        worst = [(max(x[0] for x in r["per_frame"]), max(x[1] for x in r["per_frame"]))
                 for r in rs]
        allf = [x for r in rs for x in r["per_frame"]]
        line = {"warmup": w, "seams": len(rs),
                "seam_mean": max(x[0] for x in first), "seam_p99": max(x[1] for x in first),
                "seam_max": max(x[2] for x in first),
                "seam_mean_avg": float(np.mean([x[0] for x in first])),
                "seam_p99_avg": float(np.mean([x[1] for x in first])),
                "worst_mean": max(x[0] for x in worst), "worst_p99": max(x[1] for x in worst),
                "window_mean": float(np.mean([x[0] for x in allf])),
                "ok_seam": sum(_within(x) for x in first), "ok_window": sum(map(_within, worst)),
                "failing": [f"{r['clip']}@{r['seam']}" for r, x in zip(rs, first)
                            if not _within(x)]}
        line["ok"] = (line["seam_mean_avg"] <= BOUND_MEAN
                      and line["seam_p99"] <= BOUND_P99 + 1e-9)
        table.append(line)
        if line["ok"] and chosen is None:
            chosen = w
    return table, chosen


def report(table: list, chosen, rows: list, after: int) -> None:
    print(f"\nseam error vs warm-up: {len(rows)} (seam, W) runs on "
          f"{len({r['clip'] for r in rows})} clips, {after} frames after each seam; alpha in "
          "[0, 1]; genuine seams only (W < seam)")
    print(f"{'W':>4} {'seams':>5} | seam frame: {'mean avg':>8} {'worst':>8} {'p99 avg':>9} "
          f"{'worst':>8} {'max':>6} | {after} frames: {'worst mean':>10} {'worst p99':>9} | "
          f"{'in bound: seam':>14} {'window':>6}")
    for t in table:
        print(f"{t['warmup']:4d} {t['seams']:5d} |             {t['seam_mean_avg']:8.1e} "
              f"{t['seam_mean']:8.1e} {t['seam_p99_avg'] * 255:5.1f}/255 "
              f"{t['seam_p99'] * 255:4.0f}/255 {t['seam_max']:6.3f} |            "
              f"{t['worst_mean']:10.1e} {t['worst_p99'] * 255:5.0f}/255 | "
              f"{t['ok_seam']:>8d} of {t['seams']:<3d} {t['ok_window']:>3d}")
    print(f"bound: mean |d alpha| <= {BOUND_MEAN:.0e} over the seam frames, p99 <= "
          f"{BOUND_P99 * 255:.0f}/255 at every seam frame (per seam: 'in bound' counts)")
    for t in table:
        if t["failing"]:
            print(f"  W {t['warmup']:3d}: seam frame outside the bound at {', '.join(t['failing'])}")
    if chosen is None:
        print("no warm-up measured meets the bound")
    else:
        print(f"smallest warm-up within the bound: W = {chosen} frames "
              f"(rvmatte.cluster.split.DEFAULT_WARMUP = {sp.DEFAULT_WARMUP})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="+", type=Path, default=DEFAULT_CLIPS)
    ap.add_argument("--warmups", nargs="+", type=int, default=list(WARMUPS))
    ap.add_argument("--after", type=int, default=30, help="frames compared after each seam")
    ap.add_argument("--seams", type=int, default=2, help="seam positions per clip")
    ap.add_argument("--downsample", default=None, help="ratio (default: auto)")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--summary", type=Path, nargs="+", default=None,
                    help="print the table of earlier --json files (merged) instead of measuring")
    args = ap.parse_args(argv)
    if args.summary:
        merged: dict = {}
        for f in args.summary:
            saved = json.loads(f.read_text())
            after = saved["after"]
            for r in saved["rows"]:
                merged[r["clip"], r["seam"], r["warmup"]] = r
        rows = list(merged.values())
        warmups = sorted({r["warmup"] for r in rows})
    else:
        spec = ModelSpec(downsample=args.downsample)
        rows = measure([c for c in args.clips if c.exists()], sorted(args.warmups), args.after,
                       args.seams, spec)
        after, warmups = args.after, sorted(args.warmups)
    table, chosen = summary(rows, warmups)
    report(table, chosen, rows, after)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "table": table, "chosen": chosen,
                                         "after": after}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
