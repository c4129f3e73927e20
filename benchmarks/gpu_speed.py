#!/usr/bin/env python
"""One prepared run of every GPU measurement of issue 7, each against the plain eager fp32
PyTorch path measured in the same run.

1. Machine: GPU, torch, PyAV, whether NVENC can encode here (H100/H200 have no encoder).
2. Accuracy on the device (real frames, 1080p / 0.25, 4 recurrent frames): fp16 vs fp32 and the
   CUDA-graph runner vs eager.
3. Model-only FPS at 512x288 / 1, 1920x1080 / 0.25 and 3840x2160 / 0.125, frames already on
   the device, recurrent state carried: eager fp32 (baseline), eager fp16, TorchScript frozen
   fp16 (how the official release runs), ``torch-fast`` fp16, ``cudagraph`` fp32/fp16, with 1
   and with 16 frames per call. Interleaved rounds, median; peak GPU memory per path.
4. PyAV decode-only FPS of the 1080p H.264 clip (to RGB via libswscale, and to 4:2:0 planes).
5. End-to-end ``convert_video`` (in process, model loaded; H.264 composite over green + H.264
   alpha, ratio 0.25) of that clip: the eager fp32 path with CPU colour conversion (what the
   pipeline did before GPU work) against the default GPU path (CUDA graphs, fp16, colours on the
   GPU, outputs encoded in parallel) with x264 presets medium / veryfast / ultrafast; the same
   at 4K; and whole ``rvmatte convert`` processes (start-up included).
6. Later runs' extras (``--only``): start-up costs, the CPU's decode + encode ceiling (one x264
   per output, and ``segments``: several segment encoders per output, benchmarks/encode_speed.py),
   NVDEC, ``torch.compile``, everything at its defaults, ``e2e-workers``: the GPU path with
   ``encode_workers`` 1, auto, 6 and 8 (1080p; 1 and auto at 4K), ``profile``: the raw x264
   capacity of the CPUs (encoders on threads and in processes) and where a conversion's time
   goes (per-thread CPU, machine-wide busy and stolen CPU, ``ConversionResult.stages``), and
   ``procs``: segment encoders in processes (``encode_processes``) against threads, 1080p
   and 4K.

    python benchmarks/gpu_speed.py --json gpu.json                   # on a CUDA machine
    python benchmarks/gpu_speed.py --quick                           # tiny sizes, any device

Results go to stdout (tables) and ``--json``. docs/SPEED.md records the runs.
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

import numpy as np
import torch

import rvmatte
from rvmatte.runtime.torch_runners import CudaGraphRunner, TorchRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_speed import ceiling, make_clip  # noqa: E402 - a sibling script, not a package

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_talking_head_640x360.mp4"
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ 1
def machine(device) -> dict:
    import av

    from rvmatte.io.writers import hardware_encoder_error
    from rvmatte.runtime.choose import cpu_name

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
            "torch": torch.__version__, "av": av.__version__, "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mib=p.total_memory // 2**20, sms=p.multi_processor_count)
    for enc in ("h264_nvenc", "hevc_nvenc"):
        info[enc] = hardware_encoder_error(enc) or "works"
    return info


# ------------------------------------------------------------------------------------ clips
def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.demux(video=0) if _.size)


# ------------------------------------------------------------------------------------ 2
def accuracy(model, device, size, ratio) -> list[dict]:
    import av

    w, h = size
    with av.open(str(SAMPLE)) as c:
        frames = [f.reformat(width=w, height=h, format="rgb24").to_ndarray()
                  for _, f in zip(range(4), c.decode(video=0))]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).to(device)
    ref = TorchRunner(model, fuse_bn=False, channels_last=False)
    st = None
    refs = []
    for t in range(4):
        o = ref(x[t:t + 1], st, ratio)
        st = o.state
        refs.append((o.fgr.float(), o.pha.float()))
    rows = []
    cands = [("torch", "fp16", TorchRunner(model, fuse_bn=False, channels_last=False, dtype=torch.float16)),
             ("torch-fast", "fp32", TorchRunner(model)),
             ("cudagraph", "fp32", CudaGraphRunner(model)),
             ("cudagraph", "fp16", CudaGraphRunner(model, dtype=torch.float16))]
    for name, dt, r in cands:
        st = None
        dp, df = [], []
        for t in range(4):
            o = r(x[t:t + 1], st, ratio)
            st = o.state
            dp.append((o.pha.float() - refs[t][1]).abs())
            df.append((o.fgr.float() - refs[t][0]).abs())
        dp, df = torch.stack(dp), torch.stack(df)
        rows.append({"backend": name, "dtype": dt, "pha_max": dp.max().item(),
                     "pha_mean": dp.mean().item(), "fgr_max": df.max().item(),
                     "fgr_mean": df.mean().item(),
                     "fallback": getattr(r, "fallback_reason", None)})
    return rows


# ------------------------------------------------------------------------------------ 3
def build(kind: str, dtype: str, model, device, h, w):
    dt = DT[dtype]
    if kind == "torch":
        return TorchRunner(model, fuse_bn=False, channels_last=False,
                           dtype=None if dt == torch.float32 else dt)
    if kind == "torch-fast":
        return TorchRunner(model, dtype=dt)
    if kind == "cudagraph":
        return CudaGraphRunner(model, dtype=dt)
    if kind == "torchscript":  # the official release's way: traced, frozen, fp16
        from rvmatte.export.torchscript import export_torchscript

        ts = export_torchscript(model, dtype=dt, device=device, freeze=True)
        zero = torch.zeros(1, 1, 1, 1, device=device, dtype=dt)

        def run(src, state=None, ratio=1.0):
            x = src.to(dt)
            if x.ndim == 5:
                x = x[0]
            r = state if state is not None else (zero, zero, zero, zero)
            out = ts(x, *r, ratio)
            return rvmatte.models.MattingOutput(out[0], out[1], tuple(out[2:]))
        return run
    raise ValueError(kind)


def model_only(model, device, sizes, configs, rounds, target_frames) -> list[dict]:
    rows = []
    for w, h, ratio in sizes:
        runners, states, times, peaks, inputs = {}, {}, {}, {}, {}
        for cfg in configs:
            kind, dtype, chunk = cfg
            if kind == "torchscript" and chunk > 1:
                continue
            try:
                t0 = time.perf_counter()
                src = torch.rand(1, chunk, 3, h, w, device=device)
                if kind == "torchscript":
                    src = src[:, 0]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                r = build(kind, dtype, model, device, h, w)
                st = None
                for _ in range(3):
                    st = r(src, st, ratio).state
                sync(device)
                if device.type == "cuda":
                    peaks[cfg] = torch.cuda.max_memory_allocated() / 2**20
                runners[cfg], states[cfg], times[cfg], inputs[cfg] = r, st, [], src
                log(f"  [{w}x{h}] {kind}/{dtype}/T={chunk} ready in {time.perf_counter() - t0:.1f}s")
            except Exception as e:  # noqa: BLE001 - report and go on
                log(f"  [{w}x{h}] {kind}/{dtype}/T={chunk} unavailable: {str(e).splitlines()[0][:200]}")
        for _ in range(rounds):
            for cfg, r in runners.items():
                calls = max(2, target_frames // cfg[2])
                st, src = states[cfg], inputs[cfg]
                sync(device)
                t0 = time.perf_counter()
                for _ in range(calls):
                    st = r(src, st, ratio).state
                sync(device)
                times[cfg].append((time.perf_counter() - t0) / (calls * cfg[2]))
                states[cfg] = st
        base = statistics.median(times[configs[0]]) if configs[0] in times else None
        for cfg in runners:
            t = statistics.median(times[cfg])
            rows.append({"kind": "model", "size": f"{w}x{h}", "ratio": ratio, "backend": cfg[0],
                         "dtype": cfg[1], "chunk": cfg[2], "fps": 1 / t, "ms": 1000 * t,
                         "x_eager": base / t if base else None, "peak_mib": peaks.get(cfg)})
        del runners, states, inputs
    return rows


# ------------------------------------------------------------------------------------ 4
def decode_only(clip: Path, chunk: int = 12, rounds: int = 2) -> dict:
    """PyAV decode alone: to RGB, to 4:2:0 planes; then 4:2:0 chunks of ``chunk`` frames as
    the GPU path's decode thread made them before (``to_ndarray`` + ``np.stack``, timed in a
    bare PyAV loop) and as it makes them now (each frame's planes copied into its chunk by
    ``Source.frames(into=)``, whose own bookkeeping is counted), alternated over ``rounds``."""
    import av

    from rvmatte.io.readers import Source, probe

    out = {}
    for fmt in ("rgb24", "yuv420p"):
        t0 = time.perf_counter()
        n = 0
        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for f in c.decode(s):
                f.to_ndarray(format=fmt) if fmt == "rgb24" else f.to_ndarray()
                n += 1
        out[fmt] = n / (time.perf_counter() - t0)
    info = probe(clip)
    shape = (chunk, info.height * 3 // 2, info.width)
    for rnd in range(rounds):
        for how in ("stacked", "into_chunk"):
            t0, n, buf, slots = time.perf_counter(), 0, [], []

            def slot():
                if not slots:
                    slots.append(np.empty(shape, np.uint8))
                return slots[0][len(buf)]

            if how == "stacked":
                with av.open(str(clip)) as c:
                    s = c.streams.video[0]
                    s.thread_type = "AUTO"
                    for f in c.decode(s):
                        buf.append(f.to_ndarray())
                        n += 1
                        if len(buf) == chunk:
                            np.stack(buf)
                            buf = []
            else:
                for fr in Source(info).frames(yuv=True, into=slot):
                    buf.append(fr.image)
                    n += 1
                    if len(buf) == chunk:
                        slots.pop()
                        buf = []
            out.setdefault(f"yuv420p_chunks_{how}", []).append(n / (time.perf_counter() - t0))
    for how in ("stacked", "into_chunk"):
        out[f"yuv420p_chunks_{how}"] = statistics.median(out[f"yuv420p_chunks_{how}"])
    out["into_chunk_vs_stacked"] = out["yuv420p_chunks_into_chunk"] / out["yuv420p_chunks_stacked"]
    return out


# ------------------------------------------------------------------------------------ 4b
def io_ceiling(clip: Path, tmp: Path, preset: str, outputs: int) -> dict:
    """Decode + ``outputs`` H.264 encodes of the clip, no model at all: the pipeline's ceiling
    on this machine's CPU (decoded 4:2:0 planes straight to the encoders, each in its thread,
    as convert_video's GPU path feeds them)."""
    import queue
    import threading

    import av

    qs = [queue.Queue(maxsize=36) for _ in range(outputs)]

    def encode(k: int) -> None:
        with av.open(str(tmp / f"ceiling{k}.mp4"), "w") as c:
            st = None
            while True:
                item = qs[k].get()
                if item is None:
                    break
                arr, i = item
                if st is None:
                    st = c.add_stream("libx264", rate=30)
                    st.width, st.height, st.pix_fmt = arr.shape[1], arr.shape[0] * 2 // 3, "yuv420p"
                    st.options = {"crf": "18", "preset": preset, "bf": "0"}
                f = av.VideoFrame.from_ndarray(arr, format="yuv420p")
                f.pts = i
                for p in st.encode(f):
                    c.mux(p)
            for p in st.encode():
                c.mux(p)

    threads = [threading.Thread(target=encode, args=(k,)) for k in range(outputs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    n = 0
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            arr = f.to_ndarray()
            for q in qs:
                q.put((arr, i))
            n += 1
    for q in qs:
        q.put(None)
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    return {"kind": "ceiling", "preset": preset, "outputs": outputs, "frames": n, "seconds": dt,
            "fps": n / dt}


def startup(device) -> dict:
    """Seconds for: a bare interpreter importing torch and initialising CUDA; the same plus
    rvmatte and the bundled model on the device; CUDA-graph captures with and without cuDNN
    autotuning (1080p / 0.25, 12 frames per call) and their steady FPS."""
    out = {}
    code = ("import time; t=time.perf_counter(); import torch; a=time.perf_counter(); "
            "torch.zeros(1, device='cuda' if torch.cuda.is_available() else 'cpu').sum().item(); "
            "b=time.perf_counter(); import rvmatte; m=rvmatte.load_model(device='cuda' if "
            "torch.cuda.is_available() else 'cpu', dtype='float16' if torch.cuda.is_available() "
            "else None); c=time.perf_counter(); print(a-t, b-a, c-b)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        imp, init, load = (float(v) for v in p.stdout.split())
        out.update(import_torch=imp, cuda_init=init, rvmatte_and_model=load, process_wall=wall)
    except ValueError:
        out["error"] = p.stderr.strip().splitlines()[-1:] if p.stderr else p.stdout
    model = rvmatte.load_model(device=device, dtype=torch.float16 if device.type == "cuda" else None)
    h, w, chunk = (1080, 1920, 12) if device.type == "cuda" else (144, 256, 2)
    src = torch.rand(1, chunk, 3, h, w, device=device, dtype=model.project_mat.conv.weight.dtype)
    for tune in (False, True):
        r = CudaGraphRunner(model, autotune=tune)
        sync(device)
        t0 = time.perf_counter()
        st = r(src, None, 0.25).state
        sync(device)
        cap = time.perf_counter() - t0
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            st = r(src, st, 0.25).state
        sync(device)
        out[f"capture_s_autotune_{int(tune)}"] = cap
        out[f"fps_autotune_{int(tune)}"] = n * chunk / (time.perf_counter() - t0)
    return out


def cuvid_probe(clip: Path) -> dict:
    """Can this FFmpeg decode H.264 on the GPU's NVDEC (h264_cuvid)? FPS if so."""
    import av

    try:
        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            cc = av.CodecContext.create("h264_cuvid", "r")
            cc.extradata = s.codec_context.extradata
            n = 0
            t0 = time.perf_counter()
            for pkt in c.demux(s):
                if not pkt.size:  # the demuxer's end-of-stream packet; flushed below
                    continue
                for f in cc.decode(pkt):
                    f.to_ndarray()
                    n += 1
            for f in cc.decode(None):
                f.to_ndarray()
                n += 1
            return {"works": n > 0, "frames": n, "fps": n / (time.perf_counter() - t0)}
    except Exception as e:  # noqa: BLE001
        return {"works": False, "error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}


def compiled(model, device, chunks=(16,), on_row=None) -> list[dict]:
    """``torch.compile`` (inductor, ``mode="reduce-overhead"``: CUDA graphs) against the
    ``cudagraph`` runner, fp16, 1080p / 0.25, in the same run; compile time included."""
    from rvmatte.runtime import make_runner

    half = _half(model, "fp16")
    rows = []
    for chunk in chunks:
        src = torch.rand(1, chunk, 3, 1080, 1920, device=device, dtype=torch.float16)
        for name in ("cudagraph", "compile"):
            t0 = time.perf_counter()
            try:
                r = make_runner(name, half)
                st = None
                for _ in range(3):
                    st = r(src, st, 0.25).state
                sync(device)
            except Exception as e:  # noqa: BLE001
                rows.append({"backend": name, "chunk": chunk, "error": str(e).splitlines()[0][:200]})
                continue
            ready = time.perf_counter() - t0
            calls = max(4, 256 // chunk)
            times = []
            for _ in range(3):
                sync(device)
                t1 = time.perf_counter()
                for _ in range(calls):
                    st = r(src, st, 0.25).state
                sync(device)
                times.append((time.perf_counter() - t1) / (calls * chunk))
            rows.append({"backend": name, "chunk": chunk, "ready_s": ready,
                         "fps": 1 / statistics.median(times)})
            if on_row:
                on_row(rows[-1])
            del r
    return rows


# ------------------------------------------------------------------------------------ 5
def e2e(model, device, clip: Path, tmp: Path, configs, rounds, label) -> list[dict]:
    from rvmatte.inference.session import Matter

    matters = {}
    for cfg in configs:
        name, backend, dtype, yuv, preset = cfg[:5]
        matters[cfg] = Matter(model if dtype == "fp32" else _half(model, dtype), backend=backend,
                              downsample_ratio=0.25)
    times = {cfg: [] for cfg in configs}
    info = {}
    for _ in range(rounds):
        for cfg, m in matters.items():
            name, backend, dtype, yuv, preset = cfg[:5]
            workers = cfg[5] if len(cfg) > 5 else "auto"
            m.reset()
            comp, pha = tmp / f"{label}_{name}.mp4", tmp / f"{label}_{name}_alpha.mp4"
            if name.endswith("-comp-only"):
                pha = None
            t0 = time.perf_counter()
            res = rvmatte.convert_video(clip, comp, alpha=pha, model=m, overwrite=True,
                                        downsample_ratio=0.25, device_yuv=yuv, preset=preset,
                                        encode_workers=workers,
                                        encode_processes=len(cfg) > 6 and cfg[6])
            times[cfg].append(time.perf_counter() - t0)
            info[cfg] = (res.frames, res.encoders, res.notes, count_frames(comp),
                         count_frames(pha) if pha else None, res.encoding,
                         {k: round(v, 2) for k, v in res.stages.items()})
    base = statistics.median(times[configs[0]])
    rows = []
    for cfg in configs:
        t = statistics.median(times[cfg])
        frames, enc, notes, n_comp, n_pha, encoding, stages = info[cfg]
        rows.append({"kind": "e2e", "size": label, "config": cfg[0], "backend": cfg[1],
                     "dtype": cfg[2], "device_yuv": cfg[3], "preset": cfg[4],
                     "encoding": encoding, "stages": stages, "frames": frames,
                     "fps": frames / t, "seconds": t, "x_eager": base / t, "encoders": enc,
                     "notes": notes, "frames_written": [n_comp, n_pha],
                     "rounds_fps": [frames / x for x in times[cfg]]})
    return rows


_HALF = {}


def _half(model, dtype):
    import copy

    if dtype not in _HALF:
        _HALF[dtype] = copy.deepcopy(model).to(DT[dtype])
    return _HALF[dtype]


def whole_process(clip: Path, tmp: Path, preset: str, frames: int, extra=()) -> dict:
    cmd = [sys.executable, "-m", "rvmatte", "convert", str(clip), "-o", str(tmp / "proc.mp4"),
           "--alpha", str(tmp / "proc_alpha.mp4"), "--downsample", "0.25", "--preset", preset,
           "--overwrite", "--quiet", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    t = time.perf_counter() - t0
    return {"kind": "process", "preset": preset, "extra": list(extra), "rc": p.returncode, "seconds": t,
            "fps": frames / t, "stderr": p.stderr.strip().splitlines()[-1:] if p.returncode else []}


def _task_ticks() -> dict:
    """CPU clock ticks (user + system) of each thread of this process, from /proc."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[int(tid)] = (int(parts[11]) + int(parts[12]), comm)
    return ticks


def _cpu_jiffies() -> tuple[int, int]:
    """Machine-wide busy and stolen clock ticks, from /proc/stat (all CPUs together)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def thread_profile(run) -> dict:
    """Call ``run()`` while sampling every thread's CPU time: where a pipeline's cores go (a
    thread near 100 % of the wall time is the bottleneck; the total against the core count says
    whether the machine is saturated). Python threads are named, native ones keep their comm."""
    import threading

    hz = os.sysconf("SC_CLK_TCK")
    names, seen, stop = {}, {}, threading.Event()
    before = {tid: t for tid, (t, _) in _task_ticks().items()}

    def sample():
        while True:
            for t in threading.enumerate():
                if t.native_id is not None:
                    names[t.native_id] = t.name
            for tid, (t, comm) in _task_ticks().items():
                seen[tid] = (t, comm)
            if stop.wait(0.1):
                return

    th = threading.Thread(target=sample, name="profiler", daemon=True)
    th.start()
    busy0, steal0 = _cpu_jiffies()
    t0 = time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    busy1, steal1 = _cpu_jiffies()
    stop.set()
    th.join()
    rows = []
    for tid, (t, comm) in seen.items():
        cpu = (t - before.get(tid, 0)) / hz
        if cpu > 0.01 * wall:
            rows.append({"tid": tid, "name": names.get(tid, comm), "cpu_s": cpu,
                         "busy": cpu / wall})
    rows.sort(key=lambda r: -r["cpu_s"])
    total = sum((t - before.get(tid, 0)) / hz for tid, (t, _) in seen.items())
    return {"wall_s": wall, "cpu_s": total, "cores_busy": total / wall, "threads": rows[:16],
            "machine_busy": (busy1 - busy0) / hz / wall, "machine_steal": (steal1 - steal0) / hz / wall,
            "result": result}


def x264_capacity(clip: Path, preset: str, parallel: int, frames: int = 120,
                  processes: bool = False) -> dict:
    """The CPU's raw x264 throughput: ``parallel`` threads (or processes, which share no
    interpreter lock), each with its own one-thread encoder and no muxing, encoding the same
    pre-decoded 1080p 4:2:0 frames."""
    import multiprocessing
    import threading

    import av

    with av.open(str(clip)) as c:
        src = []
        for f in c.decode(video=0):
            src.append(f.to_ndarray())
            if len(src) == 30:
                break
    h, w = src[0].shape[0] * 2 // 3, src[0].shape[1]

    def work():
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
        cc.time_base = __import__("fractions").Fraction(1, 30)
        cc.options = {"preset": preset, "crf": "18", "threads": "1"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(src[i % len(src)], format="yuv420p")
            f.pts = i
            cc.encode(f)
        cc.encode(None)

    if processes:  # forked children touch no CUDA, only PyAV and numpy
        ctx = multiprocessing.get_context("fork")
        ths = [ctx.Process(target=work) for _ in range(parallel)]
    else:
        ths = [threading.Thread(target=work) for _ in range(parallel)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    return {"preset": preset, "parallel": parallel, "processes": processes,
            "fps_total": parallel * frames / dt, "fps_each": frames / dt}


def print_e2e(rows) -> None:
    for r in rows:
        print(f"e2e {r['size']:>9} {r['config']:26} {r['frames']:5d} frames {r['seconds']:7.2f} s "
              f"{r['fps']:8.1f} FPS x{r['x_eager']:.2f} written {r['frames_written']} "
              f"{r['encoders']} {r.get('encoding')} {r['notes'] or ''}", flush=True)
        if r.get("stages"):
            print(f"    stages: {r['stages']}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and clips (a CPU check)")
    ap.add_argument("--frames", type=int, default=900, help="frames of the 1080p clip")
    ap.add_argument("--frames-4k", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds, model-only")
    ap.add_argument("--e2e-rounds", type=int, default=1, help="interleaved rounds, end to end")
    ap.add_argument("--skip", default="", help="comma list of: accuracy,model,decode,e2e,4k,process")
    ap.add_argument("--only", default="", help="comma list of sections to run (default: all): "
                    "accuracy,model,decode,e2e,4k,process,startup,ceiling,cuvid,e2e-fast,compile,"
                    "defaults,segments,e2e-workers,profile,procs")
    ap.add_argument("--process-presets", default="ultrafast,medium")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    sections = ("accuracy", "model", "decode", "e2e", "4k", "process", "startup", "ceiling",
                "cuvid", "e2e-fast", "compile", "defaults", "segments", "e2e-workers", "profile",
                "procs")
    only = set(filter(None, args.only.split(",")))
    if only:
        skip |= set(sections) - only
    else:
        skip |= {"startup", "ceiling", "cuvid", "e2e-fast", "compile", "defaults", "segments",
                 "e2e-workers", "profile", "procs"}  # later runs' extras
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {"machine": machine(device)}
    print(json.dumps(results["machine"], indent=1), flush=True)
    model = rvmatte.load_model(device=device)  # bundled weights (accuracy uses real frames)
    tmp = Path(tempfile.mkdtemp(prefix="rvmatte-gpu-"))
    if args.quick:
        sizes = [(256, 144, 1.0), (512, 288, 0.5)]
        hd, uhd = (512, 288), (640, 360)
        args.frames, args.frames_4k, target, rounds = 24, 12, 8, 1
    else:
        sizes = [(512, 288, 1.0), (1920, 1080, 0.25), (3840, 2160, 0.125)]
        hd, uhd = (1920, 1080), (3840, 2160)
        target, rounds = 256, args.rounds

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    if "accuracy" not in skip:
        results["accuracy"] = accuracy(model, device, hd, 0.25 if not args.quick else 0.5)
        for r in results["accuracy"]:
            print(f"accuracy vs eager fp32 {r['backend']:10} {r['dtype']}: pha max {r['pha_max']:.2e} "
                  f"mean {r['pha_mean']:.2e} | fgr max {r['fgr_max']:.2e} mean {r['fgr_mean']:.2e}"
                  + (f" ({r['fallback']})" if r["fallback"] else ""), flush=True)
        save()
    if "model" not in skip:
        configs = [("torch", "fp32", 1), ("torch", "fp16", 1), ("torchscript", "fp16", 1),
                   ("torch-fast", "fp16", 1), ("cudagraph", "fp32", 1), ("cudagraph", "fp16", 1),
                   ("torch", "fp16", 16), ("cudagraph", "fp16", 16)]
        rows = model_only(model, device, sizes, configs, rounds, target)
        results["model"] = rows
        print(f"{'size':>10} {'ratio':>6} {'backend':12} {'dtype':5} {'T':>3} {'FPS':>9} "
              f"{'ms/frame':>9} {'x eager':>8} {'peak MiB':>9}")
        for r in rows:
            pk = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
            print(f"{r['size']:>10} {r['ratio']:>6g} {r['backend']:12} {r['dtype']:5} {r['chunk']:>3} "
                  f"{r['fps']:9.1f} {r['ms']:9.3f} {r['x_eager'] or 0:8.2f} {pk:>9}", flush=True)
        save()
    clip = make_clip(tmp / "clip1080.mp4", args.frames, hd)
    log(f"clip: {clip} ({args.frames} frames {hd[0]}x{hd[1]})")
    if "compile" not in skip and device.type == "cuda":
        results["compile"] = []

        def row(r):
            results["compile"].append(r)
            print("compile vs cudagraph (1080p / 0.25, fp16):", json.dumps(r), flush=True)
            save()
        compiled(model, device, on_row=row)
    if "startup" not in skip:
        results["startup"] = startup(device)
        print("startup:", json.dumps(results["startup"]), flush=True)
        save()
    if "cuvid" not in skip:
        results["cuvid"] = cuvid_probe(clip)
        print("h264_cuvid:", json.dumps(results["cuvid"]), flush=True)
        save()
    if "ceiling" not in skip:
        rows = [io_ceiling(clip, tmp, p, k) for p, k in (("ultrafast", 2), ("ultrafast", 1),
                                                         ("superfast", 2), ("medium", 2))]
        results["ceiling"] = rows
        for r in rows:
            print(f"I/O ceiling (decode + {r['outputs']} x264 {r['preset']} encodes, no model): "
                  f"{r['fps']:.1f} FPS", flush=True)
        save()
    if "segments" not in skip:  # the encoding ceiling with several segment encoders per output
        rows = []
        for preset in ("ultrafast", "veryfast"):
            for workers, threads in ((1, None), (2, None), (4, None), (8, 1), (4, 4)):
                r = ceiling(clip, tmp, preset=preset, workers=workers, threads=threads)
                rows.append(r)
                print(f"I/O ceiling, segment encoders (decode + 2 x264 {preset}): workers "
                      f"{r['workers']} threads {r['threads'] or 'auto'} segment "
                      f"{r['segment_frames']}: {r['fps']:.1f} FPS, {r['bytes'] / 1e6:.1f} MB",
                      flush=True)
        results["segments"] = rows
        save()
    if "e2e-workers" not in skip:  # the GPU path with 1, auto and more segment encoders
        cfgs = [(f"auto-{p}-workers-{w}", "auto", "fp16", None, p, w)
                for p in ("ultrafast", "veryfast") for w in (1, "auto", 6, 8)]
        rows = e2e(model, device, clip, tmp, cfgs, args.e2e_rounds, f"{hd[0]}x{hd[1]}")
        clip4 = make_clip(tmp / "clip4k.mp4", args.frames_4k, uhd)  # 4K too, as the issue asks
        rows += e2e(model, device, clip4, tmp, [c for c in cfgs if c[4] == "ultrafast"
                                                and c[5] in (1, "auto")], 1,
                    f"{uhd[0]}x{uhd[1]}")
        clip4.unlink()
        results["e2e_workers"] = rows
        print_e2e(rows)
        save()
    if "profile" not in skip:  # where the CPUs go: raw x264 capacity, stages per output set
        rows = []
        for k, procs in ((1, False), (16, False), (16, True), (8, True)):
            p = thread_profile(lambda: x264_capacity(clip, "ultrafast", k, processes=procs,
                                                     frames=24 if args.quick else 120))
            r = {**p.pop("result"), "machine_busy": p["machine_busy"],
                 "machine_steal": p["machine_steal"]}
            rows.append(r)
            print(f"x264 capacity, ultrafast, {k} one-thread encoders in "
                  f"{'processes' if procs else 'threads'}: {r['fps_total']:.1f} FPS in all "
                  f"({r['fps_each']:.1f} each); machine {r['machine_busy']:.1f} cores busy, "
                  f"{r['machine_steal']:.1f} stolen", flush=True)
        results["x264_capacity"] = rows
        save()
        from rvmatte.inference.session import Matter

        matter = Matter(_half(model, "fp16"), backend="auto", downsample_ratio=0.25)
        outputs = {"both": ("c.mp4", "a.mp4"), "composite": ("c.mp4", None),
                   "alpha": (None, "a.mp4")}

        def convert(what="both"):  # as e2e() runs it: model loaded, its graphs captured
            matter.reset()
            c, a = outputs[what]
            return rvmatte.convert_video(clip, c and tmp / c, alpha=a and tmp / a, model=matter,
                                         overwrite=True, downsample_ratio=0.25,
                                         preset="ultrafast")

        convert()  # warm-up: CUDA graphs captured
        prof, times = [], {}
        for rnd in range(2):
            for what in outputs:
                p = thread_profile(lambda: convert(what))
                res = p.pop("result")
                times.setdefault(what, []).append(res.seconds)
                row = {"outputs": what, "round": rnd, "fps": res.frames / res.seconds,
                       "cores_busy": p["cores_busy"], "machine_busy": p["machine_busy"],
                       "machine_steal": p["machine_steal"], "stages": res.stages,
                       "bottleneck": res.bottleneck, "encoding": res.encoding,
                       "threads": p["threads"][:6]}
                prof.append(row)
                print(f"e2e {what:9}: {row['fps']:6.1f} FPS, machine {row['machine_busy']:.1f} "
                      f"cores busy {row['machine_steal']:.1f} stolen, bottleneck "
                      f"{res.bottleneck}, " + " ".join(f"{k}={v:.2f}" for k, v in res.stages.items()),
                      flush=True)
        for what, ts in times.items():
            print(f"e2e {what:9}: median {args.frames / statistics.median(ts):.1f} FPS", flush=True)
        results["profile"] = prof
        save()
    if "procs" not in skip:  # segment encoders in processes against threads, side by side
        rows = []
        for rnd in range(2):
            for procs in (False, True):
                r = ceiling(clip, tmp, preset="ultrafast", workers="auto", processes=procs)
                r["round"] = rnd
                rows.append(r)
                print(f"I/O ceiling ultrafast, auto workers ({r['workers']}x{r['threads']}), "
                      f"{'processes' if r['processes'] else 'threads'}: {r['fps']:.1f} FPS",
                      flush=True)
        results["procs_ceiling"] = rows
        save()
        cfgs = [("threads-ultrafast", "auto", "fp16", None, "ultrafast", "auto", False),
                ("procs-ultrafast", "auto", "fp16", None, "ultrafast", "auto", True),
                ("procs-ultrafast-comp-only", "auto", "fp16", None, "ultrafast", "auto", True),
                ("threads-veryfast", "auto", "fp16", None, "veryfast", "auto", False),
                ("procs-veryfast", "auto", "fp16", None, "veryfast", "auto", True)]
        rows = e2e(model, device, clip, tmp, cfgs, 2, f"{hd[0]}x{hd[1]}")
        print_e2e(rows)
        results["procs_e2e"] = rows
        save()
        clip4 = make_clip(tmp / "clip4k.mp4", args.frames_4k, uhd)
        rows4 = e2e(model, device, clip4, tmp, [cfgs[0], cfgs[1]], 1, f"{uhd[0]}x{uhd[1]}")
        print_e2e(rows4)
        results["procs_e2e_4k"] = rows4
        clip4.unlink()
        save()
        for extra in ((), ("--encode-processes",)):
            r = whole_process(clip, tmp, "ultrafast", args.frames, extra)
            results.setdefault("procs_process", []).append(r)
            print(f"whole process ({args.frames} frames, --preset ultrafast "
                  f"{' '.join(extra) or '(threads)'}): {r['seconds']:.2f} s, {r['fps']:.1f} FPS "
                  f"rc={r['rc']} {r['stderr']}", flush=True)
            save()
    if "e2e-fast" not in skip:
        cfgs = [("auto-ultrafast", "auto", "fp16", None, "ultrafast"),
                ("auto-ultrafast-comp-only", "auto", "fp16", None, "ultrafast"),
                ("auto-superfast", "auto", "fp16", None, "superfast")]
        rows = e2e(model, device, clip, tmp, cfgs, args.e2e_rounds, f"{hd[0]}x{hd[1]}")
        results["e2e_fast"] = rows
        print_e2e(rows)
        save()
    if "defaults" not in skip:  # everything at its default: preset, chunk size, colours, backend
        cfg = [("auto-defaults", "auto", "fp16", None, None)]
        rows = e2e(model, device, clip, tmp, cfg, args.e2e_rounds, f"{hd[0]}x{hd[1]}")
        clip4 = make_clip(tmp / "clip4k.mp4", args.frames_4k, uhd)
        rows += e2e(model, device, clip4, tmp, cfg, 1, f"{uhd[0]}x{uhd[1]}")
        clip4.unlink()
        results["e2e_defaults"] = rows
        print_e2e(rows)
        save()
    if "decode" not in skip:
        results["decode"] = decode_only(clip)
        d = results["decode"]
        print(f"PyAV decode only, {hd[0]}x{hd[1]}: to RGB {d['rgb24']:.1f} FPS, to 4:2:0 planes "
              f"{d['yuv420p']:.1f} FPS; 4:2:0 chunks of 12, stacked {d['yuv420p_chunks_stacked']:.1f}"
              f" FPS, written into the chunk {d['yuv420p_chunks_into_chunk']:.1f} FPS "
              f"({d['into_chunk_vs_stacked']:.2f}x)", flush=True)
        save()
    e2e_cfgs = [("eager-fp32-cpucolour", "torch", "fp32", False, "medium"),
                ("auto-medium", "auto", "fp16", None, "medium"),
                ("auto-veryfast", "auto", "fp16", None, "veryfast"),
                ("auto-ultrafast", "auto", "fp16", None, "ultrafast")]
    if "e2e" not in skip:
        rows = e2e(model, device, clip, tmp, e2e_cfgs, args.e2e_rounds, f"{hd[0]}x{hd[1]}")
        results["e2e"] = rows
        save()
    if "4k" not in skip:
        clip4 = make_clip(tmp / "clip4k.mp4", args.frames_4k, uhd)
        rows = e2e(model, device, clip4, tmp, [e2e_cfgs[0], e2e_cfgs[3]], 1, f"{uhd[0]}x{uhd[1]}")
        results.setdefault("e2e", []).extend(rows)
        clip4.unlink()
        save()
    print_e2e(results.get("e2e", []))
    if "process" not in skip:
        rows = [whole_process(clip, tmp, p, args.frames) for p in args.process_presets.split(",")]
        results["process"] = rows
        for r in rows:
            print(f"whole process ({args.frames} frames, --preset {r['preset']}): {r['seconds']:.2f} s, "
                  f"{r['fps']:.1f} FPS rc={r['rc']} {r['stderr']}", flush=True)
        save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
