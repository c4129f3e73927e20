"""``rvmatte benchmark make|run``: composited clips with exact ground truth, and the quality
report of our model against the peer models on them."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError

DEFAULT_RECIPE = "benchmarks/default_benchmark.json"
DEFAULT_PEERS = "benchmarks/peers"

EPILOG = """examples:
  rvmatte benchmark make -o bench/                       # the default recipe (from the repo root)
  rvmatte benchmark make -o bench/ --resolution low --frames 8
  rvmatte benchmark run bench/ -o report/                # ours + the three peers
  rvmatte benchmark run bench/ -o report/ --save-predictions
  rvmatte evaluate --pred report/predictions/low/rvmatte --gt bench/low/pha
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="make benchmark clips; run the quality benchmark",
                              description=__doc__, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark_command", metavar="{make,run}")

    m = sub.add_parser("make", help="compose clips with exact ground truth from a recipe")
    m.add_argument("-o", "--output", required=True, help="benchmark folder to create")
    m.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help=f"recipe JSON (default: {DEFAULT_RECIPE}, relative to the current folder)")
    m.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    m.add_argument("--resolution", action="append", default=None, metavar="NAME",
                   help="only this resolution of the recipe (repeatable; e.g. low, high)")
    m.add_argument("--frames", type=int, default=None, help="override frames per clip")
    m.add_argument("--clips", type=int, default=None, help="override clips per resolution")
    m.add_argument("--overwrite", action="store_true", help="replace an existing benchmark folder")
    m.add_argument("--quiet", "-q", action="store_true")
    m.set_defaults(func=run_make)

    r = sub.add_parser("run", help="score our model and the peers; write a report folder")
    r.add_argument("benchmark", help="folder made by `rvmatte benchmark make`")
    r.add_argument("-o", "--output", required=True, help="report folder")
    r.add_argument("--resolution", action="append", default=None, metavar="NAME")
    r.add_argument("--max-frames", type=int, default=None, help="score only the first N frames")
    r.add_argument("--variant", default="mobilenetv3", choices=["mobilenetv3", "resnet50"])
    r.add_argument("--weights", default="default",
                   help="'default' (bundled), a .pth checkpoint, or 'none' (random init, testing)")
    r.add_argument("--backends", default="torch,onnxruntime",
                   help="our backends to run, comma-separated (unavailable ones are skipped)")
    r.add_argument("--downsample", default=None, metavar="auto|R",
                   help="our downsample ratio (default: the benchmark's per-resolution ratio)")
    r.add_argument("--peers-dir", default=DEFAULT_PEERS,
                   help=f"folder of the peer ONNX models (default: {DEFAULT_PEERS})")
    r.add_argument("--peers", default=None,
                   help="comma-separated peers (default all: mediapipe_selfie,mediapipe_meet,sinet); "
                        "'none' for ours only")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and the peers (default: library defaults)")
    r.add_argument("--save-predictions", action="store_true",
                   help="also write every method's alpha PNGs under OUTPUT/predictions/")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--json", action="store_true", help="print results.json on stdout")
    r.add_argument("--quiet", "-q", action="store_true")
    r.set_defaults(func=run_run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _say(args):
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def run_make(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark_clips import load_recipe, make_benchmark

    recipe = load_recipe(args.recipe, seed=args.seed, frames=args.frames, clips=args.clips)
    make_benchmark(recipe, args.output, resolutions=args.resolution, overwrite=args.overwrite,
                   progress=_say(args))
    if not args.quiet:
        print(f"benchmark written to {args.output}", file=sys.stderr)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from ..evaluation.report import build_methods, run_benchmark

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    weights = None if str(args.weights).lower() == "none" else args.weights
    peers = None if args.peers is None else (
        [] if args.peers.lower() == "none" else [s.strip() for s in args.peers.split(",") if s.strip()])
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("torch", "onnxruntime"):
            raise InputError(f"unknown backend {b!r} (torch, onnxruntime)")
    methods, notes = build_methods(weights=weights, variant=args.variant, backends=backends,
                                   peers_dir=args.peers_dir, peers=peers,
                                   downsample_ratio=args.downsample, threads=args.threads)
    if weights is None:
        notes.append("our model ran with random weights (--weights none): numbers are meaningless")
    results = run_benchmark(args.benchmark, args.output, methods=methods, notes=notes,
                            resolutions=args.resolution, max_frames=args.max_frames,
                            save_predictions=args.save_predictions, overwrite=args.overwrite,
                            progress=_say(args))
    if args.json:
        print(json.dumps(results, indent=2))
    elif not args.quiet:
        print((__import__("pathlib").Path(args.output) / "report.md").read_text())
    return 0
