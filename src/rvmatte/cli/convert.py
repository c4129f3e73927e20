"""``rvmatte convert``: matte a video, image folder/pattern, image, or a folder of videos; several
videos, or one long video in parts, on a Ray cluster (``--cluster``, :mod:`rvmatte.cluster`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from .options import (add_model_options, add_output, add_post_options, add_quiet,
                      add_selection_options, add_task_resources, post_kwargs,
                      selection_from_args, set_threads,
                      spec_from_args)

__all__ = ["register", "run", "set_threads"]  # set_threads: benchmarks/convert_speed.py

EPILOG = """examples:
  rvmatte convert in.mp4 -o out.mp4 --alpha alpha.mp4          # green composite + alpha
  rvmatte convert in.mp4 -o out.mov                             # ProRes 4444 with transparency
  rvmatte convert in.mp4 -o out.webm --background transparent   # VP9 with alpha
  rvmatte convert in.mp4 -o out.mp4 --background beach.jpg      # or #rrggbb, blur, video.mp4
  rvmatte convert in.mp4 --alpha frames/%06d.png --alpha-bits 16
  rvmatte convert clips/ -o matted/                             # batch: one output per video
  rvmatte convert long.mp4 -o out.mp4 --resume                  # continue a killed job
  rvmatte convert a.mp4 b.mp4 clips/ -o matted/ --alpha matted/ --cluster auto --gpus-per-task 1
  rvmatte convert long.mp4 -o out.mp4 --cluster auto --split-seconds 60   # one video, in parts
"""


def register(subparsers) -> None:
    from ..io.writers import ENCODER_CHOICES, PRESETS

    p = subparsers.add_parser(
        "convert", help="matte a video (or images, or a folder of videos)",
        description="Matte people in a video: composite, alpha and/or foreground outputs in one "
                    "pass, audio and timing preserved.",
        epilog=EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file, image folder, %%06d.png pattern, image, or a folder of "
                        "videos (batch); several videos (or folders of them) make a batch too")
    o = p.add_argument_group("outputs (any combination; the extension picks the format)")
    add_output(o, help="composite: .mp4/.mkv (H.264), .mov (ProRes 4444 + alpha), .webm (VP9 + "
                       "alpha), folder or %%06d.png (PNG)")
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
    o.add_argument("--alpha-format", default=None, choices=["yuv420", "gray"],
                   help="H.264/H.265 alpha video stream: yuv420 (default, plays everywhere) "
                        "or gray (4:0:0: smaller, faster; not every player opens it)")
    o.add_argument("--preset", default=None, choices=PRESETS,
                   help="H.264/H.265 speed preset (default: veryfast; medium encodes about 2x "
                        "slower for ~0.5 dB; ultrafast is faster, with larger files)")
    o.add_argument("--encoder", default="auto", choices=ENCODER_CHOICES,
                   help="H.264/H.265 encoder: auto = NVENC when the model runs on an "
                        "NVIDIA GPU that has an encoder, else x264/x265; hardware = NVENC or fail")
    o.add_argument("--encode-workers", default="auto", metavar="N",
                   help="segments of each video output encoded at a time, each by its own "
                        "encoder (auto: several on 8+ cores, or on 2+ with the model on a GPU, "
                        "else 1; more use more memory)")
    o.add_argument("--encoder-threads", default=None, metavar="N",
                   help="threads per encoder (default: the encoder's choice, or the cores "
                        "shared among several encoders)")
    o.add_argument("--encode-processes", action="store_true",
                   help="with several encode workers, encode each segment in a child process "
                        "instead of a thread (faster with x264 ultrafast on many-core GPU "
                        "machines; see docs/SPEED.md)")
    o.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_post_options(p)
    r = p.add_argument_group("range and job")
    r.add_argument("--start", default=None, help="seconds, [hh:]mm:ss, or frame number (150f)")
    r.add_argument("--end", default=None, help="seconds, [hh:]mm:ss, or frame number (300f)")
    r.add_argument("--resume", action="store_true",
                   help="continue a killed job from its checkpoint (<output>.rvmatte-resume/)")
    r.add_argument("--strict", action="store_true",
                   help="fail when fewer frames decode than the container declares (a "
                        "truncated file); without it that is a warning")
    add_quiet(r)
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    _add_guidance_options(p)
    _add_cluster_options(p)
    add_model_options(p, seq_chunk=True)
    p.set_defaults(func=run)


def _add_guidance_options(p) -> None:
    g = p.add_argument_group(
        "guidance: who is matted, and a clean background plate (README: Choosing who is "
        "matted)")
    add_selection_options(g, frame_note="; a later frame costs a first pass over frames 0..N")
    g.add_argument("--background-plate", default=None, metavar="PATH",
                   help="an image (or short video, averaged) of the empty scene from the same "
                        "camera: cleaner foreground colours, posters/screens removed")


def _guidance(args) -> dict:
    """convert_video's guidance arguments from the flags (none when not used)."""
    out = {}
    sel = selection_from_args(args)
    if sel is not None:
        if getattr(args, "split", None) is not None or getattr(args, "split_seconds", None):
            raise InputError("person selection cannot be combined with --split/--split-seconds "
                             "(each part would pick its people anew on its own first frame)")
        out["select"] = sel
    if args.background_plate is not None:
        out["background_plate"] = args.background_plate
    return out


