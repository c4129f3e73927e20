"""``rvmatte diagnose``: where does a clip go wrong? Flicker, coverage jumps, uncertain alpha."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_model_options, add_output, add_quiet, spec_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose", help="per-frame quality diagnostics of a clip (no ground truth needed)",
        description="Mattes INPUT and reports, per frame: flicker (alpha change where the image "
                    "does not change, x1e3), coverage (mean alpha) and its jumps, and the share of "
                    "uncertain alpha (0.05 < a < 0.95). Writes diagnosis.json and diagnosis.png.")
    p.add_argument("input", help="video file, image folder, %%06d.png pattern or image")
    add_output(p, default=None, metavar="DIR",
               help="folder for diagnosis.json and diagnosis.png (default: <input name>-diagnosis)")
    p.add_argument("--start", default=None, help="seconds, [hh:]mm:ss, or frame number (150f)")
    p.add_argument("--end", default=None, help="seconds, [hh:]mm:ss, or frame number (300f)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="diagnose at most N frames")
    p.add_argument("--static-threshold", type=float, default=0.02,
                   help="mean RGB change (0..1) below which a pixel counts as unchanged")
    p.add_argument("--jump-threshold", type=float, default=0.02,
                   help="coverage change (share of the frame) that counts as a jump")
    p.add_argument("--overwrite", action="store_true", help="replace an existing diagnosis")
    p.add_argument("--json", action="store_true", help="print the diagnosis JSON on stdout")
    add_quiet(p)
    add_model_options(p, seq_chunk=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.diagnose import diagnose

    out = Path(args.output) if args.output else Path(f"{Path(args.input).stem or 'input'}-diagnosis")
    result = diagnose(args.input, out, spec=spec_from_args(args), start=args.start, end=args.end,
                      max_frames=args.max_frames, chunk=args.seq_chunk,
                      static_threshold=args.static_threshold, jump_threshold=args.jump_threshold,
                      overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s = result["summary"]
        print(f"{s['frames']} frames; flicker {s['flicker']:.2f} (x1e3, worst frame "
              f"{s['flicker_worst_frame']}); {s['coverage_jumps']} coverage jump(s); "
              f"uncertain alpha {100 * s['uncertain']:.1f}% of pixels", flush=True)
        for j in result["coverage_jumps"][:10]:
            print(f"  coverage jump at frame {j['frame']}: {100 * j['coverage_change']:+.1f}% of the frame")
        if not args.quiet:
            print(f"wrote {out / 'diagnosis.json'} and {out / 'diagnosis.png'}", file=sys.stderr)
    return 0
