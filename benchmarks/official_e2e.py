"""End to end, whole processes: the official RVM ``convert_video`` against ``rvmatte convert``.

What it measures
----------------
The job of issue 7: a 1080p H.264 clip -> an H.264 composite over green + an H.264 alpha
video, downsample ratio 0.25, on the CPU, fp32, MobileNetV3 with the Fast Guided Filter and the
same weights on both sides. Each run is a fresh process timed from start to exit (interpreter
start-up, imports, weight loading, decode, model, encode, mux included), in ONE session,
round-robin (the order rotates every round) so that both sides see the same machine state.
For each round it prints wall seconds, FPS (frames / wall), CPU seconds and peak RSS of the
process, and the ratio official-wall / rvmatte-wall (how many times faster rvmatte is); then
the median over the rounds. After each run both outputs are opened with PyAV: a run whose
outputs are missing, not H.264, the wrong size or short of frames counts as failed.

* official -- ``python -c`` in the official repo's interpreter, exactly what its README shows::

      model = MattingNetwork('mobilenetv3', 'fast_guided_filter').eval()
      model.load_state_dict(torch.load('rvm_mobilenetv3_fgf.pth'))
      convert_video(model, input_source=clip, output_type='video',
                    output_composition='comp.mp4', output_alpha='pha.mp4',
                    downsample_ratio=0.25, seq_chunk=S, num_workers=0)

  (device cpu, fp32, progress bar on). ``--official-variants`` picks the configurations, so
  that we compare against the official's best: ``1`` (its default seq_chunk), ``12`` (the
  README's recommendation, meant for GPUs), a ``-passive`` suffix runs it with
  ``OMP_WAIT_POLICY=PASSIVE`` and ``torch.set_num_threads(<cores>)`` (the setting rvmatte's CLI
  makes for itself), a ``-jit`` suffix scripts and freezes the model as the official
  ``inference.py`` CLI does (``Converter``; the CLI itself cannot load Fast-Guided-Filter
  weights: it always builds the Deep Guided Filter). The plain variants get the user's
  environment with ``OMP_WAIT_POLICY`` removed.
  The weights are rvmatte's bundled ones (the official MobileNetV3 converted from its TF.js
  release), written as a plain official-format state dict into the work directory; they load
  into the official model with ``strict=True``.
* rvmatte -- ``rvmatte convert clip.mp4 -o comp.mp4 --alpha pha.mp4 --downsample 0.25``
  (default backend ``auto``, default threads, progress bar on). rvmatte caches the exported
  ONNX model and any backend timing trial (``RVMATTE_CACHE_DIR``); by default this benchmark
  gives it a fresh cache directory, so the first rvmatte round includes that one-time work, as
  a first run on a new machine does; ``--rvmatte-cache user`` keeps the user's cache.
  rvmatte also copies the clip's audio into the composite and encodes with CRF 18; the official
  writer drops audio and encodes at 1 Mbit/s. So rvmatte does slightly more work per run.

The input clip: ``--clip PATH``, or generated into the work directory from the bundled
``examples/sample_talking_head_640x360.mp4`` (or ``--source``): upscaled to 1920x1080
(bicubic), played forwards and backwards to ``--frames`` frames (default 300 = 10 s at 30 fps),
H.264 (libx264 fast, CRF 20, yuv420p, constant frame rate) + its AAC audio looped. The stream
metadata (frame count, duration) is exact, which the official reader needs (below).

Getting the official side to run
--------------------------------
::

    git clone https://github.com/PeterL1n/RobustVideoMatting /tmp/rvm_official   # tested at 53d74c6
    python3.11 -m venv /tmp/venv-official
    /tmp/venv-official/bin/pip install torch==2.14.1 torchvision==0.29.1 tqdm "av==12.3.0" pims==0.7
    python benchmarks/official_e2e.py --official-repo /tmp/rvm_official \\
        --official-python /tmp/venv-official/bin/python --rounds 3

The official ``requirements_inference.txt`` pins av 8.0.3 / torch 1.9 / pims 0.5, none of which
has wheels for Python 3.11. Its ``VideoWriter`` calls ``add_stream('h264', rate='30.0000')``
(a string rate): PyAV 12.3.0 is the newest release that accepts that -- 13.x and later (our
18.x included) raise ``AttributeError: 'str' object has no attribute 'numerator'``. Hence a
separate interpreter with ``av==12.3.0``; ``pims`` 0.7 (the latest) reads with PyAV 12.3.
``pims.PyAVVideoReader`` takes the length of a clip from the stream's duration x average frame
rate and serves frames by timestamp, so a clip with inexact duration metadata or a variable
frame rate gets repeated / filled frames at its end; a constant-frame-rate clip with exact
metadata (the generated one) is read exactly, which is a fair input for both tools.
No patch or shim is applied to the official code: it runs from the given checkout, untouched.

Run it on a quiet machine: before every run it waits (``--idle-wait``, up to 300 s) until the
CPUs are at least 85 % idle, and it prints the load average before and after every run. With
its default environment (OpenMP threads that spin) the official run slows down 10x or more as
soon as another process takes a core: one round measured while another benchmark ran took
4 s per frame instead of 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT / "examples" / "sample_talking_head_640x360.mp4"

# The official run, as its README shows it (Python API). argv: repo, weights, clip, comp, pha,
# seq_chunk, jit (0/1), threads (0 = torch's default).
OFFICIAL_CODE = r"""
import sys
repo, weights, clip, comp, pha, seq_chunk, jit, threads = sys.argv[1:9]
sys.path.insert(0, repo)
import torch
if int(threads) > 0:
    torch.set_num_threads(int(threads))
