"""Model-only speed per backend: this checkout against another (an older commit), side by side.

Each measurement is a fresh child process that builds ``Matter(backend=B, downsample_ratio=r)``
on the CPU with the bundled weights and times ``Matter.step`` on a fixed random frame, the
state carried, after warm-up calls; the two trees alternate within each round (the order
flips every round) so that load from elsewhere hits both alike. Prints the median seconds per
frame of each side and the ratio old / new (above 1: this checkout is faster).

    git archive <old-commit> | tar -x -C /tmp/base
    python benchmarks/runtime_ab.py --baseline-src /tmp/base/src --rounds 5

Used for issue 16 (the runtime redesign must keep every backend at >= 0.97x its old speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE_SRC = Path(__file__).resolve().parents[1] / "src"

CHILD = r"""
import json, sys, time
import torch
from rvmatte.inference.session import Matter
backend, ratio, h, w, frames, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)
m = Matter(device="cpu", backend=backend, downsample_ratio=ratio)
src = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
state = None
for _ in range(2):
    state = m.step(src, state, ratio).state
t = time.perf_counter()
for _ in range(frames):
    state = m.step(src, state, ratio).state
print(json.dumps({"s_per_frame": (time.perf_counter() - t) / frames}))
"""


def run_child(src_dir: Path, backend: str, ratio: float, h: int, w: int, frames: int,
              threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src_dir), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", CHILD, backend, str(ratio), str(h), str(w),
                          str(frames), str(threads)], env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"{src_dir} {backend}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_frame"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", type=Path, required=True,
                    help="src/ folder of the other checkout")
    ap.add_argument("--backends", default="torch,torch-fast,onnxruntime,fused")
    ap.add_argument("--sizes", default="1920x1080@0.25,512x288@0.5",
                    help="WxH@ratio, comma-separated")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    sides = {"new": HERE_SRC, "old": a.baseline_src}
    rows = []
    for size in a.sizes.split(","):
        wh, ratio = size.split("@")
        w, h = map(int, wh.split("x"))
        for b in a.backends.split(","):
            times = {"new": [], "old": []}
            for r in range(a.rounds):
                order = ("new", "old") if r % 2 == 0 else ("old", "new")
                for side in order:
                    times[side].append(run_child(sides[side], b, float(ratio), h, w, a.frames,
                                                 a.threads))
            new, old = statistics.median(times["new"]), statistics.median(times["old"])
            rows.append({"size": size, "backend": b, "new_ms": new * 1e3, "old_ms": old * 1e3,
                         "old_over_new": old / new})
            print(f"{size:16s} {b:12s} new {new * 1e3:8.1f} ms  old {old * 1e3:8.1f} ms  "
                  f"old/new {old / new:5.3f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
