"""``rvmatte live`` file to file, the sequential loop against the pipeline, side by side.

What it measures
----------------
Issue 22's live target: ``rvmatte live`` on a 1280x720 H.264 file source, writing H.264,
with adaptation off, at downsample ratios 0.25 and 0.4 (targets: >= 30 FPS at 0.25, >= 20 FPS at
0.4 on a 2-core CPU). Two versions of rvmatte run in the same session, round-robin (the order
rotates every round) so that both see the same machine:

* old -- the live mode before the pipeline (``--baseline``, default the commit before it:
  one loop reading, matting through ``Matter.process``, compositing with numpy and encoding
  in turn), extracted with ``git archive`` into the work directory and run from there
  (``PYTHONPATH``); the same interpreter and packages.
* new -- this checkout: capture, model and output threads, the fused kernel writing the
  encoder's 4:2:0 planes.

Each run is a fresh process, ``python -m rvmatte live --source CLIP --output out.mp4
--downsample R --no-adapt``, timed from start to exit. Per run it prints: the FPS the tool
itself reports (frames written / its own wall time; the old loop's figure is the same quotient
over its loop), the whole-process FPS (frames / process wall: interpreter start, imports, model
load and file close included), CPU milliseconds per frame (user + system of the process: what
two cores can at best divide by two), and for the new version its per-stage times (capture,
model, output per frame). Then the median over the rounds and the ratio new / old. Each output
is opened with PyAV: a run whose output is not H.264 or is short of frames counts as failed.
A third run per ratio times the model stage alone (``Matter.matte_uint8`` to the encoder's
planes, on ``--model-frames`` frames decoded into memory beforehand, this checkout): the
ceiling of any live pipeline on this machine, since the network's recurrence is sequential.

The clip: ``--clip PATH``, or generated from the bundled ``examples/sample_talking_head_640x360.mp4``
upscaled to 1280x720 (bicubic), played forwards and backwards to ``--frames`` frames (default
300 = 10 s at 30 fps), with its audio (``official_e2e.make_clip``). The new version copies that
audio into its output (the old one dropped it): a small remux at the end, counted in its time.

Before each run it waits (``--idle-wait`` seconds at most) until the CPUs are 85 % idle and
prints the load average before and after: on a shared machine absolute FPS fall with the load;
the ratio between the two versions, measured side by side, and the CPU per frame hold better.

    python benchmarks/live_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from official_e2e import cpu_model, load, make_clip, probe, timed, wait_idle  # noqa: E402

DEFAULT_SOURCE = REPO / "examples" / "sample_talking_head_640x360.mp4"
DEFAULT_BASELINE = "42dd587"  # the last commit with the sequential live loop
TARGETS = {0.25: 30.0, 0.4: 20.0}  # issue 22, FPS on this 2-core machine
SUMMARY = re.compile(r"live: (\d+) frames in ([\d.]+) s \(([\d.]+) fps\)(.*)")
STAGES = re.compile(r"capture (\d+) ms, model (\d+) ms, output (\d+) ms")


def extract_baseline(rev: str, work: Path) -> Path:
    """``src/rvmatte`` of ``rev`` under ``work/baseline-<rev>/src`` (the PYTHONPATH entry)."""
    dst = work / f"baseline-{rev}"
    if not (dst / "src" / "rvmatte").is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/rvmatte"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst / "src"


def version_env(pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def which_rvmatte(env: dict) -> str:
    """Where the ``rvmatte`` a run imports lives (checks that the baseline is the old tree):
    relative to this checkout when inside it, so saved logs name no machine's paths."""
    path = Path(subprocess.run([sys.executable, "-c", "import rvmatte; print(rvmatte.__file__)"],
                               env=env, capture_output=True, text=True,
                               check=True).stdout.strip())
    try:
        return f"{path.relative_to(HERE.parent)} (this checkout)"
    except ValueError:
        return str(path)


