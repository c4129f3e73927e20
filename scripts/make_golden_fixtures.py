#!/usr/bin/env python3
"""Make the golden parity fixtures from the official TF.js model (run once, not in tests).

Runs the tfjs oracle (``shared/tools/tfjs_oracle``, which executes the official RVM
TensorFlow.js graph in Node) on the first frames of a clip resized to 512x288 and stores the
exact input frames with the graph's alpha and foreground::

    python scripts/make_golden_fixtures.py --oracle-dir /path/to/tfjs_oracle \
        --model-dir /path/to/rvm_mobilenetv3_tfjs --clip talking_head.mp4

writes ``tests/fixtures/golden_tfjs_r1.npz`` (20 frames, ratio 1) and
``tests/fixtures/golden_tfjs_r05.npz`` (10 frames, ratio 0.5). Alpha and foreground are
stored as float32 (alpha compresses well: most values are exactly 0 or 1); to keep the
repository small only the last frame's foreground is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle-dir", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--npz", type=Path, nargs="*", default=[],
                    help="reuse oracle outputs already made with oracle.py --out (ratio 1, then 0.5)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "fixtures")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.oracle_dir))
    runs = [(1.0, 20, "golden_tfjs_r1.npz"), (0.5, 10, "golden_tfjs_r05.npz")]
    for i, (ratio, frames, name) in enumerate(runs):
        if i < len(args.npz):
            data = dict(np.load(args.npz[i]))
        else:
            from oracle import load_frames, run_oracle  # type: ignore[import-not-found]

            src = load_frames(args.clip, max_frames=frames, width=512, height=288)
            data = run_oracle(src, ratio, model_dir=args.model_dir)
            data["src"] = src
        out = args.out_dir / name
        # The ratio-0.5 run uses the first frames of the same input: its src is not stored again.
        extra = {"src": data["src"][:frames].astype(np.uint8)} if ratio == 1.0 else {}
        np.savez_compressed(out, **extra,
                            pha=data["pha"][:frames].astype(np.float32),
                            fgr_last=data["fgr"][frames - 1].astype(np.float32),
                            downsample_ratio=np.float32(ratio))
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
