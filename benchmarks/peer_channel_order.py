"""Which channel order (RGB or BGR) each peer model does better with, on a benchmark's clips.

    python benchmarks/peer_channel_order.py BENCH [--resolution low] [--every 4]

Prints the mean MAD (x1e3) of each peer fed RGB and BGR frames. The better order is the default
in ``rvmatte.evaluation.peers.PEERS`` (numbers in ``benchmarks/peers/PROVENANCE.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rvmatte.evaluation.frames import list_clips, list_frames, read_alpha, read_rgb
from rvmatte.metrics import mad
from rvmatte.evaluation.peers import PEERS, Peer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--resolution", default="low")
    ap.add_argument("--every", type=int, default=4, help="use every N-th frame")
    ap.add_argument("--peers-dir", default=str(Path(__file__).parent / "peers"))
    args = ap.parse_args()
    root = Path(args.bench) / args.resolution
    pairs = []
    for clip in list_clips(root / "com"):
        for n in list_frames(root / "com" / clip)[::args.every]:
            pairs.append((read_rgb(root / "com" / clip / n), read_alpha(root / "pha" / clip / n)))
    print(f"{len(pairs)} frames of {root}")
    print("| peer | MAD with RGB | MAD with BGR | better |")
    print("|---|---:|---:|---|")
    for name in PEERS:
        scores = {}
        for order in ("rgb", "bgr"):
            peer = Peer(name, args.peers_dir, channel_order=order)
            scores[order] = float(np.mean([mad(peer(f), g) for f, g in pairs]))
        best = min(scores, key=scores.get).upper()
        print(f"| {name} | {scores['rgb']:.1f} | {scores['bgr']:.1f} | {best} |")


if __name__ == "__main__":
    main()