def _add_cluster_options(p) -> None:
    from ..cluster.split import DEFAULT_WARMUP

    c = p.add_argument_group(
        "several videos, a cluster (pip install 'rvmatte[cluster]'; docs/CLUSTER.md)",
        "With several inputs (or any of these options) -o/--alpha/--foreground are folders or "
        "{stem} templates (one input: also a file), a manifest is written, finished outputs "
        "are skipped and unfinished ones resumed.")
    c.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run each video as a Ray task: auto (the cluster this machine is part "
                        "of, or $RAY_ADDRESS), ray://HOST:PORT (Ray Client), HOST:PORT (a "
                        "head), or local (a Ray instance on this machine); without it, videos "
                        "are converted here one after another")
    add_task_resources(c)
    c.add_argument("--split", type=int, default=None, metavar="N",
                   help="convert each video in N parts on several workers, joined exactly")
    c.add_argument("--split-seconds", type=float, default=None, metavar="S",
                   help="convert each video in parts of S seconds on several workers")
    c.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="W",
                   help="frames each part mattes before its own from a zero state and drops "
                        "(the seam error falls as W grows: docs/CLUSTER.md)")
    c.add_argument("--manifest", default=None, metavar="PATH",
                   help="JSON Lines record of each video (default: rvmatte-manifest.jsonl in "
                        "the first output folder)")
    c.add_argument("--max-retries", type=int, default=3, metavar="N",
                   help="times a task runs again after its worker died (resuming)")


def _is_many(args) -> bool:
    """Several inputs, or any cluster option: the batch of :func:`rvmatte.cluster.convert_many`."""
    return (len(args.inputs) > 1 or args.cluster is not None or args.split is not None
            or args.split_seconds is not None or args.manifest is not None
            or args.actors is not None)


def _is_batch(path: Path) -> bool:
    from ..io.readers import list_videos

    return path.is_dir() and bool(list_videos(path))


def _say(args):
    """Progress lines on stderr, none with --quiet or --json."""
    quiet = args.quiet or args.json
    return lambda msg: None if quiet else print(msg, file=sys.stderr)


def _warn(res) -> None:
    """The result's warnings: always printed (also with --quiet), one line each."""
    for w in res.warnings:
        print(f"rvmatte: warning: {w}", file=sys.stderr)


def _summary(res) -> str:
    """``90 frames in 3.1 s (29.0 fps, audio copy)``; after a resume only this run's frames
    count: ``resumed at frame 40: 50 frames in ...``."""
    extra = f", audio {res.audio}" if res.audio else ""
    head = f"resumed at frame {res.resumed_from}: " if res.resumed_from else ""
    return (f"{head}{res.frames_this_run} frames in {res.seconds:.1f} s "
            f"({res.fps:.1f} fps{extra})")


