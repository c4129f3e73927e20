"""``rvmatte convert``: matte a video, image folder/pattern, image, or a folder of videos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError

EPILOG = """examples:
  rvmatte convert in.mp4 -o out.mp4 --alpha alpha.mp4          # green composite + alpha
  rvmatte convert in.mp4 -o out.mov                             # ProRes 4444 with transparency
  rvmatte convert in.mp4 -o out.webm --background transparent   # VP9 with alpha
  rvmatte convert in.mp4 -o out.mp4 --background beach.jpg      # or #rrggbb, blur, video.mp4
  rvmatte convert in.mp4 --alpha frames/%06d.png --alpha-bits 16
  rvmatte convert clips/ -o matted/                             # batch: one output per video
  rvmatte convert long.mp4 -o out.mp4 --resume                  # continue a killed job
"""


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--variant", default="mobilenetv3", choices=["mobilenetv3", "resnet50"])
    g.add_argument("--weights", default="default",
                   help="'default' (bundled), a .pth checkpoint, or 'none' (random init, testing)")
    g.add_argument("--refiner", default=None, choices=["fast_guided_filter", "deep_guided_filter"])
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--dtype", default=None,
                   help="float32 | float16 | bfloat16 (default: float16 on CUDA, else float32)")
    g.add_argument("--backend", default="auto", choices=["auto", "fused", "onnxruntime", "torch",
                                                   "torch-fast", "compile", "cudagraph",
                                                   "onnxruntime-pipe"],
                   help="auto (default): the fastest path measured for the device and ratio "
                        "(docs/SPEED.md: on CPUs 'fused' -- ONNX Runtime plus rvmatte's compiled "
                        "full-resolution kernel -- below ratio 1, else ONNX Runtime; CUDA graphs "
                        "on NVIDIA GPUs); torch = plain eager PyTorch")
    g.add_argument("--downsample", default="auto", metavar="auto|R",
                   help="downsample ratio in (0, 1]; auto = longest side of the working image "
                        "at most 512 px")
    g.add_argument("--seq-chunk", type=int, default=None, metavar="N",
                   help="frames per model call (default 1 on CPU, 12 on GPU)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the model (default: PyTorch's choice; 1 helps on a machine "
                        "busy with other work)")


def set_threads(threads) -> None:
    """``--threads``; by default PyTorch's own choice (all cores). With OMP_WAIT_POLICY=PASSIVE
    (set by the CLI) idle model threads no longer spin against our decode/encode threads; on
    a quiet 2-core machine two model threads then beat one end to end (16.4 s vs 20.2 s for
    90 frames of 1080p, docs/SPEED.md). Pass ``--threads 1`` on a machine busy with other work."""
    from ..hardware import set_threads as set_model_threads

    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    set_model_threads(threads)  # torch's threads, now or when it loads (rvmatte.hardware)


def model_kwargs(args) -> dict:
    weights = None if str(args.weights).lower() == "none" else args.weights
    return dict(variant=args.variant, weights=weights, refiner=args.refiner,
                device=None if args.device == "auto" else args.device, dtype=args.dtype,
                backend=args.backend, downsample_ratio=args.downsample)


def register(subparsers) -> None:
    from ..io.writers import ENCODER_CHOICES, PRESETS

    p = subparsers.add_parser(
        "convert", help="matte a video (or images, or a folder of videos)",
        description="Matte people in a video: composite, alpha and/or foreground outputs in one "
                    "pass, audio and timing preserved.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="video file, image folder, %%06d.png pattern, image, or a "
                                 "folder of videos (batch)")
    o = p.add_argument_group("outputs (any combination; the extension picks the format)")
    o.add_argument("-o", "--output", help="composite: .mp4/.mkv (H.264), .mov (ProRes 4444 + alpha), "
                                          ".webm (VP9 + alpha), folder or %%06d.png (PNG)")
    o.add_argument("--alpha", help="alpha matte output (video, folder or %%06d.png)")
    o.add_argument("--foreground", help="foreground output (with alpha where the format allows)")
    o.add_argument("--background", default=None,
                   help="colour name or #rrggbb, image, video, blur[:SIGMA], transparent "
                        "(default: transparent where the format stores alpha, else green)")
    o.add_argument("--codec", default=None, help="h264 | h265 | vp9 | prores | ffv1 | qtrle | png")
    o.add_argument("--quality", type=int, default=None,
                   help="CRF-like, lower is better (h264 default 18, h265 22, vp9 28)")
    o.add_argument("--alpha-bits", type=int, default=8, choices=[8, 16],
                   help="bit depth of PNG alpha output")
    o.add_argument("--preset", default=None, choices=PRESETS,
                   help="H.264/H.265 speed preset (default veryfast; medium encodes about 2x "
                        "slower for ~0.5 dB; ultrafast is faster, with larger files)")
    o.add_argument("--encoder", default="auto", choices=ENCODER_CHOICES,
                   help="H.264/H.265 encoder: auto (default) = NVENC when the model runs on an "
                        "NVIDIA GPU that has an encoder, else x264/x265; hardware = NVENC or fail")
    o.add_argument("--encode-workers", default="auto", metavar="N",
                   help="segments of each video output encoded at a time, each by its own "
                        "encoder (default auto: several on 8+ cores, or on 2+ with the model on "
                        "a GPU, else 1; more use more memory)")
    o.add_argument("--encoder-threads", default=None, metavar="N",
                   help="threads per encoder (default: the encoder's choice, or the cores "
                        "shared among several encoders)")
    o.add_argument("--encode-processes", action="store_true",
                   help="with several encode workers, encode each segment in a child process "
                        "instead of a thread (faster with x264 ultrafast on many-core GPU "
                        "machines; see docs/SPEED.md)")
    o.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    r = p.add_argument_group("range and job")
    r.add_argument("--start", default=None, help="seconds, [hh:]mm:ss, or frame number (150f)")
    r.add_argument("--end", default=None, help="seconds, [hh:]mm:ss, or frame number (300f)")
    r.add_argument("--resume", action="store_true",
                   help="continue a killed job from its checkpoint (<output>.rvmatte-resume/)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_model_args(p)
    p.set_defaults(func=run)


def _is_batch(path: Path) -> bool:
    from ..io.readers import list_videos

    return path.is_dir() and bool(list_videos(path))


def run(args) -> int:
    from ..inference.convert import convert_folder, convert_video

    set_threads(args.threads)
    if not (args.output or args.alpha or args.foreground):
        raise InputError("no output requested: give -o OUTPUT, --alpha and/or --foreground")
    common = dict(background=args.background, seq_chunk=args.seq_chunk, start=args.start,
                  end=args.end, codec=args.codec, quality=args.quality,
                  overwrite=args.overwrite, resume=args.resume, alpha_bits=args.alpha_bits,
                  preset=args.preset, encoder=args.encoder, encode_workers=args.encode_workers,
                  encoder_threads=args.encoder_threads, encode_processes=args.encode_processes,
                  **model_kwargs(args))
    inp = Path(args.input)
    if _is_batch(inp):
        def on_error(path, msg):
            print(f"rvmatte: error: {path.name}: {msg}", file=sys.stderr)

        def on_done(path, res):
            if not args.quiet and not args.json:
                print(f"{path.name}: {res.frames} frames -> {', '.join(res.outputs.values())}",
                      file=sys.stderr)

        batch = convert_folder(inp, args.output, alpha=args.alpha, foreground=args.foreground,
                               on_error=on_error, on_done=on_done,
                               progress=not (args.quiet or args.json), **common)
        if args.json:
            print(json.dumps({"results": {k: v.as_dict() for k, v in batch.results.items()},
                              "failed": batch.failed}, indent=2))
        elif not args.quiet:
            print(f"{len(batch.results)} converted, {len(batch.failed)} failed", file=sys.stderr)
        return 0 if batch.ok else 1
    res = convert_video(inp, args.output, alpha=args.alpha, foreground=args.foreground,
                        progress=not (args.quiet or args.json), **common)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    elif not args.quiet:
        extra = f", audio {res.audio}" if res.audio else ""
        print(f"{res.frames} frames in {res.seconds:.1f} s ({res.fps:.1f} fps{extra})",
              file=sys.stderr)
        for kind, path in res.outputs.items():
            enc = res.encoders.get(kind)
            print(f"  {kind}: {path}" + (f" ({enc})" if enc else ""), file=sys.stderr)
        for note in res.notes:
            print(f"  note: {note}", file=sys.stderr)
        if res.bottleneck:
            st = res.stages
            print(f"  busy: decode {st['decode_s']:.1f} s, model {st['model_s']:.1f} s, encode "
                  f"{st['encode_s']:.1f} s (the {res.bottleneck} stage set the pace)",
                  file=sys.stderr)
    return 0
