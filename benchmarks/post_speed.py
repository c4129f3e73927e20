"""CPU cost of the post stage (issue 18): model + outputs per 1080p frame at ratio 0.25 on the
fused path, plain against + stabilisation, + foreground estimation and both, measured side by
side in one run (rounds alternate the variants; the best round of each counts).

    python benchmarks/post_speed.py [--frames DIR_OF_PNG | --video FILE] [--rounds 5] [--n 8]
                                    [--baseline REV [--versions 2]]

Per variant: the process CPU time per frame of the network half (``FusedRunner.network``:
ONNX Runtime) and of the full-resolution half (``FusedRunner.finish``: refine, post stage,
the encoder's 4:2:0 planes of composite and alpha), the variant's extra cost (its finish
time over the plain path's) as a percentage of the plain path's CPU time per frame, and the
wall time of the whole. On a shared machine the
CPU time is the figure (the load average is printed). malloc is tuned as ``convert_video``
tunes it. ``--baseline REV``: the same measurement of rvmatte at ``REV`` too (``git archive``
of its ``src/rvmatte`` into a temporary folder, run with ``PYTHONPATH``; the same interpreter
and packages), the two versions in turn (``--versions`` turns each), each a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("composite_yuv", "alpha_yuv")  # what `convert -o x.mp4 --alpha a.mp4` makes
VARIANTS = {"plain": {}, "+stabilise": {"stabilize": True},
            "+fg estimation": {"refine_foreground": True},
            "+both": {"stabilize": True, "refine_foreground": True}}


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


def measure(args) -> dict:
    """``{variant: {"network", "finish", "wall"}}``: ms per frame, the best round of each."""
    from rvmatte.hardware import default_threads
    from rvmatte.inference.convert import _tune_malloc
    from rvmatte.inference.session import Matter
    from rvmatte.post import PostChain, PostOptions, quality_processors

    _tune_malloc()  # as convert_video does: freed frame-sized buffers stay in the process
    frames = load_frames(args)
    matter = Matter(backend="fused", device="cpu")
    runner = matter._runner_for(args.ratio)  # the fused runner: its two halves timed apart
    best = {k: {"network": np.inf, "finish": np.inf, "wall": np.inf} for k in VARIANTS}
    n = len(frames)
    for r in range(args.rounds + 1):  # round 0 warms up (compilation, ONNX session)
        for name, opts in VARIANTS.items():
            chain = PostChain(quality_processors(PostOptions(**opts), threads=default_threads())
                              ) if opts else None
            state, net, fin = None, 0.0, 0.0
            w0 = time.perf_counter()
            for t in range(n):
                c0 = time.process_time()
                coefs, state = runner.network(frames[t:t + 1], state, args.ratio)
                c1 = time.process_time()
                runner.finish(frames[t:t + 1], coefs, outputs=OUTPUTS, background=(0, 1, 0),
                              post=chain)
                c2 = time.process_time()
                net, fin = net + c1 - c0, fin + c2 - c1
            wall = time.perf_counter() - w0
            if r:
                b = best[name]
                for key, v in (("network", net), ("finish", fin), ("wall", wall)):
                    b[key] = min(b[key], v / n * 1e3)
    matter.close()
    return {"size": list(frames.shape[1:3]), "frames": n, "threads": default_threads(),
            "load": os.getloadavg()[0], "variants": best}


def table(label: str, res: dict) -> str:
    """The variants' times; "extra": the finish time a variant adds, as a percentage of the
    plain path's network + finish. The network half is the same code in every variant and
    the noisiest figure on a shared machine, so the best of all variants' stands for it."""
    v = res["variants"]
    net = min(b["network"] for b in v.values())
    plain = net + v["plain"]["finish"]
    lines = [f"{label}: load {res['load']:.1f}; network {net:.1f} ms (best of the variants)",
             f"{'variant':16s} {'network':>8s} {'finish':>8s} {'extra':>7s} {'wall ms':>8s}"]
    for name, b in v.items():
        extra = 100 * (b["finish"] - v["plain"]["finish"]) / plain
        lines.append(f"{name:16s} {b['network']:8.1f} {b['finish']:8.1f} {extra:6.1f}% "
                     f"{b['wall']:8.1f}")
    return "\n".join(lines)


def extract(rev: str, work: Path) -> Path:
    """``src/rvmatte`` of ``rev`` under ``work`` (the PYTHONPATH entry)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/rvmatte"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    return work / "src"


def child(pythonpath: Path | None, argv: list) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    p = subprocess.run([sys.executable, __file__, "--json", *argv], env=env, check=True,
                       capture_output=True, text=True)
    return json.loads(p.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default=None, help="a folder of 1080p PNG frames")
    ap.add_argument("--video", default=None, help="a video (frames scaled to 1920x1080)")
    ap.add_argument("--n", type=int, default=8, help="frames per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--baseline", default=None, help="a git revision to measure as well")
    ap.add_argument("--versions", type=int, default=2, help="turns of each version")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args)))
        return
    if args.baseline is None:
        res = measure(args)
        h, w = res["size"]
        print(f"{w}x{h}, ratio {args.ratio}, fused path, {res['threads']} threads, "
              f"{res['frames']} frames x {args.rounds} rounds (best round), ms per frame")
        print(table("this checkout", res))
        return
    argv = [a for a in sys.argv[1:] if a not in ("--baseline", args.baseline)]
    with tempfile.TemporaryDirectory() as tmp:
        old = extract(args.baseline, Path(tmp))
        for turn in range(args.versions):
            for label, path in ((f"baseline {args.baseline}", old), ("this checkout", None)):
                print(table(f"{label} (turn {turn + 1})", child(path, argv)), flush=True)


if __name__ == "__main__":
    main()
