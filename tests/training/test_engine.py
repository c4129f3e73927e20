"""The training loop: smoke run, exact resume, DDP (2 gloo processes), init and freezing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rvmatte.errors import InputError
from rvmatte.training.engine import StepSampler, Trainer, latest_checkpoint, train

from .conftest import FIXTURES, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _quiet(msg):
    pass


def _fixed_batch_loss(trainer, batch):
    """Matting loss of one fixed batch (train-mode BatchNorm, on a copy: nothing changes)."""
    import copy
    from rvmatte.training.losses import matting_loss
    model = copy.deepcopy(trainer.model).train()
    fgr, pha, bgr = batch
    with torch.no_grad():
        out = model(fgr * pha + bgr * (1 - pha))
    return float(matting_loss(out.fgr, out.pha, fgr, pha)["total"])


def test_smoke_run_loss_falls(tmp_path):
    # From random init the clamped alpha starts at 0 everywhere and 16 tiny CPU steps barely
    # move it; starting from the bundled weights the fixed-batch loss drops ~9 % in 16 steps.
    cfg = tiny_config(tmp_path, max_steps=16, validate_every=16, valid_clips=2, image_log_every=8,
                      init="bundled", lr_backbone=5e-5, lr_aspp=1e-4, lr_decoder=1e-4)
    t = Trainer(cfg, log=_quiet)
    ds = t._matting_dataset(64, 3, train=False)
    batch = [torch.stack(x) for x in zip(*(ds[(i, 99)] for i in range(4)))]
    before = _fixed_batch_loss(t, batch)
    try:
        result = t.run()
    finally:
        t.close()
    after = _fixed_batch_loss(t, batch)
    assert result["steps"] == 16
    assert after < 0.95 * before, (before, after)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["tag"] == "train"]
    assert len(train_rows) == 16 and all(r["lr_total"] == r["lr_total"] for r in train_rows)
    # segmentation interleaved: video after even steps (step index 0, 2, ...), image after odd
    assert "seg_video_loss" in train_rows[0] and "seg_image_loss" in train_rows[1]
    valid = [r for r in rows if r["tag"] == "valid"]
    assert valid and {"mad", "mse"} <= set(valid[0])
    assert list((tmp_path / "tb").iterdir())  # TensorBoard events
    assert (tmp_path / "config.json").is_file()


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    full = Trainer(tiny_config(tmp_path / "a", max_steps=4, checkpoint_every=2), log=_quiet)
    full.run()
    ref = _params(full.model)
    # the same run, interrupted after 2 steps, then resumed in a fresh Trainer
    Trainer(tiny_config(tmp_path / "b", max_steps=2, checkpoint_every=2), log=_quiet).run()
    assert latest_checkpoint(tmp_path / "b").name == "step-00000002.pt"
    resumed = Trainer(tiny_config(tmp_path / "b", max_steps=4, checkpoint_every=2), resume=True,
                      log=_quiet)
    assert resumed.step == 2
    resumed.run()
    got = _params(resumed.model)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    a = torch.load(latest_checkpoint(tmp_path / "a"), weights_only=True)
    b = torch.load(latest_checkpoint(tmp_path / "b"), weights_only=True)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint found"):
        Trainer(tiny_config(tmp_path), resume=True, log=_quiet)


def test_step_sampler_shards_and_restarts():
    s0 = StepSampler(10, 2, seed=1, stream=1, rank=0, world_size=2)
    s1 = StepSampler(10, 2, seed=1, stream=1, rank=1, world_size=2)
    k0 = [k for b in range(5) for k in s0.batch_keys(b)]
    k1 = [k for b in range(5) for k in s1.batch_keys(b)]
    assert not set(k0) & set(k1)  # the ranks never share a sample
    assert len(k0) == len(k1) == 10  # batch 2 per rank, 5 steps
    # the ranks' first steps, in order, cover the 10 samples of the epoch once each
    first = [k for b in range(3) for r in (s0, s1) for k in r.batch_keys(b)][:10]
    assert sorted(i for i, _ in first) == list(range(10))
    late = StepSampler(10, 2, seed=1, stream=1, rank=0, world_size=2, start_batch=3)
    it = iter(late)
    assert [next(it) for _ in range(2)] == s0.batch_keys(3)


def test_dgf_preset_trains_only_the_refiner(tmp_path):
    cfg = tiny_config(tmp_path, preset="dgf", segmentation=False, size_hr_min=128,
                      size_hr_max=128, seq_length_hr=2, max_steps=2, lr_refiner=1e-2,
                      lr_backbone=0, lr_aspp=0, lr_decoder=0)
    t = Trainer(cfg, log=_quiet)
    before = _params(t.model)
    t.run()
    after = _params(t.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("refiner.") for k in changed)  # BN stats frozen too
    assert t.n_trainable == 808
    out = t.export_weights(tmp_path / "dgf.pth", only="refiner.")
    sd = torch.load(out, weights_only=True)
    assert sd and all(k.startswith("refiner.") for k in sd)


def test_init_from_bundled_weights(tmp_path):
    from rvmatte.weights import read_checkpoint, bundled_path
    cfg = tiny_config(tmp_path, preset="finetune", max_steps=1, segmentation=False)
    t = Trainer(cfg, log=_quiet)
    ref = read_checkpoint(bundled_path("mobilenetv3"))
    sd = t.model.state_dict()
    assert torch.equal(sd["backbone.features.0.0.weight"], ref["backbone.features.0.0.weight"])
    assert t.random_keys == []


def test_backbone_file_init(tmp_path):
    from torchvision.models import mobilenet_v3_large
    sd = mobilenet_v3_large().state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save(sd, path)
    t = Trainer(tiny_config(tmp_path / "run", backbone_weights=str(path), segmentation=False),
                log=_quiet)
    assert torch.equal(t.model.backbone.features[1].block[0][0].weight, sd["features.1.block.0.0.weight"])
    assert all(not k.startswith("backbone.") for k in t.random_keys)


def test_no_segmentation_data_is_a_clear_error(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.data.coco_panoptic = cfg.data.spd = cfg.data.youtubevis = None
    with pytest.raises(InputError, match="segmentation is on but no segmentation data"):
        Trainer(cfg, log=_quiet)


def test_bf16_autocast_runs(tmp_path):
    result = train(tiny_config(tmp_path, amp="bf16", max_steps=2, segmentation=False), log=_quiet)
    assert result["steps"] == 2 and result["last_loss"] == result["last_loss"]  # not NaN


def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "rvmatte", "train", "--preset", "stage1",
           "--synthetic", str(FIXTURES / "synthetic"), "--spd", str(FIXTURES / "spd"),
           "--youtubevis", str(FIXTURES / "youtubevis"), "--size", "64", "--seq-length", "2",
           "--max-steps", "3", "--workers", "0", "--threads", "1", "--out", str(out),
           "--set", "validate_every=0", "--set", "checkpoint_every=3", "--set", "log_every=1"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "world size 2" in p.stderr
    ckpt = torch.load(latest_checkpoint(out), weights_only=True)
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["tag"] == "train"] == [1, 2, 3]  # rank 0 only


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage3", "stage4", "finetune"])
def test_every_preset_runs_at_smoke_scale(name, tmp_path):
    """Each preset's structure at 64/128 px, 2 steps: its passes and datasets; the modules
    its learning rates freeze (lr 0: parameters and BatchNorm statistics unchanged, no
    gradient) and train (changed); its initialisation (``init=None``: the seeded random
    network; ``"bundled"``: the shipped weights, the refiner at its init), before any step."""
    data = {"matting": {"stage4": "imagematte", "finetune": "videomatte"}.get(name, "synthetic"),
            "imagematte_train": str(FIXTURES / "imagematte"),
            "videomatte_train": str(FIXTURES / "videomatte"),
            "background_images_train": str(FIXTURES / "backgrounds"),
            "background_videos_train": str(FIXTURES / "background_videos"),
            "synthetic_train": str(FIXTURES / "synthetic"), "num_workers": 0,
            "coco_panoptic": str(FIXTURES / "coco_panoptic"), "spd": str(FIXTURES / "spd"),
            "youtubevis": str(FIXTURES / "youtubevis")}
    from rvmatte.models import build_model
    from rvmatte.training.config import PRESETS
    from rvmatte.training.engine import _group
    from rvmatte.weights import bundled_path, read_checkpoint

    p = PRESETS[name]
    cfg = tiny_config(tmp_path, preset=name, max_steps=2, size_hr_min=128, size_hr_max=128,
                      seq_length_hr=2, data=data, lr_backbone=p.lr_backbone, lr_aspp=p.lr_aspp,
                      lr_decoder=p.lr_decoder)
    if not p.segmentation:
        cfg.data.coco_panoptic = cfg.data.spd = cfg.data.youtubevis = None
    t = Trainer(cfg, log=_quiet)
    lrs = {"backbone": p.lr_backbone, "aspp": p.lr_aspp, "decoder": p.lr_decoder,
           "refiner": p.lr_refiner}
    prefixes = {"backbone": ("backbone.",), "aspp": ("aspp.",), "refiner": ("refiner.",),
                "decoder": ("decoder.", "project_mat.", "project_seg.")}
    assert t.model.refiner_name == p.refiner
    groups = {g: mods for g, mods in _group(t.model).items() if g in lrs}
    for g, mods in groups.items():  # lr 0 freezes, a learning rate trains
        params = [x for m in mods for x in m.parameters()]
        assert all(x.requires_grad == (lrs[g] > 0) for x in params), g
        assert all((m in t.frozen) == (lrs[g] == 0) for m in mods), g
    # the start: the seeded random network, or the shipped weights (refiner at its init)
    torch.manual_seed(cfg.seed)
    fresh = build_model(variant=cfg.variant, refiner=cfg.refiner).state_dict()
    start = dict(fresh)
    if p.init == "bundled":
        shipped = read_checkpoint(bundled_path(cfg.variant))
        start.update({k: v for k, v in shipped.items() if k in start})
    assert p.init in (None, "bundled")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    assert all(torch.equal(before[k], start[k]) for k in start)
    try:
        result = t.run()
    finally:
        t.close()
    assert result["steps"] == 2 and result["last_loss"] == result["last_loss"]
    after = torch.load(latest_checkpoint(tmp_path), weights_only=True)["model"]
    for g, pre in prefixes.items():
        keys = [k for k in before if k.startswith(pre) and before[k].is_floating_point()]
        if not keys:
            continue  # the Fast Guided Filter has no parameters
        moved = {k: float((after[k] - before[k]).abs().max()) for k in keys}
        if lrs[g] == 0:  # frozen: weights and BatchNorm statistics as they started
            assert max(moved.values()) == 0, (g, max(moved, key=moved.get))
        else:
            assert max(moved.values()) > 0, g
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert ("hr_total" in rows[-1]) == p.train_hr
