"""``rvmatte benchmark make|run``: composited clips with exact ground truth, and the quality
report of our model against the peer models on them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..spec import BACKENDS
from .options import MODEL_OPTIONS, add_model_options, add_output, add_quiet, spec_from_args

EPILOG = """examples:
  rvmatte benchmark make -o bench/                       # the default recipe (of the checkout)
  rvmatte benchmark make -o bench/ --resolution low --frames 8
  rvmatte benchmark run bench/ -o report/                # ours + the three peers
  rvmatte benchmark run bench/ -o report/ --save-predictions
  rvmatte evaluate --pred report/predictions/low/rvmatte --gt bench/low/pha
"""


# `benchmark run`'s own default ratio: the benchmark's, per resolution, so that reports of
# different runs compare (the shared default, auto, would follow the frame size).
RUN_OVERRIDES = {"downsample": dict(
    default=None,
    help="our downsample ratio, auto or in (0, 1] (default here: each resolution's ratio "
         "from the benchmark's recipe, so that reports compare)")}


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="make benchmark clips; run the quality benchmark",
                              description=__doc__, epilog=EPILOG)
    sub = p.add_subparsers(dest="benchmark_command", metavar="{make,run}")

    m = sub.add_parser("make", help="compose clips with exact ground truth from a recipe")
    add_output(m, required=True, metavar="DIR", help="benchmark folder to create")
    m.add_argument("--recipe", default=None, metavar="FILE",
                   help="recipe JSON (default: benchmarks/default_benchmark.json of the rvmatte "
                        "source checkout: under the current folder or the one rvmatte runs from)")
    m.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    m.add_argument("--resolution", action="append", default=None, metavar="NAME",
                   help="only this resolution of the recipe (repeatable; e.g. low, high)")
    m.add_argument("--frames", type=int, default=None, help="override frames per clip")
    m.add_argument("--clips", type=int, default=None, help="override clips per resolution")
    m.add_argument("--overwrite", action="store_true", help="replace an existing benchmark folder")
    add_quiet(m)
    m.set_defaults(func=run_make)

    r = sub.add_parser("run", help="score our model and the peers; write a report folder")
    r.add_argument("benchmark", help="folder made by `rvmatte benchmark make`")
    add_output(r, required=True, metavar="DIR", help="report folder")
    r.add_argument("--resolution", action="append", default=None, metavar="NAME",
                   help="only this resolution of the benchmark (repeatable)")
    r.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="score only the first N frames of each clip")
    r.add_argument("--peers-dir", default=None, metavar="DIR",
                   help="folder of the peer ONNX models (default: benchmarks/peers of the "
                        "rvmatte source checkout, as for the recipe)")
    r.add_argument("--peers", default=None,
                   help="comma-separated peers (default: all, mediapipe_selfie,mediapipe_meet,"
                        "sinet); 'none' for ours only")
    r.add_argument("--post", default="stabilize,foreground", metavar="LIST",
                   help="post-network stages also run as methods of their own beside our "
                        "model: comma-separated stabilize, foreground; 'none' for the network "
                        "alone")
    r.add_argument("--save-predictions", action="store_true",
                   help="also write every method's alpha PNGs under OUTPUT/predictions/")
    r.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    r.add_argument("--json", action="store_true", help="print results.json on stdout")
    add_quiet(r)
    g = add_model_options(r, only=[o for o in MODEL_OPTIONS if o != "backend"],
                          override=RUN_OVERRIDES)
    g.add_argument("--backend", "--backends", dest="backends", default="torch,onnxruntime",
                   metavar="B[,B...]",
                   help="our backends to compare, comma-separated, each one of "
                        f"{', '.join(BACKENDS)} (several here, unlike the other subcommands: "
                        "the report compares them; unavailable ones are skipped)")
    r.set_defaults(func=run_run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _say(args):
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def run_make(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark_clips import default_recipe, load_recipe, make_benchmark

    recipe = load_recipe(args.recipe or default_recipe(), seed=args.seed, frames=args.frames,
                         clips=args.clips)
    make_benchmark(recipe, args.output, resolutions=args.resolution, overwrite=args.overwrite,
                   progress=_say(args))
    if not args.quiet:
        print(f"benchmark written to {args.output}", file=sys.stderr)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark_clips import DEFAULT_PEERS, find_repo_path
    from ..evaluation.report import POST_METHODS, build_methods, missing_peers, run_benchmark

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    spec = spec_from_args(args)
    peers = None if args.peers is None else (
        [] if args.peers.lower() == "none" else [s.strip() for s in args.peers.split(",") if s.strip()])
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    peers_dir = args.peers_dir or find_repo_path(DEFAULT_PEERS) or DEFAULT_PEERS
    missing = missing_peers(peers_dir, peers)
    if missing and not args.quiet:  # one line, however many: the files are not there at all
        print(f"rvmatte: note: peer models skipped, no ONNX file in {peers_dir}: "
              f"{', '.join(missing)} (--peers-dir DIR to point at them, --peers none for ours "
              "only)", file=sys.stderr)
    post = [] if args.post.strip().lower() == "none" else [
        p.strip() for p in args.post.split(",") if p.strip()]
    unknown = sorted(set(post) - set(POST_METHODS))
    if unknown:
        raise InputError(f"unknown --post stage {', '.join(unknown)}; choose from "
                         f"{', '.join(POST_METHODS)} or none")
    methods, notes = build_methods(spec, backends=backends, peers_dir=peers_dir,
                                   peers=peers, benchmark_ratio=args.downsample is None,
                                   post=post)
    if spec.weights is None:
        notes.append("our model ran with random weights (--weights none): numbers are meaningless")
    results = run_benchmark(args.benchmark, args.output, methods=methods, notes=notes,
                            resolutions=args.resolution, max_frames=args.max_frames,
                            save_predictions=args.save_predictions, overwrite=args.overwrite,
                            progress=_say(args))
    if args.json:
        print(json.dumps(results, indent=2))
    elif not args.quiet:
        print((Path(args.output) / "report.md").read_text())
    return 0
