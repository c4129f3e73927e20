#!/usr/bin/env python
"""Speed of rvmatte's inference paths, each against plain eager fp32 PyTorch in the same run.

Model-only: frames per second of ``runner(src, state, ratio)`` at 512x288 (r=1), 1920x1080
(r=0.25) and 3840x2160 (r=0.125) for every backend/dtype, batch 1, recurrent state carried.
Runs are *interleaved* (round-robin over the backends, ``--rounds`` times) so that load from
other processes hits all of them alike; the median round is reported. The baseline
(``torch`` fp32: the model as loaded, eager, no transforms) is always measured.

End-to-end (``--e2e``): whole ``rvmatte.convert_video`` jobs on a synthetic (or given) H.264
clip writing a composite and an alpha video, per backend, also interleaved.

Peak memory: CUDA: ``max_memory_allocated`` per backend. CPU: with ``--memory`` each backend
runs again in a child process and reports its peak RSS growth (VmHWM - VmRSS at start).

    python benchmarks/speed.py                      # CPU, defaults
    python benchmarks/speed.py --backends torch,torch-fast,onnxruntime,fused --dtypes fp32,bf16
    python benchmarks/speed.py --backends fused,int8 --sizes 1920x1080,1280x720@0.25,1280x720@0.4

``int8`` (the fused path over the quantised network) always runs the bundled weights: its
calibration is only meaningful for a trained network (quantised once, then cached).
``auto`` is the backend ``backend="auto"`` picks for these weights, this device and each ratio
(:func:`rvmatte.runtime.auto_backend`); the table names it ``auto=<picked>``.
    python benchmarks/speed.py --e2e --e2e-frames 60
    python benchmarks/speed.py --device cuda --dtypes fp32,fp16 --backends torch,torch-fast,compile
    python benchmarks/speed.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import rvmatte
from rvmatte.runtime import make_runner
from rvmatte.runtime.torch_runners import TorchRunner

SIZES = {"512x288": (288, 512, 1.0), "1920x1080": (1080, 1920, 0.25), "3840x2160": (2160, 3840, 0.125)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_size(text: str) -> tuple[int, int, float]:
    """``"1920x1080"`` (a preset) or ``"WxH@R"`` -> ``(H, W, ratio)``."""
    if text in SIZES:
        return SIZES[text]
    try:
        wh, r = text.split("@")
        w, h = (int(v) for v in wh.lower().split("x"))
        return h, w, float(r)
    except ValueError:
        raise SystemExit(f"bad size {text!r}: use one of {', '.join(SIZES)} or WxH@RATIO") from None


def machine() -> str:
    from rvmatte.runtime.choose import cpu_name

    s = f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name()}"
    try:
        import onnxruntime as ort

        s += f", onnxruntime {ort.__version__}"
    except ImportError:
        pass
    return s


def picked(backend: str, dtype: str, ratio: float, args, device) -> str:
    """``backend``, or for ``"auto"`` the backend ``backend="auto"`` picks for the weights of
    ``args``, ``device``, ``dtype`` and ``ratio``, as :class:`rvmatte.Matter` does."""
    if backend != "auto":
        return backend
    from rvmatte.bundled import uses_bundled
    from rvmatte.runtime import auto_backend

    bundled = uses_bundled(args.variant, args.weights, args.refiner)
    return auto_backend(device.type, str(DTYPES[dtype]).removeprefix("torch."), ratio,
                        bundled=bundled)


def label(backend: str, resolved: str) -> str:
    return f"auto={resolved}" if backend == "auto" else backend


def build(backend: str, dtype: str, model, threads):
    dt = DTYPES[dtype]
    if backend == "torch" and dtype == "fp32":
        return TorchRunner(model, fuse_bn=False, channels_last=False)
    if backend in ("onnxruntime", "fused") and dtype == "bf16":
        raise ValueError(f"{backend}: no bf16 export")
    if backend == "int8":
        if dtype != "fp32":
            raise ValueError("int8: float32 in and out only")
        from rvmatte.spec import ModelSpec

        return make_runner("int8", spec=ModelSpec(device="cpu"), threads=threads)
    return make_runner(backend, model, dtype=None if dt == torch.float32 else dt, threads=threads)


def model_only(args, model, device) -> list[dict]:
    rows = []
    combos = [("torch", "fp32")] + [(b, d) for b in args.backends for d in args.dtypes
                                    if (b, d) != ("torch", "fp32")]
    for size in args.sizes:
        h, w, ratio = parse_size(size)
        src = torch.rand(1, 3, h, w, device=device)
        if args.chunk > 1:  # (1, T, 3, H, W): T frames per call, as Matter's chunks
            src = src.unsqueeze(1).expand(-1, args.chunk, -1, -1, -1).contiguous()
        runners, states, times, peaks = {}, {}, {}, {}
        resolved = {c: picked(c[0], c[1], ratio, args, device) for c in combos}
        for combo in combos:
            try:
                t0 = time.perf_counter()
                r = build(resolved[combo], combo[1], model, args.threads)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                out = r(src, None, ratio)  # warm-up (compiles / allocates)
                for _ in range(args.warmup):
                    out = r(src, out.state, ratio)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    peaks[combo] = torch.cuda.max_memory_allocated() / 2**20
                runners[combo], states[combo], times[combo] = r, out.state, []
                print(f"  [{size}] {label(combo[0], resolved[combo])}/{combo[1]} ready in "
                      f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
            except Exception as e:  # report and go on: a path may not exist on this machine
                print(f"  [{size}] {combo[0]}/{combo[1]} unavailable: {str(e).splitlines()[0][:160]}",
                      file=sys.stderr)
        for _ in range(args.rounds):
            for combo, r in runners.items():
                st = states[combo]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.frames):
                    st = r(src, st, ratio).state
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[combo].append((time.perf_counter() - t0) / (args.frames * args.chunk))
                states[combo] = st
        base = statistics.median(times[("torch", "fp32")]) if ("torch", "fp32") in times else None
        for combo in runners:
            t = statistics.median(times[combo])
            rows.append({"kind": "model", "size": size, "ratio": ratio,
                         "backend": label(combo[0], resolved[combo]), "dtype": combo[1], "chunk": args.chunk, "fps": 1 / t, "ms": 1000 * t,
                         "x_eager": (base / t) if base else None,
                         "peak_mib": peaks.get(combo), "rounds": [1 / x for x in times[combo]]})
        del runners, states
    return rows


def memory_probe(args) -> None:
    """Child process: one backend, a few frames, print peak RSS growth in MiB as JSON."""
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith(field)) / 1024

    backend, dtype, size = args.probe.split(",")
    backend = backend.removeprefix("auto=")  # the backend auto picked
    h, w, ratio = parse_size(size)
    model = rvmatte.load_model(args.variant, refiner=args.refiner, weights=args.weights, device="cpu")
    src = torch.rand(1, 3, h, w)
    start = status("VmRSS:")
    r = build(backend, dtype, model, args.threads)
    out = r(src, None, ratio)
    for _ in range(3):
        out = r(src, out.state, ratio)
    print(json.dumps({"peak_mib": status("VmHWM:") - start}))


def make_clip(path: Path, frames: int, size=(1920, 1080), fps: int = 25) -> None:
    """A synthetic H.264 clip: a moving bright disc over a textured background."""
    import av
    import numpy as np

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    bg = ((np.sin(xx / 37.0) + np.cos(yy / 23.0)) * 60 + 128).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            img = np.stack([bg, np.roll(bg, i * 4, 1), bg[::-1]], -1).copy()
            cx, cy = w // 2 + int(300 * np.sin(i / 8)), h // 2
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (h // 4) ** 2] = (230, 190, 160)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def end_to_end(args, model, device) -> list[dict]:
    from rvmatte.runtime.torch_runners import fuse_batchnorm
    from rvmatte.inference.session import Matter

    tmp = Path(tempfile.mkdtemp(prefix="rvmatte-speed-"))
    clip = Path(args.clip) if args.clip else tmp / "clip.mp4"
    if not args.clip:
        make_clip(clip, args.e2e_frames)

    def matter(backend):
        # (backend given: Matter's default is "auto", the fused path on a CPU)
        if backend == "torch":
            return Matter(model, downsample_ratio=args.e2e_ratio, backend="torch")
        if backend == "torch-fast":
            fast = fuse_batchnorm(model).to(memory_format=torch.channels_last)
            return Matter(fast, downsample_ratio=args.e2e_ratio, backend="torch")
        if backend in ("onnxruntime", "fused"):
            return Matter(model, downsample_ratio=args.e2e_ratio, backend=backend)
        if backend == "int8":  # the bundled weights (see the module docstring)
            return Matter(device="cpu", downsample_ratio=args.e2e_ratio, backend=backend)
        if backend == "auto":  # as a user gets it: the bundled weights by name, else the model
            from rvmatte.bundled import uses_bundled

            if uses_bundled(args.variant, args.weights, args.refiner):
                return Matter(device="cpu", downsample_ratio=args.e2e_ratio, backend="auto")
            return Matter(model, downsample_ratio=args.e2e_ratio, backend="auto")
        if backend == "onnxruntime-pipe":
            # Matter has no switch for the pipelined runner yet: swap it in (benchmark only).
            from rvmatte.runtime.ort import OnnxRuntimeRunner

            m = Matter(model, downsample_ratio=args.e2e_ratio, backend="onnxruntime")
            m._runner = OnnxRuntimeRunner(model=model, device="cpu", pipeline=True)
            return m
        raise ValueError(f"no end-to-end path for {backend}")

    e2e_paths = ("torch-fast", "onnxruntime", "onnxruntime-pipe", "fused", "int8", "auto")
    names = ["torch"] + [b for b in args.backends if b in e2e_paths]
    matters = {n: matter(n) for n in names}
    labels = {n: label(n, m.backend_for(args.e2e_ratio)) for n, m in matters.items()}
    times = {n: [] for n in names}
    frames = 0
    for rnd in range(args.e2e_rounds):
        for n, m in matters.items():
            m.reset()
            t0 = time.perf_counter()
            res = rvmatte.convert_video(clip, tmp / f"{n}.mp4", alpha=tmp / f"{n}_alpha.mp4",
                                        model=m, overwrite=True, downsample_ratio=args.e2e_ratio)
            times[n].append(time.perf_counter() - t0)
            frames = res.frames
    base = statistics.median(times["torch"])
    rows = []
    for n in names:
        t = statistics.median(times[n])
        rows.append({"kind": "e2e", "size": "1920x1080" if not args.clip else clip.name,
                     "ratio": args.e2e_ratio, "backend": labels[n], "dtype": "fp32", "fps": frames / t,
                     "ms": 1000 * t / frames, "x_eager": base / t, "peak_mib": None,
                     "rounds": [frames / x for x in times[n]]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", default="mobilenetv3")
    p.add_argument("--refiner", default="fast_guided_filter")
    p.add_argument("--weights", default=None, help="default: random init (speed does not depend on it)")
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--backends", default="torch,torch-fast,onnxruntime,fused")
    p.add_argument("--dtypes", default="fp32")
    p.add_argument("--frames", type=int, default=5, help="calls per round")
    p.add_argument("--chunk", type=int, default=1,
                   help="frames per call (T); > 1 lets onnxruntime-pipe overlap frames")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch / onnxruntime intra-op threads")
    p.add_argument("--e2e", action="store_true", help="also time file-to-file conversion")
    p.add_argument("--e2e-only", action="store_true")
    p.add_argument("--clip", default=None, help="input for --e2e (default: synthetic 1080p H.264)")
    p.add_argument("--e2e-frames", type=int, default=48)
    p.add_argument("--e2e-rounds", type=int, default=2)
    p.add_argument("--e2e-ratio", type=float, default=0.25)
    p.add_argument("--memory", action="store_true", help="CPU peak RSS per backend (child processes)")
    p.add_argument("--json", default=None)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        memory_probe(args)
        return 0
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.backends = [b for b in args.backends.split(",") if b]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; running on the CPU", file=sys.stderr)
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed sizes: let cuDNN pick its fastest kernels
    model = rvmatte.load_model(args.variant, refiner=args.refiner, weights=args.weights, device=device)
    print(f"machine: {machine()}")
    print(f"model: {args.variant} + {args.refiner}, batch 1, {args.chunk} frame(s) per call, "
          f"{args.rounds} interleaved rounds x {args.frames} calls, median round")
    rows = [] if args.e2e_only else model_only(args, model, device)
    if args.memory and device.type == "cpu" and not args.e2e_only:
        for row in rows:
            cmd = [sys.executable, __file__, "--probe", f"{row['backend']},{row['dtype']},{row['size']}",
                   "--variant", args.variant, "--refiner", args.refiner]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
                row["peak_mib"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
            except (subprocess.SubprocessError, ValueError, IndexError) as e:
                print(f"  memory probe failed for {row['backend']}: {e}", file=sys.stderr)
    if args.e2e or args.e2e_only:
        rows += end_to_end(args, model, device)
    print(f"{'kind':5} {'size':>10} {'ratio':>6} {'backend':16} {'dtype':5} {'FPS':>8} "
          f"{'ms/frame':>9} {'x eager':>8} {'peak MiB':>9}")
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(f"{r['kind']:5} {r['size']:>10} {r['ratio']:>6g} {r['backend']:16} {r['dtype']:5} "
              f"{r['fps']:8.2f} {r['ms']:9.1f} {r['x_eager'] or 0:8.2f} {peak:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