from model import MattingNetwork
from inference import convert_video
model = MattingNetwork('mobilenetv3', 'fast_guided_filter').eval()
model.load_state_dict(torch.load(weights, map_location='cpu'))
kw = {}
if jit == '1':  # what the official inference.py CLI (Converter) does
    model = torch.jit.freeze(torch.jit.script(model))
    kw = dict(device='cpu', dtype=torch.float32)
convert_video(model, input_source=clip, output_type='video', output_composition=comp,
              output_alpha=pha, downsample_ratio=0.25, seq_chunk=int(seq_chunk),
              num_workers=0, **kw)
"""

VERSIONS_CODE = r"""
import json, sys
out = {'python': sys.version.split()[0]}
for m in ('torch', 'torchvision', 'av', 'pims', 'numpy', 'tqdm'):
    try:
        out[m] = __import__(m).__version__
    except Exception as e:
        out[m] = 'missing (%s)' % type(e).__name__
print(json.dumps(out))
"""


# ---- machine ------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_fraction(seconds: float = 3.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat; None where unavailable)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def wait_idle(limit: float, threshold: float = 0.15) -> str:
    """Wait (at most ``limit`` s) until other work leaves the CPUs at least 85 % idle."""
    t = time.perf_counter()
    while True:
        b = busy_fraction()
        if b is None or b < threshold or time.perf_counter() - t > limit:
            waited = time.perf_counter() - t
            if b is None:
                return "n/a"
            return f"{b:.0%} busy" + (f" (waited {waited:.0f} s)" if waited > 4 else "")


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---- clip ---------------------------------------------------------------------------------

def make_clip(source: Path, dst: Path, frames: int, size=(1920, 1080)) -> None:
    """``source`` upscaled to ``size``, ping-ponged to ``frames`` frames, H.264 + looped audio."""
    import av
    import numpy as np

    w, h = size
    with av.open(str(source)) as c:
        vs = c.streams.video[0]
        fps = vs.average_rate
        pics = [f.reformat(width=w, height=h, format="yuv420p", interpolation="BICUBIC").to_ndarray()
                for f in c.decode(vs)]
    pcm = None
    with av.open(str(source)) as c:
        if c.streams.audio:
            chunks, rate, layout = [], None, None
            for f in c.decode(audio=0):
                f = f.reformat(format="fltp") if f.format.name != "fltp" else f
                rate, layout = f.sample_rate, f.layout.name
                chunks.append(f.to_ndarray())
            if chunks:
                pcm = np.concatenate(chunks, 1)
    m = len(pics)
    period = max(1, 2 * (m - 1))
    with av.open(str(dst), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "fast", "crf": "20"}
        a = None
        if pcm is not None:
            a = out.add_stream("aac", rate=rate)
            a.layout = layout
        for i in range(frames):
            k = i % period
            frame = av.VideoFrame.from_ndarray(pics[k if k < m else period - k], format="yuv420p")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            n = int(round(frames / fps * rate))
            sig = np.tile(pcm, (1, -(-n // pcm.shape[1])))[:, :n]
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(sig[:, k:k + 1024]),
                                                format="fltp", layout=layout)
                af.sample_rate, af.pts = rate, k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)


def probe(path: Path) -> dict:
    """Decoded frame count, codec, size and metadata of a video file (``{}`` if unreadable)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            info = {"codec": s.codec_context.name, "size": f"{s.width}x{s.height}",
                    "meta_frames": s.frames, "rate": str(s.average_rate),
                    "audio": bool(c.streams.audio)}
            info["frames"] = sum(1 for _ in c.decode(s))
        return info
    except Exception as e:  # noqa: BLE001 - any failure means "not a valid output"
        return {"error": f"{type(e).__name__}: {e}"}


