#!/usr/bin/env python
"""Encoding ceiling: decode an H.264 clip and encode it into H.264 outputs through rvmatte's
segment encoders (``rvmatte.io.segments``), with no model at all -- the most frames per second
a conversion can reach on this machine's CPUs.

For each x264 preset it compares, side by side in one run (interleaved rounds, median):

* ``workers=1``: one encoder per output, x264 choosing its own threads (what ``convert_video``
  does below 8 cores), and
* ``workers=N``: N consecutive segments of each output encoded at a time, each by its own
  encoder with the cores shared among them (what ``encode_workers="auto"`` does on 8+ cores),

and prints FPS, the ratio to ``workers=1`` and the size of the output (segments start with a
key frame, so shorter segments cost a little size). Each output encodes the camera frame
itself (decoded 4:2:0 planes straight to the encoders, as the GPU path feeds them); a real
alpha matte is flatter and cheaper to encode, so a conversion's alpha stream costs less.

    python benchmarks/encode_speed.py                          # 1080p, 300 frames, 2 outputs
    python benchmarks/encode_speed.py --configs 1:auto,4:2,8:1 --presets ultrafast,veryfast

``--conversion`` measures instead what handing an RGB / gray / RGBA picture of ``--size`` to a
4:2:0 encoder costs per frame on one thread: libswscale's conversion (what ``encode()`` does
with an RGB frame, as rvmatte did) against :func:`rvmatte.io.yuv.image_to_yuv420` and the
frame made from its planes (what ``SegmentWriter`` does now), interleaved rounds, median::

    python benchmarks/encode_speed.py --conversion             # 1080p

``--avx512`` measures what opening x264 without its AVX-512 code (as rvmatte does:
:func:`rvmatte.io.writers.x264_cpu`) costs: ms per frame of one-thread libx264 encodes of the
same ``--size`` frames with and without it, per preset, interleaved rounds, median::

    python benchmarks/encode_speed.py --avx512 --presets ultrafast,veryfast
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from rvmatte.io.segments import SegmentedOutputs, plan_encoding
from rvmatte.io.writers import SegmentWriter, plan_output

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_talking_head_640x360.mp4"


def make_clip(path: Path, frames: int, size=(1920, 1080), rate: int = 30) -> Path:
    """The bundled talking-head sample, upscaled to ``size`` and played back and forth to
    ``frames`` frames (H.264 yuv420p, CRF 18, veryfast): an ordinary camera-like file."""
    import av

    with av.open(str(SAMPLE)) as c:
        src = [f.reformat(width=size[0], height=size[1], format="yuv420p",
                          interpolation="BICUBIC").to_ndarray() for f in c.decode(video=0)]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"preset": "veryfast", "crf": "18"}
        for i in range(frames):
            k = i % (2 * len(src) - 2)
            k = k if k < len(src) else 2 * len(src) - 2 - k   # ping-pong: no jump cuts
            f = av.VideoFrame.from_ndarray(src[k], format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def ceiling(clip: Path, tmp: Path, *, preset: str, outputs: int = 2, workers=1,
            threads=None, segment_frames=None, processes: bool = False) -> dict:
    """Decode ``clip`` and encode it ``outputs`` times through :class:`SegmentedOutputs`
    planned as ``convert_video`` plans them (``workers``/``threads`` as its
    ``encode_workers``/``encoder_threads``). Returns FPS, the plan and bytes written."""
    import av

    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        w, h, rate, tb = (s.codec_context.width, s.codec_context.height,
                          s.average_rate or Fraction(30), s.time_base)
    plan = plan_encoding(outputs, frame_bytes=int(outputs * 1.5 * w * h), rate=float(rate),
                         workers=workers, threads=threads, processes=processes)
    seg = segment_frames or max(1, int(round(plan.segment_seconds * float(rate))))
    kinds = [f"out{k}" for k in range(outputs)]
    spec = plan_output("composite", tmp / "x.mp4", codec="h264", transparent=False)
    spec = type(spec)(**{**spec.__dict__, "preset": preset})

    def args(kind, index, pts):
        return dict(spec=spec, path=tmp / f"{kind}_{index:07d}.mp4", width=w, height=h,
                    time_base=tb, rate=Fraction(rate), start_pts=pts, yuv=True,
                    threads=plan.threads)

    outs = SegmentedOutputs(kinds, lambda *a: SegmentWriter(**args(*a)), workers=plan.workers,
                            threaded=plan.threaded, bound=seg + 1 if plan.workers > 1 else 8,
                            writer_args=args if plan.processes else None,
                            frame_bytes=int(1.5 * w * h))
    paths, n = [], 0
    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        first = None
        for i, f in enumerate(c.decode(s)):
            arr = f.to_ndarray()
            first = f.pts if first is None else first
            for kind in kinds:
                outs.write(kind, i, f.pts - first, arr)
            n += 1
            if n % seg == 0:
                outs.boundary()
                paths += [p for done, _ in outs.completed() for p, _ in done.values()]
    outs.boundary()
    paths += [p for done, _ in outs.completed(block=True) for p, _ in done.values()]
    dt = time.perf_counter() - t0
    outs.shutdown(abort=False)
    size = sum(p.stat().st_size for p in paths)
    for p in paths:
        p.unlink()
    return {"preset": preset, "outputs": outputs, "workers": plan.workers, "threads": plan.threads,
            "threaded": plan.threaded, "processes": outs.processes, "segment_frames": seg,
            "frames": n, "seconds": dt,
            "fps": n / dt, "bytes": size}


def conversion_cost(size=(1920, 1080), rounds: int = 7, per_round: int = 20) -> list[dict]:
    """Milliseconds per frame of making the encoder's 4:2:0 frame from a uint8 picture of
    ``size``: ``libswscale`` (``VideoFrame.from_ndarray`` + ``reformat``, one thread, what
    ``encode()`` does) against ``rvmatte`` (``SegmentWriter``'s conversion), for RGB ->
    yuv420p, gray -> yuv420p and RGBA -> yuva420p. Interleaved rounds, median."""
    import av
    import numpy as np

    from rvmatte.io.writers import _yuv420_frame

    w, h = size
    with av.open(str(SAMPLE)) as c:  # a real picture, not a flat one
        rgba = next(c.decode(video=0)).reformat(width=w, height=h, format="rgba").to_ndarray()
    pictures = {"rgb24 -> yuv420p": (np.ascontiguousarray(rgba[..., :3]), "rgb24", "yuv420p"),
                "gray -> yuv420p": (np.ascontiguousarray(rgba[..., 1]), "gray", "yuv420p"),
                "rgba -> yuva420p": (rgba, "rgba", "yuva420p")}

    def swscale(image, fmt, target):
        return av.VideoFrame.from_ndarray(image, format=fmt).reformat(format=target, threads=1)

    ways = {"libswscale": swscale,
            "rvmatte": lambda image, fmt, target: _yuv420_frame(image, target)}
    for name, (image, fmt, target) in pictures.items():  # compile / warm up
        for way in ways.values():
            way(image, fmt, target)
    times: dict = {}
    for _ in range(rounds):
        for name, (image, fmt, target) in pictures.items():
            for way, fn in ways.items():
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn(image, fmt, target)
                times.setdefault((name, way), []).append((time.perf_counter() - t0) / per_round)
    rows = []
    for name in pictures:
        ms = {way: 1000 * statistics.median(times[(name, way)]) for way in ways}
        rows.append({"conversion": name, "size": f"{w}x{h}",
                     **{f"{k}_ms": v for k, v in ms.items()},
                     "ratio": ms["rvmatte"] / ms["libswscale"]})
    return rows


def avx512_cost(presets, size=(1920, 1080), frames: int = 30, rounds: int = 5) -> list[dict]:
    """Milliseconds per frame of a one-thread libx264 encode (CRF 18, no B-frames: a
    segment's settings) of ``frames`` frames of the sample at ``size``, with x264's own CPU
    choice and without AVX-512 (``asm=`` :func:`~rvmatte.io.writers.x264_cpu`). Interleaved
    rounds, median. Empty where x264 uses no AVX-512 here."""
    import av

    from rvmatte.io.writers import x264_cpu

    cpu = x264_cpu()
    if cpu is None:
        return []
    w, h = size
    with av.open(str(SAMPLE)) as c:
        planes = [f.reformat(width=w, height=h, format="yuv420p").to_ndarray()
                  for _, f in zip(range(frames), c.decode(video=0))]

    def encode(preset, params):
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
        cc.time_base, cc.framerate, cc.thread_count = Fraction(1, 30), Fraction(30), 1
        cc.options = {"crf": "18", "preset": preset, "bf": "0", **params}
        todo = [av.VideoFrame.from_ndarray(p, format="yuv420p") for p in planes]
        t0 = time.perf_counter()
        for i, f in enumerate(todo):
            f.pts = i
            cc.encode(f)
        cc.encode(None)
        return (time.perf_counter() - t0) / len(todo)

    ways = {"x264's choice": {}, "without AVX-512": {"x264-params": f"asm={cpu}"}}
    times: dict = {}
    for _ in range(rounds):
        for preset in presets:
            for way, params in ways.items():
                times.setdefault((preset, way), []).append(encode(preset, params))
    rows = []
    for preset in presets:
        ms = [1000 * statistics.median(times[(preset, way)]) for way in ways]
        rows.append({"preset": preset, "size": f"{w}x{h}", "auto_ms": ms[0],
                     "no_avx512_ms": ms[1], "ratio": ms[1] / ms[0]})
    return rows


def _where(row: dict) -> str:
    """Where a configuration's encoders ran."""
    return "processes" if row["processes"] else ("threads" if row["threaded"] else "inline")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, help="an H.264 clip (default: made from the sample)")
    ap.add_argument("--frames", type=int, default=300, help="frames of the generated clip")
    ap.add_argument("--size", default="1920x1080", help="size of the generated clip")
    ap.add_argument("--presets", default="ultrafast,veryfast")
    ap.add_argument("--outputs", type=int, default=2)
    ap.add_argument("--configs", default="1:auto,2:auto,2:auto:processes,4:auto",
                    help="comma list of WORKERS:THREADS[:processes] (auto: as convert_video "
                         "decides; several workers encode on threads, or in child processes "
                         "with ':processes'); the first is the baseline of the ratios")
    ap.add_argument("--segment-frames", type=int, default=None,
                    help="frames per segment (default: as convert_video: 10 s with one worker, "
                         "2 s with several)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--conversion", action="store_true",
                    help="measure the RGB -> 4:2:0 conversion per frame instead (docstring)")
    ap.add_argument("--avx512", action="store_true",
                    help="measure x264 with and without its AVX-512 code instead (docstring)")
    args = ap.parse_args(argv)
    if args.avx512:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        rows = avx512_cost(args.presets.split(","), size)
        print(f"{os.cpu_count()} CPUs; one-thread libx264, ms per {size[0]}x{size[1]} frame "
              f"(median)" if rows else "x264 uses no AVX-512 here: nothing to compare")
        for r in rows:
            print(f"{r['preset']:9} x264's choice {r['auto_ms']:6.1f}  without AVX-512 "
                  f"{r['no_avx512_ms']:6.1f}  ratio {r['ratio']:.3f}")
        if args.json:
            args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))
        return 0
    if args.conversion:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        rows = conversion_cost(size)
        print(f"{os.cpu_count()} CPUs; one thread, ms per {size[0]}x{size[1]} frame (median)")
        print(f"{'conversion':18} {'libswscale':>10} {'rvmatte':>8} {'ratio':>6}")
        for r in rows:
            print(f"{r['conversion']:18} {r['libswscale_ms']:10.2f} {r['rvmatte_ms']:8.2f} "
                  f"{r['ratio']:6.2f}")
        if args.json:
            args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="rvmatte-enc-"))
    clip = args.clip
    if clip is None:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        clip = make_clip(tmp / "clip.mp4", args.frames, size)
    configs = [tuple((c + ":threads").split(":")[:3]) for c in args.configs.split(",")]
    print(f"{os.cpu_count()} CPUs; clip {clip}", flush=True)
    times: dict = {}
    for r in range(args.rounds):
        for preset in args.presets.split(","):
            for workers, threads, where in configs:
                row = ceiling(clip, tmp, preset=preset, outputs=args.outputs, workers=workers,
                              threads=None if threads == "auto" else threads,
                              segment_frames=args.segment_frames,
                              processes=where == "processes")
                times.setdefault((preset, workers, threads, where), []).append(row)
                print(f"  round {r + 1}: {preset:9} workers {row['workers']} threads "
                      f"{row['threads'] or 'auto':>4} {_where(row):9}: {row['fps']:7.1f} FPS",
                      flush=True)
    rows = []
    print(f"\n{'preset':9} {'workers':>7} {'threads':>7} {'in':9} {'segment':>7} {'FPS':>8} "
          f"{'x workers=1':>11} {'MB':>7} {'size x':>7}")
    for preset in args.presets.split(","):
        base = None
        for workers, threads, where in configs:
            runs = times[(preset, workers, threads, where)]
            fps = statistics.median(r["fps"] for r in runs)
            row = {**runs[0], "fps": fps, "rounds_fps": [r["fps"] for r in runs]}
            base = base or row
            row["x_base"] = fps / base["fps"]
            row["size_x_base"] = row["bytes"] / base["bytes"]
            rows.append(row)
            print(f"{preset:9} {row['workers']:>7} {row['threads'] or 'auto':>7} {_where(row):9} "
                  f"{row['segment_frames']:>7} {fps:8.1f} {row['x_base']:11.2f} "
                  f"{row['bytes'] / 1e6:7.1f} {row['size_x_base']:7.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "clip": str(clip),
                                         "rows": rows}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
