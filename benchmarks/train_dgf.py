"""Train the missing Deep Guided Filter on top of the frozen bundled MobileNetV3 weights.

    python benchmarks/train_dgf.py --media ../shared/media --out runs/dgf --minutes 20

Builds a synthetic matting root from the shared developer media (see its MANIFEST.md) that is
*disjoint* from the high-resolution clips of ``benchmarks/default_benchmark.json`` (those use
p3m_portrait1/2 over desert/city/office): foregrounds p3m_portrait3 (P3M-Net predicted alpha),
comp1k_feathers and comp1k_crop0-4 (ground-truth alpha); backgrounds building_atrium and the
handheld background plate. Then runs the ``dgf`` preset (only ``refiner.*`` trains; the rest is
frozen, BatchNorm statistics included) and writes

    OUT/dgf_full.pth       full model state dict (MobileNetV3 + DGF) for `--weights`
    OUT/dgf_refiner.pth    only the ``refiner.*`` keys (808 parameters + BN buffers)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from rvmatte.training.config import apply_overrides, preset
from rvmatte.training.engine import Trainer

FOREGROUNDS = [("p3m_portrait3", "p3m_portrait3_image.jpg", "p3m_portrait3_alpha_predicted.png"),
               ("feathers", "comp1k_feathers_image.png", "comp1k_feathers_alpha.png")] + [
    (f"comp1k_crop{i}", f"comp1k_crop{i}_image.png", f"comp1k_crop{i}_alpha.png") for i in range(5)]
BACKGROUNDS = ["background_building_atrium_1920x1080.png",
               "handheld_woman_curly_hair_background_plate.png"]


def build_root(media: Path, root: Path) -> Path:
    for sub in ("fgr", "pha", "backgrounds"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, img, pha in FOREGROUNDS:
        shutil.copyfile(media / img, root / "fgr" / f"{name}{Path(img).suffix}")
        shutil.copyfile(media / pha, root / "pha" / f"{name}.png")
    for b in BACKGROUNDS:
        shutil.copyfile(media / b, root / "backgrounds" / b)
    return root


def distill_from_fgf(trainer: Trainer, minutes: float, lr: float = 1e-3) -> None:
    """Warm start: fit the DGF's output to the parameter-free Fast Guided Filter's on the same
    inputs (L1 on alpha and foreground residual). Uses the HR data stream's own samples."""
    import time
    from torch.nn import functional as F
    from rvmatte.models.guided_filter import FastGuidedFilterRefiner
    from rvmatte.models.matting import downsample

    model, cfg = trainer.model, trainer.cfg
    fgf = FastGuidedFilterRefiner()
    opt = torch.optim.Adam(model.refiner.parameters(), lr=lr)
    trainer._set_train_mode()  # frozen parts in eval mode, the refiner in train mode
    start, n = time.monotonic(), 0
    while time.monotonic() - start < minutes * 60:
        fgr, pha, bgr = trainer._to_device(*next(trainer.hr_iter))
        rng = np.random.default_rng([7, n])
        fgr, pha, bgr = trainer._random_crop(rng, cfg.size_hr_min, cfg.size_hr_max, fgr, pha, bgr)
        src = fgr * pha + bgr * (1 - pha)
        with torch.no_grad():
            src_sm = downsample(src, cfg.downsample_ratio)
            hid, _ = model._decode(src_sm, None)
            res, alpha = model.project_mat(hid).split([3, 1], dim=-3)
            t_res, t_pha = fgf(src, src_sm, res, alpha)
        p_res, p_pha = model.refiner(src, src_sm, res, alpha, hid)
        loss = F.l1_loss(p_pha, t_pha) + F.l1_loss(p_res, t_res)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
        if n % 10 == 0:
            print(f"distill step {n} l1 {loss.item():.4f}", flush=True)
    print(f"distilled {n} steps in {minutes} min", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", default=str(Path(__file__).resolve().parents[2] / "shared" / "media"))
    ap.add_argument("--out", default="runs/dgf")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--lr", type=float, default=1e-3, help="refiner lr (paper: 2e-4 over a full epoch)")
    ap.add_argument("--size-min", type=int, default=768)
    ap.add_argument("--size-max", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--distill-minutes", type=float, default=0.0,
                    help="first teach the DGF to reproduce the Fast Guided Filter (no labels), "
                         "then train on ground truth for the rest of --minutes")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    root = build_root(Path(a.media), out / "data")
    cfg = preset("dgf")
    apply_overrides(cfg, {"data": {"synthetic_train": str(root), "num_workers": a.workers},
                          "lr_refiner": a.lr, "size_hr_min": a.size_min, "size_hr_max": a.size_max,
                          "max_steps": a.steps, "time_limit_min": a.minutes, "log_every": 10,
                          "checkpoint_every": 50, "validate_every": 0, "image_log_every": 100,
                          "out_dir": str(out)})
    trainer = Trainer(cfg, resume=a.resume and bool(list((out / "checkpoints").glob("*.pt"))),
                      device=a.device)
    try:
        if a.distill_minutes > 0 and trainer.step == 0:
            distill_from_fgf(trainer, a.distill_minutes)
            trainer.export_weights(out / "dgf_distilled_full.pth")
            trainer.cfg.time_limit_min = max(0.5, a.minutes - a.distill_minutes)
        result = trainer.run()
        trainer.export_weights(out / "dgf_full.pth")
        trainer.export_weights(out / "dgf_refiner.pth", only="refiner.")
    finally:
        trainer.close()
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
