"""``rvmatte demo``: matte the bundled sample clip with the bundled weights."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from .options import add_model_options, add_output, add_quiet, spec_from_args

SAMPLE = "sample_talking_head_640x360.mp4"


def find_sample() -> Path:
    """The sample clip shipped in the package (``rvmatte/assets``; ``examples/`` of the
    checkout holds the same file), so the demo runs from a pip install."""
    from importlib import resources

    path = Path(str(resources.files("rvmatte") / "assets" / SAMPLE))
    if not path.is_file():
        raise InputError(f"sample clip {path} is missing from this installation; reinstall "
                         "rvmatte or pass --input VIDEO")
    return path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="matte the bundled sample clip",
                              description="Matte the bundled sample clip with the bundled weights "
                                          "and write a green composite, an alpha video and a "
                                          "transparent WebM.")
    add_output(p, default="demo_output", metavar="DIR", aliases=("--output-dir",),
               help="folder for the results")
    p.add_argument("--input", default=None, help="another video instead of the sample clip")
    add_quiet(p)
    add_model_options(p, seq_chunk=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference.convert import convert_video

    spec = spec_from_args(args)
    src = Path(args.input) if args.input else find_sample()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    targets = {"composite": out / "composite.mp4", "alpha": out / "alpha.mp4",
               "transparent": out / "transparent.webm"}
    if not args.quiet:
        print(f"rvmatte demo: matting {src} on {spec.device_type()} ...", file=sys.stderr)
    # One pass: green composite (with the clip's audio), alpha, and the foreground with
    # its alpha as VP9 WebM (a transparent cut-out).
    r = convert_video(src, targets["composite"], alpha=targets["alpha"],
                      foreground=targets["transparent"], background="green", spec=spec,
                      seq_chunk=args.seq_chunk, overwrite=True, progress=not args.quiet)
    for w in r.warnings:
        print(f"rvmatte: warning: {w}", file=sys.stderr)
    print(f"rvmatte demo: {r.frames} frames at {r.fps:.1f} fps (downsample ratio "
          f"{r.downsample_ratio:.2f}), audio: {r.audio or 'none'}")
    for name, path in targets.items():
        print(f"  {name:12s} {path}")
    print("  (composite.mp4: person over green with the clip's audio; alpha.mp4: the matte; "
          "transparent.webm: VP9 with alpha, open it in a browser or editor)")
    return 0