def alpha_agreement(a: Path, b: Path) -> dict:
    """Mean and max |a - b| (0-255) of the luma of two alpha videos, frame by frame."""
    import av
    import numpy as np

    total, peak, n = 0.0, 0, 0
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        for fa, fb in zip(ca.decode(video=0), cb.decode(video=0)):
            x = fa.to_ndarray(format="gray").astype(np.int16)
            y = fb.to_ndarray(format="gray").astype(np.int16)
            d = np.abs(x - y)
            total += float(d.mean())
            peak = max(peak, int(d.max()))
            n += 1
    return {"frames": n, "mean_abs": round(total / max(n, 1), 3), "max_abs": peak}


# ---- runs ---------------------------------------------------------------------------------

def parse_variant(text: str) -> dict:
    """``"1"``, ``"12-passive"``, ``"1-jit"``, ``"1-jit-passive"`` -> options."""
    parts = text.strip().split("-")
    try:
        sc = int(parts[0])
    except ValueError:
        raise SystemExit(f"official_e2e: bad variant {text!r} (expected e.g. 1, 12, 1-passive, 1-jit)")
    flags = set(parts[1:])
    if flags - {"passive", "jit"}:
        raise SystemExit(f"official_e2e: unknown flag in variant {text!r} (known: passive, jit)")
    return {"name": f"official sc{sc}" + "".join(f" {f}" for f in parts[1:]),
            "seq_chunk": sc, "passive": "passive" in flags, "jit": "jit" in flags}


def timed(cmd: list[str], env: dict, cwd: Path, log: Path) -> dict:
    """Run ``cmd`` to completion; wall, CPU and peak RSS of that process alone."""
    with open(log, "wb") as f:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
            "rss_mib": ru.ru_maxrss / 1024}


def tail(path: Path, n: int = 6) -> str:
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + x for x in lines[-n:] if x.strip())


