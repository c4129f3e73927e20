"""Training-step speed: seconds per iteration, frames/s and peak memory of the matting steps of
stage 1, 2 and 3, with and without mixed precision, on random data (as the official numbers
in issue 6 were measured).

    python benchmarks/train_speed.py                       # CPU: tiny sizes, a smoke of the script
    python benchmarks/train_speed.py --device cuda         # GPU: the paper's sizes, B=4
    python benchmarks/train_speed.py --device cuda --compile --json speed.json

GPU sizes (B=4, MobileNetV3): stage 1 = 512x512, T=15; stage 2 = 512x512, T=50;
stage 3 HR = 2048x2048, T=6, downsample 0.25, Deep Guided Filter. Each step is the engine's
matting step: composite, forward, loss, backward, Adam step (fused on CUDA), channels_last,
bf16/fp16 autocast (fp16 with a GradScaler). Peak memory: ``torch.cuda.max_memory_allocated``
on GPU, peak RSS growth of the process on CPU (approximate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time

import torch

from rvmatte.models import build_model
from rvmatte.training.losses import matting_loss

GPU_STEPS = {  # name -> (T, size, downsample ratio, lr per module)
    "stage1": (15, 512, 1.0, dict(backbone=1e-4, aspp=2e-4, decoder=2e-4, refiner=0.0)),
    "stage2": (50, 512, 1.0, dict(backbone=5e-5, aspp=1e-4, decoder=1e-4, refiner=0.0)),
    "stage3_hr": (6, 2048, 0.25, dict(backbone=1e-5, aspp=1e-5, decoder=1e-5, refiner=2e-4)),
}
CPU_STEPS = {
    "stage1": (3, 64, 1.0, GPU_STEPS["stage1"][3]),
    "stage2": (6, 64, 1.0, GPU_STEPS["stage2"][3]),
    "stage3_hr": (2, 256, 0.25, GPU_STEPS["stage3_hr"][3]),
}


def _optimizer(model, lrs, fused):
    groups = []
    mods = {"backbone": [model.backbone], "aspp": [model.aspp],
            "decoder": [model.decoder, model.project_mat, model.project_seg],
            "refiner": [model.refiner]}
    for name, ms in mods.items():
        params = [p for m in ms for p in m.parameters()]
        if lrs[name] > 0 and params:
            groups.append({"params": params, "lr": lrs[name]})
        else:
            for p in params:
                p.requires_grad_(False)
    return torch.optim.Adam(groups, **({"fused": True} if fused else {}))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name, T, size, ratio, lrs, *, device, amp, batch, steps, warmup, compile_model,
            variant) -> dict:
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(variant=variant, refiner="deep_guided_filter").to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, lrs, fused=cuda)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    net = torch.compile(model) if compile_model else model
    g = torch.Generator(device=device).manual_seed(0)
    fgr = torch.rand(batch, T, 3, size, size, device=device, generator=g)
    pha = torch.rand(batch, T, 1, size, size, device=device, generator=g)
    bgr = torch.rand(batch, T, 3, size, size, device=device, generator=g)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp != "none" else contextlib.nullcontext())

    def step():
        src = fgr * pha + bgr * (1 - pha)
        with ctx:
            out = net(src, downsample_ratio=ratio)
        loss = matting_loss(out.fgr, out.pha, fgr, pha)["total"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = _rss_mib()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda
            else (_rss_mib() - rss0) / 1024)
    return {"step": name, "amp": amp, "batch": batch, "T": T, "size": size, "ratio": ratio,
            "s_per_iter": dt, "frames_per_s": batch * T / dt, "peak_gib": peak,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "compile": compile_model}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, CPU 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (GPU 3, CPU 1)")
    ap.add_argument("--batch", type=int, default=None, help="clips per step (GPU 4, CPU 1)")
    ap.add_argument("--only", default=None, help="comma-separated: stage1,stage2,stage3_hr")
    ap.add_argument("--amp", default="none,bf16", help="comma-separated: none,bf16,fp16")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--variant", default="mobilenetv3")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    table = GPU_STEPS if cuda else CPU_STEPS
    names = a.only.split(",") if a.only else list(table)
    rows = []
    print(f"{'step':10s} {'amp':5s} {'B':>2s} {'T':>3s} {'size':>5s} {'s/iter':>8s} {'frames/s':>9s} "
          f"{'peak GiB':>9s}", flush=True)
    for name in names:
        T, size, ratio, lrs = table[name]
        for amp in a.amp.split(","):
            try:
                r = measure(name, T, size, ratio, lrs, device=device, amp=amp,
                            batch=a.batch or (4 if cuda else 1), steps=a.steps or (10 if cuda else 2),
                            warmup=a.warmup if a.warmup is not None else (3 if cuda else 1),
                            compile_model=a.compile, variant=a.variant)
            except torch.OutOfMemoryError:
                print(f"{name:10s} {amp:5s} out of memory", flush=True)
                torch.cuda.empty_cache()
                continue
            rows.append(r)
            print(f"{name:10s} {amp:5s} {r['batch']:2d} {T:3d} {size:5d} {r['s_per_iter']:8.3f} "
                  f"{r['frames_per_s']:9.1f} {r['peak_gib']:9.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