def parse_summary(log: Path) -> dict:
    """The tool's closing line: frames, its seconds and fps, and the new version's stage times."""
    text = log.read_text(errors="replace").replace("\r", "\n")
    for line in reversed(text.splitlines()):
        m = SUMMARY.search(line)
        if m:
            out = {"frames": int(m[1]), "tool_seconds": float(m[2]), "tool_fps": float(m[3])}
            s = STAGES.search(m[4])
            if s:
                out.update(capture_ms=int(s[1]), model_ms=int(s[2]), output_ms=int(s[3]))
            return out
    return {}


def run_once(name: str, env: dict, clip: Path, ratio: float, work: Path, frames: int,
             idle_wait: float, max_frames: int | None = None) -> dict:
    out = work / f"{name}_{ratio:g}.mp4"
    log = work / f"{name}_{ratio:g}.log"
    cmd = [sys.executable, "-m", "rvmatte", "live", "--source", str(clip), "--output", str(out),
           "--downsample", str(ratio), "--no-adapt", "--overwrite"]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    idle = wait_idle(idle_wait) if idle_wait > 0 else "not checked"
    before = load()
    res = timed(cmd, env, work, log)
    res.update(name=name, ratio=ratio, idle=idle, load_before=before, load_after=load())
    res.update(parse_summary(log))
    info = probe(out)
    want = max_frames or frames
    res["ok"] = (res["rc"] == 0 and info.get("codec") == "h264"
                 and info.get("frames") == want and res.get("frames") == want)
    res["process_fps"] = want / res["wall"]
    res["cpu_ms_per_frame"] = 1000 * res["cpu"] / want
    if not res["ok"]:
        res["log_tail"] = log.read_text(errors="replace")[-600:]
    return res


MODEL_ONLY = r"""
import json, resource, sys, time
import numpy as np
from rvmatte.inference.session import Matter
from rvmatte.io.readers import Source, probe
from rvmatte.spec import ModelSpec
clip, ratio, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
frames = []
for fr in Source(probe(clip)).frames():
    frames.append(fr.image)
    if len(frames) == n:
        break
m = Matter(ModelSpec(downsample=ratio))
uint8 = m.uint8_path(ratio)
def step(f, state):
    if uint8:
        return m.matte_uint8(f[None], state, ratio, outputs=["composite_yuv"],
                             background=(0.0, 1.0, 0.0))[1]
    m.process(f)
step(frames[0], None)
m.reset()
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t, c, state = time.perf_counter(), cpu(), None
for f in frames:
    state = step(f, state)
wall, used = time.perf_counter() - t, cpu() - c
# the backend that ran: auto's pick (after the first frame: "fused" where int8 fell back)
print(json.dumps({"fps": len(frames) / wall, "cpu_ms": 1000 * used / len(frames),
                  "backend": m.backend_for(ratio), "path": "uint8" if uint8 else "process"}))
"""


def model_only(clip: Path, ratio: float, frames: int, idle_wait: float) -> dict:
    """The session alone (this checkout) on ``frames`` decoded frames held in memory: what
    the model stage can do with the whole machine, the pipeline's ceiling."""
    idle = wait_idle(idle_wait) if idle_wait > 0 else "not checked"
    before = load()
    r = subprocess.run([sys.executable, "-c", MODEL_ONLY, str(clip), str(ratio), str(frames)],
                       env=version_env(None), capture_output=True, text=True)
    res = {"name": "model", "ratio": ratio, "ok": r.returncode == 0, "idle": idle,
           "load_before": before, "load_after": load()}
    if r.returncode == 0:
        res.update(json.loads(r.stdout.strip().splitlines()[-1]))
    else:
        res["log_tail"] = r.stderr[-600:]
    return res


def line(res: dict) -> str:
    if res["name"] == "model":
        return (f"  model only @ {res['ratio']:<4g} {res.get('fps', 0):5.1f} FPS, CPU "
                f"{res.get('cpu_ms', 0):4.0f} ms/frame ({res.get('backend')}, "
                f"{res.get('path')} path, frames in memory)"
                f"  load {res['load_before']} -> {res['load_after']} [{res['idle']}]"
                + ("" if res["ok"] else "  FAILED"))
    stages = (f"  capture {res['capture_ms']} / model {res['model_ms']} / output "
              f"{res['output_ms']} ms" if "model_ms" in res else "")
    return (f"  {res['name']:>3} @ {res['ratio']:<4g} tool {res.get('tool_fps', 0):5.1f} FPS, "
            f"process {res['process_fps']:5.1f} FPS, CPU {res['cpu_ms_per_frame']:4.0f} ms/frame"
            f"{stages}  load {res['load_before']} -> {res['load_after']} [{res['idle']}]"
            + ("" if res["ok"] else "  FAILED"))


