"""CPU cost of the post stage (issue 18): model + outputs per 1080p frame at ratio 0.25 on the
fused path, plain against + stabilisation, + foreground estimation and both, measured side by
side in one run (rounds alternate the variants; the best round of each counts).

    python benchmarks/post_speed.py [--frames DIR_OF_PNG | --video FILE] [--rounds 5] [--n 8]

Prints ms per frame, and each variant's extra cost as a percentage of the plain path's.
Wall time (the threads the model uses) and the process CPU time are both shown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("composite_yuv", "alpha_yuv")  # what `convert -o x.mp4 --alpha a.mp4` makes


def load_frames(args) -> np.ndarray:
    from PIL import Image

    if args.frames:
        files = sorted(Path(args.frames).glob("*.png"))[: args.n]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    from rvmatte import read_frames

    video = args.video or REPO / "examples" / "sample_talking_head_640x360.mp4"
    small = read_frames(video, max_frames=args.n)
    return np.stack([np.asarray(Image.fromarray(f).resize((1920, 1080), Image.BILINEAR))
                     for f in small])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default=None, help="a folder of 1080p PNG frames")
    ap.add_argument("--video", default=None, help="a video (frames scaled to 1920x1080)")
    ap.add_argument("--n", type=int, default=8, help="frames per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=0.25)
    args = ap.parse_args()

    from rvmatte.hardware import default_threads
    from rvmatte.inference.session import Matter
    from rvmatte.post import PostChain, PostOptions, quality_processors

    frames = load_frames(args)
    matter = Matter(backend="fused", device="cpu")
    variants = {"plain": None, "+stabilise": PostOptions(stabilize=True),
                "+fg estimation": PostOptions(refine_foreground=True),
                "+both": PostOptions(stabilize=True, refine_foreground=True)}
    best = {k: (float("inf"), float("inf")) for k in variants}
    for r in range(args.rounds + 1):  # round 0 warms up (compilation, ONNX session)
        for name, opts in variants.items():
            chain = None if opts is None else PostChain(
                quality_processors(opts, threads=default_threads()))
            state = None
            w0, c0 = time.perf_counter(), time.process_time()
            for t in range(len(frames)):
                _, state = matter.matte_uint8(frames[t:t + 1], state, args.ratio,
                                              outputs=OUTPUTS, background=(0, 1, 0), post=chain)
            wall = (time.perf_counter() - w0) / len(frames) * 1e3
            cpu = (time.process_time() - c0) / len(frames) * 1e3
            if r:
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    h, w = frames.shape[1:3]
    print(f"{w}x{h}, ratio {args.ratio}, fused path, {default_threads()} threads, "
          f"{len(frames)} frames x {args.rounds} rounds (best round)")
    print(f"{'variant':16s} {'wall ms/frame':>14s} {'extra':>8s} {'cpu ms/frame':>13s} {'extra':>8s}")
    pw, pc = best["plain"]
    for name, (wall, cpu) in best.items():
        print(f"{name:16s} {wall:14.1f} {100 * (wall - pw) / pw:7.1f}% {cpu:13.1f} "
              f"{100 * (cpu - pc) / pc:7.1f}%")
    matter.close()


if __name__ == "__main__":
    main()
