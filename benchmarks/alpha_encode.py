#!/usr/bin/env python
"""The alpha stream and the encoders' threads, side by side in one run.

Section ``streams`` -- what one H.264/H.265 alpha stream costs, per way of encoding it. A real
matte is made first: a real clip upscaled to 1920x1080 (``--input``, default the bundled
talking-head sample) converted by rvmatte at ratio 0.25 into a lossless FFV1 alpha, read back
as uint8. Each setting then encodes those frames through rvmatte's own
:class:`~rvmatte.io.writers.SegmentWriter` (one encoder thread, so that CPU time is the
encoder's work; the pipeline feeds a 4:2:0 stream Y = alpha in limited range, a gray stream
the alpha itself), in alternating rounds, and prints CPU and wall milliseconds per frame
(median and spread), KiB per frame, and what PyAV decodes: frames, size, profile, the SPS's
``chroma_format_idc`` (FFmpeg decodes 4:0:0 H.264 as yuvj420p with flat chroma, so its pixel
format does not tell) and max / mean / 99.99th percentile |dalpha| against the uint8 alpha.
``--browser`` also plays each stream's first frame in headless Chromium (``/usr/bin/chromium``
through Playwright) and compares it the same way.

Section ``encoders`` -- the composite (the clip's own 4:2:0 frames) and the alpha encoded
together in this process as ``convert_video`` encodes them on a small machine, per encoder
thread setting (``ENCODERS``: x264's threads per encoder, sliced or frame threads, lookahead
threads, the two outputs on their own threads): process CPU and wall milliseconds per frame.
PyAV opens encoders with ``thread_type`` SLICE, so x264 with its default thread count runs one
sliced thread per CPU; ``"thread_type": "frame"`` gives x264's frame threads.

Section ``convert`` -- whole processes, file to file: the 1080p clip -> an H.264 composite over
green + an H.264 alpha (``.mp4``), ratio 0.25, one fresh ``python`` process per run, the
settings in alternating rounds; wall seconds, FPS, the process's CPU seconds and the busy
seconds of each pipeline stage (``ConversionResult.stages``). Settings that
``convert_video`` does not take as arguments (the alpha stream's form and preset, x264 thread
parameters, outputs on their own threads) are set in the child by patching rvmatte's
defaults: see ``CHILD``.

    python benchmarks/alpha_encode.py                                   # all sections
    python benchmarks/alpha_encode.py --sections streams --browser
    python benchmarks/alpha_encode.py --sections convert --settings default,threads1 --rounds 5
    python benchmarks/alpha_encode.py --input full_body_man_juggling_ball_1280x720.mp4

The machine is named in the output (CPUs, load average at the start and end): on a shared
machine compare settings only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_talking_head_640x360.mp4"
SIZE = (1920, 1080)

# streams: name -> (codec, alpha_format, the x264/x265 preset the alpha stream is encoded with)
STREAMS = {
    "h264 yuv420 veryfast (before)": ("h264", "yuv420", "veryfast"),
    "h264 yuv420 superfast": ("h264", "yuv420", "superfast"),
    "h264 yuv420 ultrafast (default)": ("h264", "yuv420", "ultrafast"),
    "h264 gray veryfast": ("h264", "gray", "veryfast"),
    "h264 gray ultrafast (alpha_format gray)": ("h264", "gray", "ultrafast"),
    "h265 yuv420 veryfast (default)": ("h265", "yuv420", "veryfast"),
    "h265 gray veryfast": ("h265", "gray", "veryfast"),
}
# convert: name -> settings for CHILD (encoder_threads: convert_video's; the rest patched)
SETTINGS = {
    "before": {"alpha_steps": 0},
    "default": {},
    "gray": {"alpha_format": "gray"},
    "threads1": {"encoder_threads": 1},
    "threads1-outputs-threaded": {"encoder_threads": 1, "threaded": True},
    "frame-threads": {"options": {"thread_type": "frame"}},
    "frame-threads2": {"encoder_threads": 2, "options": {"thread_type": "frame"}},
    "lookahead1": {"options": {"x264-params": "lookahead-threads=1"}},
}


# ---- the input and its real matte ----------------------------------------------------------

def make_clip(source: Path, path: Path, frames: int) -> Path:
    """``source`` upscaled to 1920x1080 (bicubic), played back and forth to ``frames`` frames,
    H.264 CRF 18 veryfast at the source's rate: an ordinary camera-like 1080p file."""
    import av

    with av.open(str(source)) as c:
        rate = c.streams.video[0].average_rate or Fraction(30)
        src = [f.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p",
                          interpolation="BICUBIC").to_ndarray()
               for _, f in zip(range(frames), c.decode(video=0))]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        s.options = {"preset": "veryfast", "crf": "18"}
        for i in range(frames):
            k = i % max(1, 2 * len(src) - 2)
            k = k if k < len(src) else 2 * len(src) - 2 - k   # ping-pong: no jump cuts
            f = av.VideoFrame.from_ndarray(src[k], format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def real_alpha(clip: Path, work: Path) -> np.ndarray:
    """The clip's matte as rvmatte makes it (ratio 0.25, lossless FFV1), uint8 (T, H, W)."""
    import av

    from rvmatte import convert_video

    path = work / "alpha_ffv1.mkv"
    if not path.exists():
        convert_video(str(clip), alpha=str(path), codec="ffv1", downsample_ratio=0.25)
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


# ---- section streams -----------------------------------------------------------------------

def stream_spec(name: str, path: Path):
    """The alpha output's spec whose stream is encoded as ``STREAMS[name]`` says (the user
    preset that gives that stream preset under rvmatte's rule)."""
    import dataclasses

    from rvmatte.io.writers import PRESETS, plan_output

    codec, fmt, want = STREAMS[name]
    spec = plan_output("alpha", path, codec=codec, transparent=None, alpha_format=fmt)
    for preset in PRESETS:
        spec = dataclasses.replace(spec, preset=preset)
        if spec.encode_preset == want:
            return spec
    raise SystemExit(f"{name}: no preset gives an alpha stream at {want}")


def encode_stream(name: str, alpha: np.ndarray, path: Path) -> dict:
    """Encode ``alpha`` as the pipeline feeds the stream; CPU / wall ms per frame, bytes."""
    from rvmatte.io.writers import SegmentWriter, pix_fmt_for

    spec = stream_spec(name, path)
    t, h, w = alpha.shape
    yuv = pix_fmt_for(spec, w, h) == "yuv420p"
    if yuv:  # what the fused kernel writes: Y = alpha in limited range, U = V = 128
        y = (alpha.astype(np.float32) * (219 / 255) + 16.5).astype(np.uint8)
        frames = np.concatenate([y, np.full((t, h // 2, w), 128, np.uint8)], axis=1)
    else:
        frames = alpha
    writer = SegmentWriter(spec, path, w, h, Fraction(1, 30), Fraction(30), 0, yuv=yuv,
                           threads=1)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(t):
        writer.write(frames[i], i)
    writer.close()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return {"cpu_ms": 1e3 * cpu / t, "wall_ms": 1e3 * wall / t, "bytes": path.stat().st_size,
            "preset": spec.encode_preset, "pix_fmt": writer.stream.pix_fmt}


def sps_chroma_format(path: Path) -> tuple:
    """``(profile_idc, chroma_format_idc)`` of an H.264 stream's first SPS (avcC), or
    ``(None, None)`` for another codec."""
    import av

    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        if cc.name != "h264" or not cc.extradata:
            return None, None
        ed = bytes(cc.extradata)
    sps, rbsp, zeros = ed[8:8 + int.from_bytes(ed[6:8], "big")], bytearray(), 0
    for b in sps[1:]:
        if zeros >= 2 and b == 3:   # emulation prevention byte
            zeros = 0
            continue
        rbsp.append(b)
        zeros = zeros + 1 if b == 0 else 0
    bits, pos = "".join(f"{b:08b}" for b in rbsp), 24

    def ue() -> int:
        nonlocal pos
        n = 0
        while bits[pos] == "0":
            n, pos = n + 1, pos + 1
        value = (1 << n) - 1 + int(bits[pos + 1:pos + 1 + n] or "0", 2)
        pos += 1 + n
        return value

    ue()  # seq_parameter_set_id
    high = rbsp[0] in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)
    return rbsp[0], (ue() if high else 1)


def error_stats(decoded: np.ndarray, alpha: np.ndarray) -> dict:
    d = np.abs(decoded.astype(np.int16) - alpha.astype(np.int16))
    return {"max": int(d.max()), "mean": float(d.mean()),
            "p9999": float(np.percentile(d, 99.99))}


def pyav_check(path: Path, alpha: np.ndarray) -> dict:
    """What PyAV decodes of ``path``: frames, size, profile, chroma format, |dalpha|."""
    import av

    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        profile, decoded = cc.profile, [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    got = np.stack(decoded)
    out = {"frames": len(got), "size": f"{got.shape[2]}x{got.shape[1]}", "profile": profile,
           "chroma_format_idc": sps_chroma_format(path)[1]}
    if got.shape == alpha.shape:
        out.update(error_stats(got, alpha))
    return out


BROWSER_JS = """async (url) => {
  const v = document.createElement('video'); v.muted = true; v.preload = 'auto';
  document.body.appendChild(v);
  const r = await new Promise(res => {
    const t = setTimeout(() => res({ok: false, why: 'timeout'}), 15000);
    v.onerror = () => { clearTimeout(t); res({ok: false, why: (v.error && v.error.message) || 'error'}); };
    v.onloadeddata = () => { clearTimeout(t); res({ok: true}); };
    v.src = url;
  });
  if (!r.ok) return r;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data, red = new Uint8Array(c.width * c.height);
  for (let i = 0; i < red.length; i++) red[i] = d[4 * i];
  return {ok: true, w: v.videoWidth, h: v.videoHeight, red: Array.from(red).join(',')};
}"""


def browser_first_frames(paths: list, chromium: str = "/usr/bin/chromium") -> dict:
    """Each file's first frame as headless Chromium shows it in a <video> (red channel,
    uint8 (H, W)), or the reason it does not play. Files are served over local HTTP."""
    import functools
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    root = Path(paths[0]).parent
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    out = {}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium,
                                  args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page()
            base = f"http://127.0.0.1:{srv.server_address[1]}/"
            page.goto(base)
            for path in paths:
                r = page.evaluate(BROWSER_JS, base + Path(path).name)
                out[str(path)] = (np.array([int(v) for v in r["red"].split(",")], np.uint8)
                                  .reshape(r["h"], r["w"]) if r["ok"] else r["why"])
            b.close()
    finally:
        srv.shutdown()
    return out


def section_streams(alpha: np.ndarray, work: Path, names: list, rounds: int,
                    browser: bool) -> list:
    runs: dict = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            path = work / f"stream_{_slug(name)}.mp4"
            runs[name].append(encode_stream(name, alpha, path))
    rows = []
    for name in names:
        path = work / f"stream_{_slug(name)}.mp4"
        cpu, wall = [x["cpu_ms"] for x in runs[name]], [x["wall_ms"] for x in runs[name]]
        rows.append({"stream": name, **runs[name][0], "cpu_ms": statistics.median(cpu),
                     "cpu_ms_range": [min(cpu), max(cpu)], "wall_ms": statistics.median(wall),
                     "wall_ms_range": [min(wall), max(wall)], "kib_per_frame":
                     runs[name][0]["bytes"] / 1024 / len(alpha), "pyav": pyav_check(path, alpha),
                     "path": str(path)})
    if browser:
        shown = browser_first_frames([row["path"] for row in rows])
        for row in rows:
            got = shown[row["path"]]
            row["chromium"] = (error_stats(got, alpha[0]) if isinstance(got, np.ndarray)
                               and got.shape == alpha[0].shape else {"fails": str(got)})
    return rows


def _slug(name: str) -> str:
    """A file name for a stream's name."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.split(" (")[0])


def print_streams(rows: list, frames: int) -> None:
    print(f"\nalpha streams, 1920x1080, {frames} frames of a real matte, CRF default, "
          "1 encoder thread (median [min-max] over the rounds)")
    print(f"{'stream':42} {'preset':9} {'CPU ms/f':>17} {'wall ms/f':>9} {'KiB/f':>6} "
          f"{'profile':>21} {'cfi':>3} {'max|d|':>6} {'mean':>6} {'p99.99':>6}  chromium")
    for r in rows:
        p = r["pyav"]
        c = r.get("chromium")
        cr = ("-" if c is None else c.get("fails") or f"plays, first frame max|d| {c['max']}")
        print(f"{r['stream']:42} {r['preset']:9} {r['cpu_ms']:6.1f} "
              f"[{r['cpu_ms_range'][0]:4.1f}-{r['cpu_ms_range'][1]:4.1f}] {r['wall_ms']:9.1f} "
              f"{r['kib_per_frame']:6.1f} {p['profile']:>21} {'-' if p['chroma_format_idc'] is None else p['chroma_format_idc']:>3} "
              f"{p.get('max', '?'):>6} {p.get('mean', 0):6.3f} {p.get('p9999', 0):6.1f}  {cr}",
              flush=True)


# ---- section encoders ----------------------------------------------------------------------

# encoders: name -> (encoder_threads, extra libavcodec options of the x264 encoders, outputs
# on their own threads). PyAV opens encoders with thread_type SLICE: x264 with N > 1 threads
# (auto: one per CPU) then cuts each frame into N slices; "thread_type": "frame" gives x264's
# frame threads instead (auto: 1.5 per CPU).
ENCODERS = {
    "auto: 2 sliced (before)": (None, {}, False),
    "1 thread": (1, {}, False),
    "1 thread + outputs threaded": (1, {}, True),
    "frame threads auto (3)": (None, {"thread_type": "frame"}, False),
    "2 frame threads": (2, {"thread_type": "frame"}, False),
    "2 sliced + 1 lookahead": (None, {"x264-params": "lookahead-threads=1"}, False),
}


def encode_both(clip_frames: np.ndarray, alpha: np.ndarray, work: Path, name: str) -> dict:
    """The composite (the clip's own 4:2:0 frames, as the GPU path feeds them) and the alpha
    (4:2:0 planes as the fused kernel writes them) encoded at once, as convert_video does with
    the encoder setting ``name``; process CPU and wall ms per frame."""
    from rvmatte.io import writers
    from rvmatte.io.segments import SegmentedOutputs

    threads, extra, threaded = ENCODERS[name]
    t, h, w = alpha.shape
    specs = {"composite": plan_output_spec("composite", work / "enc_comp.mp4"),
             "alpha": plan_output_spec("alpha", work / "enc_alpha.mp4")}
    base = writers.encoder_options

    def options(spec):
        o = base(spec)
        return {**o, **extra} if spec.encoder_name == "libx264" else o

    def make(kind, index, pts):
        return writers.SegmentWriter(specs[kind], work / f"enc_{kind}.mp4", w, h,
                                     Fraction(1, 30), Fraction(30), pts, yuv=True,
                                     threads=threads)

    y = (alpha.astype(np.float32) * (219 / 255) + 16.5).astype(np.uint8)
    alpha_yuv = np.concatenate([y, np.full((t, h // 2, w), 128, np.uint8)], axis=1)
    writers.encoder_options = options
    try:
        outs = SegmentedOutputs(list(specs), make, threaded=threaded, bound=2)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(t):
            outs.write("composite", i, i, clip_frames[i])
            outs.write("alpha", i, i, alpha_yuv[i])
        outs.boundary()
        list(outs.completed(block=True))
        outs.shutdown(abort=False)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        writers.encoder_options = base
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return {"cpu_ms": 1e3 * cpu / t, "wall_ms": 1e3 * wall / t,
            "bytes": sum((work / f"enc_{k}.mp4").stat().st_size for k in specs)}


def plan_output_spec(kind: str, path: Path):
    from rvmatte.io.writers import plan_output

    return plan_output(kind, path, codec="h264", transparent=False if kind != "alpha" else None)


def clip_yuv(clip: Path, frames: int) -> np.ndarray:
    import av

    with av.open(str(clip)) as c:
        return np.stack([f.to_ndarray(format="yuv420p")
                         for _, f in zip(range(frames), c.decode(video=0))])


def section_encoders(clip: Path, alpha: np.ndarray, work: Path, names: list,
                     rounds: int) -> list:
    frames = clip_yuv(clip, len(alpha))
    runs: dict = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            runs[name].append(encode_both(frames, alpha, work, name))
    rows = []
    for name in names:
        cpu, wall = [x["cpu_ms"] for x in runs[name]], [x["wall_ms"] for x in runs[name]]
        rows.append({"encoders": name, "cpu_ms": statistics.median(cpu), "cpu_ms_range":
                     [min(cpu), max(cpu)], "wall_ms": statistics.median(wall),
                     "wall_ms_range": [min(wall), max(wall)], "bytes": runs[name][0]["bytes"]})
    return rows


def print_encoders(rows: list, frames: int) -> None:
    print(f"\nencoders only: 1080p composite (the clip) + alpha, H.264 CRF 18, {frames} frames, "
          "in this process (median [min-max] over the rounds)")
    print(f"{'encoder threads':36} {'CPU ms/f':>19} {'wall ms/f':>19} {'MB':>6}")
    for r in rows:
        print(f"{r['encoders']:36} {r['cpu_ms']:6.1f} [{r['cpu_ms_range'][0]:5.1f}-"
              f"{r['cpu_ms_range'][1]:5.1f}] {r['wall_ms']:6.1f} [{r['wall_ms_range'][0]:5.1f}-"
              f"{r['wall_ms_range'][1]:5.1f}] {r['bytes'] / 1e6:6.2f}", flush=True)


# ---- section convert -----------------------------------------------------------------------

CHILD = r"""
import json, sys, time, dataclasses, functools
t0 = time.perf_counter()
cfg = json.loads(sys.argv[1])
from rvmatte.io import writers, segments
from rvmatte.inference import plan as plan_mod
if "alpha_steps" in cfg:
    writers.ALPHA_PRESET_STEPS = cfg["alpha_steps"]
if "alpha_format" in cfg:
    _po = plan_mod.plan_output
    plan_mod.plan_output = lambda kind, path, **kw: _po(kind, path, alpha_format=cfg["alpha_format"], **kw)
if "options" in cfg:
    _eo = writers.encoder_options
    def encoder_options(spec):
        o = _eo(spec)
        if spec.encoder_name == "libx264":
            o.update(cfg["options"])
        return o
    writers.encoder_options = encoder_options
if cfg.get("threaded"):
    _pe = plan_mod.plan_encoding
    plan_mod.plan_encoding = lambda *a, **k: dataclasses.replace(_pe(*a, **k), threaded=True)
from rvmatte import convert_video
r = convert_video(cfg["clip"], cfg["out"], alpha=cfg["alpha"], downsample_ratio=0.25,
                  overwrite=True, encoder_threads=cfg.get("encoder_threads"))
print(json.dumps({"frames": r.frames, "stages": r.stages, "encoding": r.encoding,
                  "in_process_s": time.perf_counter() - t0}))
"""


def convert_once(name: str, clip: Path, work: Path) -> dict:
    cfg = {**SETTINGS[name], "clip": str(clip), "out": str(work / f"comp_{name}.mp4"),
           "alpha": str(work / f"alpha_{name}.mp4")}
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                       text=True, cwd=work)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out.update(wall_s=wall, cpu_s=r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
               fps=out["frames"] / wall,
               comp_bytes=Path(cfg["out"]).stat().st_size,
               alpha_bytes=Path(cfg["alpha"]).stat().st_size)
    return out


def section_convert(clip: Path, work: Path, names: list, rounds: int) -> list:
    runs: dict = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate the order
        for name in order:
            row = convert_once(name, clip, work)
            runs[name].append(row)
            print(f"  round {r + 1} {name:26} {row['wall_s']:6.1f} s  {row['fps']:5.2f} FPS  "
                  f"cpu {row['cpu_s']:6.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in names:
        rs = runs[name]
        fps = [x["fps"] for x in rs]
        st = {k: statistics.median(x["stages"][k] for x in rs) for k in rs[0]["stages"]}
        rows.append({"setting": name, "settings": SETTINGS[name], "fps": statistics.median(fps),
                     "fps_range": [min(fps), max(fps)], "wall_s": statistics.median(
                         x["wall_s"] for x in rs), "cpu_s": statistics.median(
                         x["cpu_s"] for x in rs), "stages": st, "encoding": rs[0]["encoding"],
                     "comp_bytes": rs[0]["comp_bytes"], "alpha_bytes": rs[0]["alpha_bytes"],
                     "frames": rs[0]["frames"], "rounds_fps": fps})
    return rows


def print_convert(rows: list) -> None:
    base = rows[0]
    print(f"\nwhole processes, 1080p -> composite + alpha (.mp4), ratio 0.25 "
          f"(median [min-max] over the rounds; x = FPS / {base['setting']}'s)")
    print(f"{'setting':26} {'FPS':>5} {'[range]':>13} {'x':>5} {'wall s':>7} {'CPU s':>6} "
          f"{'decode':>6} {'model':>6} {'encode':>6} {'enc wait':>8} {'comp MB':>7} {'alpha MB':>8}")
    for r in rows:
        s = r["stages"]
        print(f"{r['setting']:26} {r['fps']:5.2f} [{r['fps_range'][0]:5.2f}-{r['fps_range'][1]:5.2f}] "
              f"{r['fps'] / base['fps']:5.2f} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} "
              f"{s.get('decode_s', 0):6.1f} {s.get('model_s', 0):6.1f} {s.get('encode_s', 0):6.1f} "
              f"{s.get('encode_waited_for_input_s', 0):8.1f} {r['comp_bytes'] / 1e6:7.2f} "
              f"{r['alpha_bytes'] / 1e6:8.2f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=SAMPLE, help="a real clip (upscaled to 1080p)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sections", default="streams,encoders,convert")
    ap.add_argument("--streams", default=",".join(STREAMS), help="comma list of: " + ", ".join(STREAMS))
    ap.add_argument("--encoders", default=",".join(ENCODERS),
                    help="comma list of: " + ", ".join(ENCODERS))
    ap.add_argument("--settings", default="before,default,gray,threads1,frame-threads",
                    help="comma list of: " + ", ".join(SETTINGS))
    ap.add_argument("--browser", action="store_true", help="also play each stream in Chromium")
    ap.add_argument("--work", type=Path, help="work folder (kept; default: a temporary one)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="rvmatte-alpha-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "clip_1080p.mp4"
    if not clip.exists():
        make_clip(args.input, clip, args.frames)
    else:
        print(f"reusing {clip} (and its matte) from an earlier run")
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; input {args.input}; work {work}",
          flush=True)
    result: dict = {"cpus": os.cpu_count(), "input": str(args.input), "frames": args.frames}
    sections = args.sections.split(",")
    if "streams" in sections or "encoders" in sections:
        alpha = real_alpha(clip, work)
    if "streams" in sections:
        rows = section_streams(alpha, work, args.streams.split(","), args.rounds, args.browser)
        print_streams(rows, len(alpha))
        result["streams"] = rows
    if "encoders" in sections:
        rows = section_encoders(clip, alpha, work, args.encoders.split(","), args.rounds)
        print_encoders(rows, len(alpha))
        result["encoders"] = rows
    if "convert" in sections:
        rows = section_convert(clip, work, args.settings.split(","), args.rounds)
        print_convert(rows)
        result["convert"] = rows
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