def median(rows: list, key: str) -> float:
    vals = [r[key] for r in rows if r["ok"] and key in r]
    return statistics.median(vals) if vals else float("nan")


def report(results: list, ratios: list) -> None:
    print("\nmedians (FPS = frames written per second of wall time)")
    print("| ratio | old tool FPS | new tool FPS | new / old | old process FPS | "
          "new process FPS | model only FPS | CPU ms/frame old -> new (model only) | "
          "new: capture / model / output ms | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in ratios:
        old, new, mod = ([x for x in results if x["ratio"] == r and x["name"] == name]
                         for name in ("old", "new", "model"))
        of, nf = median(old, "tool_fps"), median(new, "tool_fps")
        print(f"| {r:g} | {of:.1f} | {nf:.1f} | {nf / of:.2f}x | "
              f"{median(old, 'process_fps'):.1f} | {median(new, 'process_fps'):.1f} | "
              f"{median(mod, 'fps'):.1f} | {median(old, 'cpu_ms_per_frame'):.0f} -> "
              f"{median(new, 'cpu_ms_per_frame'):.0f} ({median(mod, 'cpu_ms'):.0f}) | "
              f"{median(new, 'capture_ms'):.0f} / {median(new, 'model_ms'):.0f} / "
              f"{median(new, 'output_ms'):.0f} | >= {TARGETS.get(r, float('nan')):g} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, help="a 1280x720 video (default: generated)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="what the generated clip is made from")
    ap.add_argument("--frames", type=int, default=300, help="frames of the generated clip")
    ap.add_argument("--ratios", default="0.25,0.4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default=DEFAULT_BASELINE,
                    help="git revision of the old live loop; 'none' to time the new one only")
    ap.add_argument("--work", type=Path, default=Path("/tmp/rvmatte-live-speed"))
    ap.add_argument("--idle-wait", type=float, default=60,
                    help="seconds to wait at most for 85 %% idle CPUs before each run")
    ap.add_argument("--model-frames", type=int, default=100,
                    help="frames of the model-only runs (0: none)")
    ap.add_argument("--json", type=Path, help="write every run's numbers here")
    args = ap.parse_args(argv)
    ratios = [float(x) for x in args.ratios.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    clip = args.clip
    if clip is None:
        clip = args.work / f"clip_1280x720_{args.frames}.mp4"
        if not clip.exists():
            make_clip(args.source, clip, args.frames, size=(1280, 720))
    frames = probe(clip).get("frames")
    if not frames:
        print(f"live_speed: cannot read {clip}", file=sys.stderr)
        return 2
    versions = [("new", version_env(None))]
    if args.baseline != "none":
        versions.insert(0, ("old", version_env(extract_baseline(args.baseline, args.work))))
    print(f"live_speed: {cpu_model()}, {os.cpu_count()} CPUs; clip {clip} ({frames} frames); "
          f"ratios {ratios}; {args.rounds} rounds")
    for name, env in versions:
        print(f"  {name}: {which_rvmatte(env)}")
        for r in ratios:  # compile / export caches, untimed
            run_once(name, env, clip, r, args.work, frames, 0, max_frames=5)
    results = []
    for k in range(args.rounds):
        print(f"round {k + 1}")
        order = versions[k % len(versions):] + versions[:k % len(versions)]
        for r in ratios:
            for name, env in order:
                res = run_once(name, env, clip, r, args.work, frames, args.idle_wait)
                results.append(res)
                print(line(res), flush=True)
            if args.model_frames:
                res = model_only(clip, r, min(args.model_frames, frames), args.idle_wait)
                results.append(res)
                print(line(res), flush=True)
    if len(versions) == 2:
        report(results, ratios)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