def run(args) -> int:
    from ..inference.convert import convert_video

    spec = spec_from_args(args)
    if not (args.output or args.alpha or args.foreground):
        raise InputError("no output requested: give -o OUTPUT, --alpha and/or --foreground")
    common = dict(spec=spec, strict=args.strict, background=args.background,
                  seq_chunk=args.seq_chunk, start=args.start, end=args.end, codec=args.codec,
                  quality=args.quality, overwrite=args.overwrite, resume=args.resume,
                  alpha_bits=args.alpha_bits, alpha_format=args.alpha_format,
                  preset=args.preset, encoder=args.encoder,
                  encode_workers=args.encode_workers, encoder_threads=args.encoder_threads,
                  encode_processes=args.encode_processes,
                  progress=not (args.quiet or args.json), **_guidance(args),
                  **post_kwargs(args))
    say = _say(args)
    if _is_many(args):
        return _run_many(args, spec, common, say)
    inp = Path(args.inputs[0])
    if _is_batch(inp):
        return _run_batch(args, inp, common, say)
    res = convert_video(inp, args.output, alpha=args.alpha, foreground=args.foreground, **common)
    _warn(res)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
        return 0
    say(_summary(res))
    for kind, path in res.outputs.items():
        enc = res.encoders.get(kind)
        say(f"  {kind}: {path}" + (f" ({enc})" if enc else ""))
    for note in res.notes:
        say(f"  note: {note}")
    if res.bottleneck:
        st = res.stages
        finish = f"finish {st['finish_s']:.1f} s, " if st.get("finish_s") else ""
        say(f"  busy: decode {st['decode_s']:.1f} s, model {st['model_s']:.1f} s, {finish}"
            f"encode {st['encode_s']:.1f} s (the {res.bottleneck} stage set the pace)")
    return 0


def _run_batch(args, inp: Path, common: dict, say) -> int:
    from ..inference.convert import convert_folder

    def on_error(path, msg):
        print(f"rvmatte: error: {path.name}: {msg}", file=sys.stderr)

    def on_done(path, res):
        for w in res.warnings:
            print(f"rvmatte: warning: {path.name}: {w}", file=sys.stderr)
        say(f"{path.name}: {_summary(res)} -> {', '.join(map(str, res.outputs.values()))}")

    batch = convert_folder(inp, args.output, alpha=args.alpha, foreground=args.foreground,
                           on_error=on_error, on_done=on_done, **common)
    if args.json:
        print(json.dumps({"results": {k: v.as_dict() for k, v in batch.results.items()},
                          "failed": batch.failed}, indent=2))
    say(f"{len(batch.results)} converted, {len(batch.failed)} failed")
    return 0 if batch.ok else 1


def _manifest_path(args) -> Path:
    if args.manifest:
        return Path(args.manifest)
    first = next(t for t in (args.output, args.alpha, args.foreground) if t)
    folder = Path(first) if "{stem}" not in first else Path(first).parent
    if Path(first).suffix and not folder.is_dir() and "{stem}" not in first:
        folder = folder.parent  # one input written to a file: the manifest goes next to it
    return folder / "rvmatte-manifest.jsonl"


def _run_many(args, spec, common: dict, say) -> int:
    from ..cluster import convert_many, seam_note

    options = {k: v for k, v in common.items()
               if k not in ("spec", "overwrite", "resume", "progress")}
    if args.split is not None or args.split_seconds is not None:
        say(f"split: {seam_note(args.warmup)}")
    res = convert_many(args.inputs, args.output, alpha=args.alpha, foreground=args.foreground,
                       spec=spec, cluster=args.cluster, cpus_per_task=args.cpus_per_task,
                       gpus_per_task=args.gpus_per_task, split=args.split,
                       split_seconds=args.split_seconds, warmup=args.warmup,
                       manifest=_manifest_path(args), progress=common["progress"],
                       max_retries=args.max_retries, actors=args.actors,
                       overwrite=args.overwrite, **options)
    for r in res.records:
        name = Path(r["input"]).name
        if r["status"] == "failed":
            print(f"rvmatte: error: {name}: {r['error']}", file=sys.stderr)
            continue
        for w in r.get("warnings") or ():
            print(f"rvmatte: warning: {name}: {w}", file=sys.stderr)
        say(f"{name}: {r['status']}, {r['frames']} frames in {r['seconds']:.1f} s -> "
            f"{', '.join(r['outputs'].values())}")
    if args.json:
        print(json.dumps({"records": res.records, "manifest": res.manifest,
                          "seconds": round(res.seconds, 3)}, indent=2, default=str))
    counts = {s: sum(1 for r in res.records if r["status"] == s)
              for s in ("done", "skipped", "failed")}
    say(f"{counts['done']} converted, {counts['skipped']} skipped (already there), "
        f"{counts['failed']} failed; {res.frames} frames in {res.seconds:.1f} s "
        f"({res.fps:.1f} fps); manifest: {res.manifest}")
    return 0 if res.ok else 1
