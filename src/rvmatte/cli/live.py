"""``rvmatte live``: matte a camera, video file or stream in real time."""

from __future__ import annotations

import argparse
import sys

from .options import (add_model_options, add_output, add_post_options, add_quiet,
                      add_selection_options, post_kwargs, selection_from_args, spec_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="matte a camera, file or stream in real time",
                       description="Live matting: camera index, video file or stream URL in; "
                                   "a window, a virtual camera or a video file out. From a camera "
                                   "or stream, or to a window or virtual camera, the downsample "
                                   "ratio (--downsample is the starting one) is lowered when the "
                                   "model cannot keep up, and late frames are dropped; file to "
                                   "file every frame is written at the ratio asked for.")
    p.add_argument("--source", required=True,
                   help="camera index (0), video file, or stream URL (rtsp://, http://...)")
    add_output(p, default="window", metavar="window|virtualcam|FILE",
               help="window, virtualcam (needs pyvirtualcam), or FILE.mp4|.mkv|.mov|.webm")
    p.add_argument("--background", default=None,
                   help="as in convert: colour name or #rrggbb (default: green), image/video "
                        "path, blur[:SIGMA], transparent (.webm only)")
    p.add_argument("--target-fps", type=float, default=None,
                   help="rate to keep up with (default: the source's frame rate)")
    p.add_argument("--min-ratio", type=float, default=0.1,
                   help="lowest ratio to fall back to when slow")
    p.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=None,
                   help="lower the ratio when the model (its time alone, not the encoder's "
                        "or the window's) is slower than --target-fps; default: only from a "
                        "camera or stream, or to a window or virtual camera")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop after N frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_quiet(p)
    add_post_options(p)
    add_selection_options(p.add_argument_group("who is matted (from the selection frame on: "
                                               "everyone before it)"))
    # Frame by frame for latency: no --seq-chunk.
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..live import print_status, run_live

    stats = run_live(args.source, args.output, spec=spec_from_args(args),
                     background=args.background, target_fps=args.target_fps, adapt=args.adapt,
                     min_ratio=args.min_ratio, max_frames=args.max_frames,
                     overwrite=args.overwrite, status=None if args.quiet else print_status,
                     select=selection_from_args(args), **post_kwargs(args))
    if not args.quiet:
        print(f"\rlive: {stats.summary()}", file=sys.stderr)
    return 0