def rvmatte_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    exe = Path(sys.executable).parent / "rvmatte"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rvmatte"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-repo", type=Path, help="checkout of PeterL1n/RobustVideoMatting")
    ap.add_argument("--official-python", default=sys.executable,
                    help="interpreter for the official run (torch, torchvision, av<=12.3, pims)")
    ap.add_argument("--official-variants", default="1,1-passive",
                    help="comma list: seq_chunk with optional -passive / -jit (default: 1,1-passive)")
    ap.add_argument("--skip-official", action="store_true", help="time rvmatte alone")
    ap.add_argument("--rvmatte-cmd", help="command that runs the rvmatte CLI "
                                          "(default: rvmatte next to this interpreter)")
    ap.add_argument("--rvmatte-baseline-cmd",
                    help="also time this rvmatte command (e.g. an older checkout: 'env "
                         "PYTHONPATH=/tmp/old/src python -m rvmatte') with the default settings, "
                         "as 'rvmatte baseline', and print rvmatte's ratio to it")
    ap.add_argument("--rvmatte-presets", default="",
                    help="comma list of extra rvmatte runs with --preset P (e.g. medium,ultrafast)")
    ap.add_argument("--rvmatte-args", default="",
                    help="extra rvmatte runs with other convert options: 'NAME=ARGS;NAME=ARGS' "
                         "(e.g. 'no-fgest=--no-foreground-estimation')")
    ap.add_argument("--rvmatte-backends", default="",
                    help="comma list of extra rvmatte runs with --backend B (e.g. onnxruntime)")
    ap.add_argument("--rvmatte-cache", choices=("fresh", "user"), default="fresh",
                    help="fresh: a new rvmatte cache (ONNX export, speed choices) for this "
                         "benchmark (default); user: the user's cache")
    ap.add_argument("--clip", type=Path, help="input video (default: generate a 1080p clip)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="video the clip is made from")
    ap.add_argument("--frames", type=int, default=300, help="frames of the generated clip")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="where clip, weights and outputs go (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--idle-wait", type=float, default=300,
                    help="before each run wait up to this many seconds for the CPUs to be >= 85%% "
                         "idle (other jobs); 0 = do not check")
    ap.add_argument("--json", type=Path, help="write all numbers to this file")
    args = ap.parse_args(argv)

    variants = [] if args.skip_official else [parse_variant(v) for v in args.official_variants.split(",")]
    if variants:
        if args.official_repo is None:
            print("official_e2e: --official-repo PATH is required (git clone "
                  "https://github.com/PeterL1n/RobustVideoMatting), or pass --skip-official",
                  file=sys.stderr)
            return 2
        repo = args.official_repo.resolve()
        if not (repo / "inference.py").is_file() or not (repo / "model").is_dir():
            print(f"official_e2e: {repo} is not a RobustVideoMatting checkout "
                  "(no inference.py / model/)", file=sys.stderr)
            return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="official_e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, variants, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args, variants: list[dict], work: Path) -> int:
    import torch

    from rvmatte import __version__
    from rvmatte.weights import bundled_path, read_checkpoint

    # Input clip.
    if args.clip:
        clip = args.clip.resolve()
    else:
        clip = work / f"clip1080_{args.frames}.mp4"
        if not clip.exists():
            t = time.perf_counter()
            make_clip(args.source, clip, args.frames)
            print(f"generated {clip.name} in {time.perf_counter() - t:.1f} s")
    src = probe(clip)
    if "error" in src or not src["frames"]:
        print(f"official_e2e: cannot read the clip {clip}: {src}", file=sys.stderr)
        return 2
    frames = src["frames"]

    # Official-format weights: a plain state dict of the bundled model.
    weights = work / "rvm_mobilenetv3_fgf_state_dict.pth"
    torch.save(read_checkpoint(bundled_path("mobilenetv3")), weights)

    env_base = dict(os.environ)
    env_base.pop("OMP_WAIT_POLICY", None)
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
        "clip": {"path": clip.name, **src},
        "rvmatte": {"version": __version__, "torch": torch.__version__},
    }
    try:
        import av
        import onnxruntime

        info["rvmatte"].update(av=av.__version__, onnxruntime=onnxruntime.__version__)
    except ImportError:
        pass
    if variants:
        repo = args.official_repo.resolve()
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = r.stdout.strip() if r.returncode == 0 else "unknown (not a git checkout)"
        r = subprocess.run([args.official_python, "-c", VERSIONS_CODE], capture_output=True,
                           text=True, env=env_base)
        try:
            versions = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            print(f"official_e2e: cannot run {args.official_python}: {r.stderr.strip()[-500:]}",
                  file=sys.stderr)
            return 2
        info["official"] = {"commit": commit, **versions}

    print(f"machine: {info['machine']}")
    print(f"date:    {info['date']}")
    print(f"clip:    {clip.name}: {src['size']} {src['codec']} {frames} frames @ {src['rate']} fps, "
          f"audio {'yes' if src['audio'] else 'no'}")
    print(f"rvmatte: {json.dumps(info['rvmatte'])}")
    if variants:
        print(f"official: {json.dumps(info['official'])}")

    rv_env = dict(os.environ)
    if args.rvmatte_cache == "fresh":
        rv_env["RVMATTE_CACHE_DIR"] = str(work / "rvmatte-cache")
    rv_cmd = rvmatte_command(args.rvmatte_cmd)
    jobs = []
    for v in variants:
        env = dict(env_base)
        threads = 0
        if v["passive"]:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
            threads = os.cpu_count() or 1
        jobs.append({"name": v["name"], "env": env, "cmd": lambda comp, pha, v=v, t=threads: [
            args.official_python, "-c", OFFICIAL_CODE, str(args.official_repo.resolve()),
            str(weights), str(clip), str(comp), str(pha), str(v["seq_chunk"]),
            "1" if v["jit"] else "0", str(t)]})
    jobs.append({"name": "rvmatte auto", "env": rv_env, "cmd": lambda comp, pha: rv_cmd + [
        "convert", str(clip), "-o", str(comp), "--alpha", str(pha), "--downsample", "0.25"]})
    if args.rvmatte_baseline_cmd:
        base_cmd = rvmatte_command(args.rvmatte_baseline_cmd)
        jobs.append({"name": "rvmatte baseline", "env": rv_env, "cmd": lambda comp, pha: base_cmd + [
            "convert", str(clip), "-o", str(comp), "--alpha", str(pha), "--downsample", "0.25"]})
    for backend in filter(None, args.rvmatte_backends.split(",")):
        jobs.append({"name": f"rvmatte {backend}", "env": rv_env, "cmd": lambda comp, pha, b=backend:
                     rv_cmd + ["convert", str(clip), "-o", str(comp), "--alpha", str(pha),
                               "--downsample", "0.25", "--backend", b]})
    for preset in filter(None, args.rvmatte_presets.split(",")):
        jobs.append({"name": f"rvmatte {preset}", "env": rv_env, "cmd": lambda comp, pha, p=preset:
                     rv_cmd + ["convert", str(clip), "-o", str(comp), "--alpha", str(pha),
                               "--downsample", "0.25", "--preset", p]})
    for item in filter(None, (x.strip() for x in args.rvmatte_args.split(";"))):
        name, _, extra = item.partition("=")
        jobs.append({"name": f"rvmatte {name}", "env": rv_env, "cmd": lambda comp, pha, e=extra:
                     rv_cmd + ["convert", str(clip), "-o", str(comp), "--alpha", str(pha),
                               "--downsample", "0.25", *e.split()]})
    rv_names = [j["name"] for j in jobs if j["name"].startswith("rvmatte")]

    print(f"load average at start: {load()}")
    results: dict[str, list[dict]] = {j["name"]: [] for j in jobs}
    for r in range(args.rounds):
        order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]  # rotate: nobody always goes first
        print(f"\nround {r + 1}/{args.rounds}")
        for j in order:
            out = work / f"r{r + 1}_{j['name'].replace(' ', '_')}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            comp, pha = out / "comp.mp4", out / "pha.mp4"
            idle = wait_idle(args.idle_wait) if args.idle_wait > 0 else "not checked"
            before = load()
            res = timed(j["cmd"](comp, pha), j["env"], out, out / "log.txt")
            res.update(round=r + 1, cpus_before=idle, load_before=before, load_after=load(),
                       comp=probe(comp), pha=probe(pha), dir=str(out))
            ok = res["rc"] == 0 and all(
                p.get("frames") == frames and p.get("codec") == "h264" and p.get("size") == src["size"]
                for p in (res["comp"], res["pha"]))
            res["ok"] = ok
            res["fps"] = frames / res["wall"]
            results[j["name"]].append(res)
            print(f"  {j['name']:<24} {res['wall']:7.1f} s  {res['fps']:5.2f} FPS  "
                  f"cpu {res['cpu']:6.1f} s  rss {res['rss_mib']:5.0f} MiB  "
                  f"frames comp/pha {res['comp'].get('frames')}/{res['pha'].get('frames')}  "
                  f"load {before} -> {res['load_after']} [{idle}]" + ("" if ok else "  FAILED"))
            if not ok:
                print(f"    rc {res['rc']}; comp {res['comp']}; pha {res['pha']}\n{tail(out / 'log.txt')}")
        for rn in rv_names:
            rv = results[rn][-1]
            for j in jobs:
                if j["name"] in rv_names:
                    continue
                o = results[j["name"]][-1]
                if o["ok"] and rv["ok"]:
                    print(f"  ratio {j['name']} / {rn}: {o['wall'] / rv['wall']:.2f}x")
    print(f"\nload average at end: {load()}")

    # What the first rvmatte run left in its fresh cache (exported ONNX model, speed choices).
    cache = work / "rvmatte-cache"
    if args.rvmatte_cache == "fresh" and cache.is_dir():
        files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
        info["rvmatte"]["cache_files"] = files
        print(f"rvmatte cache after the runs: {', '.join(files) or 'empty'}")

    # Medians (successful runs only) and ratios.
    summary = {}
    for name, runs in results.items():
        good = [x["wall"] for x in runs if x["ok"]]
        summary[name] = {"runs": len(runs), "ok": len(good),
                         "median_wall": statistics.median(good) if good else None,
                         "median_fps": frames / statistics.median(good) if good else None}
    print(f"\nmedian over {args.rounds} rounds, {frames} frames, {src['size']} -> comp + alpha, ratio 0.25:")
    rv_med = summary["rvmatte auto"]["median_wall"]
    for name, s in summary.items():
        line = f"  {name:<24} "
        if s["median_wall"] is None:
            line += "all runs failed"
        else:
            line += f"{s['median_wall']:7.1f} s  {s['median_fps']:5.2f} FPS  ({s['ok']}/{s['runs']} ok)"
            if name not in rv_names and rv_med:
                s["speedup_rvmatte"] = s["median_wall"] / rv_med
                line += f"  rvmatte is {s['speedup_rvmatte']:.2f}x faster"
        print(line)
    official = [s["median_wall"] for n, s in summary.items() if n not in rv_names and s["median_wall"]]
    if official and rv_med:
        best = min(official)
        info["speedup_vs_best_official"] = best / rv_med
        print(f"  rvmatte vs the official's best configuration: {best / rv_med:.2f}x")
        for rn in rv_names[1:]:
            if summary[rn]["median_wall"]:
                summary[rn]["speedup_vs_best_official"] = best / summary[rn]["median_wall"]
                print(f"  {rn} vs the official's best configuration: "
                      f"{best / summary[rn]['median_wall']:.2f}x")

    base = summary.get("rvmatte baseline", {}).get("median_wall")
    if base and rv_med:
        info["speedup_vs_baseline"] = base / rv_med
        print(f"  rvmatte auto vs rvmatte baseline: {base / rv_med:.2f}x")

    # Do both produce the same matte? (same weights, same ratio; differences = codecs + numerics)
    for name, runs in results.items():
        if name in rv_names:
            continue
        pairs = [(o, v) for o, v in zip(runs, results["rvmatte auto"]) if o["ok"] and v["ok"]]
        if pairs:
            o, v = pairs[0]
            agree = alpha_agreement(Path(o["dir"]) / "pha.mp4", Path(v["dir"]) / "pha.mp4")
            summary[name]["alpha_vs_rvmatte"] = agree
            print(f"  alpha {name} vs rvmatte (round {o['round']}): mean |d| {agree['mean_abs']} / 255, "
                  f"max {agree['max_abs']} over {agree['frames']} frames")

    if args.json:
        for runs in results.values():
            for x in runs:
                x.pop("dir", None)
        args.json.write_text(json.dumps({"info": info, "rounds": results, "summary": summary},
                                        indent=2, default=str))
        print(f"wrote {args.json}")
    failed = any(not x["ok"] for runs in results.values() for x in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
