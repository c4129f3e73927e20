"""The cluster path's cost and gain on this machine, measured side by side in one run.

Converts the same clips (composite + alpha, H.264) three ways, interleaved round after round so
that a change in the machine's load hits all three alike:

    local      convert_video on each clip in turn, one model shared (as convert_folder does),
               the model on every core (the default)
    1 worker   rvmatte.cluster.convert_many on a Ray instance of this machine, one task at a
               time with every core (cpus_per_task = cores): the overhead of the cluster path
    2 workers  the same with cpus_per_task = cores / 2: two clips at once, each on half the
               cores

Ray's start and the workers' first model load are reported apart ("cold"): a cluster is
started once and its workers keep their model, so the rounds after the first are the steady
state the overhead goal (<= 10 % slower than local) is about.

    RVMATTE_MEDIA=DIR python benchmarks/cluster_speed.py       # 4 real clips, 60 frames each
    python benchmarks/cluster_speed.py --clips a.mp4 b.mp4 --frames 90 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rvmatte.cluster import convert_many
from rvmatte.inference.convert import convert_video
from rvmatte.inference.session import Matter
from rvmatte.spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_talking_head_640x360.mp4"
# Real clips from a folder named by $RVMATTE_MEDIA (the project's shared media set holds
# these); without it, the bundled sample clip alone.
_MEDIA = os.environ.get("RVMATTE_MEDIA")
DEFAULT_CLIPS = ([Path(_MEDIA) / "upper_body_man_singing_640x480.mp4", SAMPLE,
                  Path(_MEDIA) / "walking_man_in_crowd_1280x720.mp4",
                  Path(_MEDIA) / "talking_head_woman_long_hair_1280x720.mp4"]
                 if _MEDIA else [SAMPLE])


def run_local(clips, out: Path, spec: ModelSpec, end: str) -> tuple[float, int]:
    t = time.perf_counter()
    frames = 0
    m = Matter(spec)
    try:
        for c in clips:
            r = convert_video(c, out / f"{c.stem}.mp4", alpha=out / f"{c.stem}_alpha.mp4",
                              model=m, end=end, overwrite=True)
            frames += r.frames
    finally:
        m.close()
    return time.perf_counter() - t, frames


def run_cluster(clips, out: Path, spec: ModelSpec, end: str, cpus: float) -> tuple[float, int]:
    t = time.perf_counter()
    res = convert_many(clips, out, alpha=out, spec=spec, cluster="local", cpus_per_task=cpus,
                       end=end, overwrite=True)
    if not res.ok:
        raise SystemExit(f"cluster run failed: {res.failed[0]['error']}")
    return time.perf_counter() - t, res.frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="+", type=Path, default=DEFAULT_CLIPS)
    ap.add_argument("--frames", type=int, default=60, help="frames of each clip")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    clips = [c for c in args.clips if c.exists()]
    cores = os.cpu_count() or 1
    end = f"{args.frames}f"
    spec = ModelSpec()
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - t
    tmp = Path(tempfile.mkdtemp(prefix="cluster-speed-"))
    ways = {"local": lambda o: run_local(clips, o, spec, end),
            "1 worker": lambda o: run_cluster(clips, o, spec, end, cores),
            "2 workers": lambda o: run_cluster(clips, o, spec, end, max(1, cores // 2))}
    times: dict = {k: [] for k in ways}
    frames = {}
    try:
        for rnd in range(args.rounds + 1):  # round 0: cold (first model load in each worker)
            for name, fn in ways.items():
                out = tmp / name.replace(" ", "_")
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                s, n = fn(out)
                frames[name] = n
                times[name].append(s)
                print(f"round {rnd}{' (cold)' if rnd == 0 else ''}: {name:9s} {s:6.1f} s "
                      f"{n / s:5.2f} fps", file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["local"][1:])
    print(f"\n{len(clips)} clips x {args.frames} frames (composite + alpha, H.264), "
          f"{cores} cores, {args.rounds} warm rounds (median) + 1 cold; Ray start {ray_start:.1f} s")
    print(f"{'path':10s} {'cold s':>7} {'warm s':>7} {'fps':>6} {'vs local':>9} "
          f"{'per round (time / local time)':>30}")
    for name in ways:
        warm = statistics.median(times[name][1:])
        ratios = [t / b for t, b in zip(times[name][1:], times["local"][1:])]
        print(f"{name:10s} {times[name][0]:7.1f} {warm:7.1f} {frames[name] / warm:6.2f} "
              f"{warm / base:8.2f}x   {' '.join(f'{r:.2f}' for r in ratios)} "
              f"(median {statistics.median(ratios):.2f})")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (other processes skew all "
          "three alike; the rounds interleave them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
