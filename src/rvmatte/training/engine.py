"""The training loop: single process or ``torchrun`` (PyTorch DDP; NCCL on GPU, gloo on CPU).

One *iteration* (= one step of the position counter) is, as in the paper and the official
code: a low-resolution matting pass, optionally a high-resolution pass through the Deep
Guided Filter, then a segmentation pass — video segmentation after even steps, image
segmentation (T'=1, B'=B*T) after odd ones — each with its own optimizer step.

Exact resume: every sample is a pure function of ``(seed, stream, position)`` (see
:class:`StepSampler` and :func:`rvmatte.training.data.common.key_rng`), random crops are
seeded by ``(seed, step, rank)``, and checkpoints hold model, optimizer, grad scaler, RNG
states and the position. Resuming therefore reproduces an uninterrupted run bit for bit (on
the same hardware, thread count and world size).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch import distributed as dist
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler

from ..errors import InputError, WeightsError
from ..models import MattingNetwork, build_model, guidance_inputs
from . import augment as A
from . import data as D
from .config import TrainConfig, to_dict
from .guidance import synthesize
from .losses import matting_loss, segmentation_loss

__all__ = ["Trainer", "StepSampler", "train", "latest_checkpoint", "load_init_weights"]

_STREAMS = {"lr": 1, "hr": 2, "seg_video": 3, "seg_image": 4}


# ----------------------------------------------------------------------------- sampling


class StepSampler(Sampler):
    """An endless, seeded stream of dataset keys, sharded over ranks, startable anywhere.

    Item ``j`` of the global stream is index ``perm_e[j % n]`` of epoch ``e = j // n`` (a fresh
    permutation per epoch, seeded by ``(seed, stream, e)``) with sample seed ``(seed, stream,
    j)``. Batch ``k`` of rank ``r`` is items ``(k*W + r)*B ... + B - 1``.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, stream: int, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0, shuffle: bool = True) -> None:
        if n <= 0:
            raise InputError("a training dataset is empty")
        self.n, self.B, self.seed, self.stream = n, batch_size, seed, stream
        self.rank, self.W, self.start, self.shuffle = rank, world_size, start_batch, shuffle
        self._perm: tuple[int, Optional[np.ndarray]] = (-1, None)

    def _index(self, j: int) -> int:
        e, i = divmod(j, self.n)
        if not self.shuffle:
            return i
        if self._perm[0] != e:
            self._perm = (e, np.random.default_rng([self.seed, self.stream, e]).permutation(self.n))
        return int(self._perm[1][i])

    def batch_keys(self, k: int) -> list[tuple[int, int]]:
        first = (k * self.W + self.rank) * self.B
        return [(self._index(j), (self.seed * 1_000_003 + self.stream) * 2 ** 31 + j)
                for j in range(first, first + self.B)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        k = self.start
        while True:
            yield from self.batch_keys(k)
            k += 1


class _Concat(torch.utils.data.Dataset):
    """Concatenation that passes ``(index, seed)`` keys through."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key):
        idx, seed = key if isinstance(key, (tuple, list)) else (key, key)
        i = int(np.searchsorted(self.offsets, idx, side="right")) - 1
        return self.datasets[i][(int(idx - self.offsets[i]), seed)]


def _collate_images(batch):
    """Image-segmentation items (1,3,S,S) -> (B*T, 1, 3, S, S): T'=1, B'=B*T."""
    imgs, segs = zip(*batch)
    return torch.stack(imgs), torch.stack(segs)


# ----------------------------------------------------------------------------- model glue


class _Wrapper(nn.Module):
    """One ``forward`` for both passes so DDP sees matting and segmentation calls."""

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, downsample_ratio: float = 1.0, segmentation: bool = False,
                **guidance: Tensor):
        if segmentation:
            return self.model.segment(src, downsample_ratio=downsample_ratio).seg
        out = self.model(src, downsample_ratio=downsample_ratio, **guidance)
        return out.fgr, out.pha


def load_init_weights(model: MattingNetwork, init: Optional[str],
                      backbone_weights: Optional[str] = None) -> list[str]:
    """Initialise from the bundled weights (``"bundled"``), a checkpoint path, and/or a
    torchvision ImageNet backbone state-dict file. Returns the keys left at random init."""
    from ..weights import bundled_path, read_checkpoint

    missing: list[str] = [k for k in model.state_dict()]
    kept_init = ("refiner.", "guidance.")  # missing from a checkpoint: kept at their init
    if backbone_weights:
        sd = read_checkpoint(backbone_weights)
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "fc."))}
        sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
        try:
            res = model.backbone.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            raise WeightsError(f"backbone weights {backbone_weights} do not fit the "
                               f"{model.variant} encoder: {' '.join(str(e).split())[:300]}") from None
        if res.missing_keys:
            raise WeightsError(f"backbone weights {backbone_weights} lack {len(res.missing_keys)} "
                               f"{model.variant} keys, e.g. {res.missing_keys[0]!r} (expected a "
                               "torchvision ImageNet state dict)")
        loaded = {"backbone." + k for k in sd} & set(missing)
        missing = [k for k in missing if k not in loaded]
    if init:
        path = bundled_path(model.variant) if init in ("bundled", "default") else init
        sd = read_checkpoint(path)
        if model.refiner_name == "fast_guided_filter":
            sd = {k: v for k, v in sd.items() if not k.startswith("refiner.")}
        if model.guidance is None:  # a guided checkpoint without its inputs: the same network
            sd = {k: v for k, v in sd.items() if not k.startswith("guidance.")}
        try:
            res = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            raise WeightsError(f"weights {path} do not fit the {model.variant} model: "
                               f"{' '.join(str(e).split())[:300]}") from None
        bad = [k for k in res.missing_keys if not k.startswith(kept_init)] + list(res.unexpected_keys)
        if bad:
            raise WeightsError(f"weights {path} do not fit the {model.variant} model "
                               f"(e.g. key {bad[0]!r})")
        missing = list(res.missing_keys)
    return missing


def _group(model: MattingNetwork) -> dict[str, list[nn.Module]]:
    return {"backbone": [model.backbone], "aspp": [model.aspp],
            "decoder": [model.decoder, model.project_mat, model.project_seg],
            "refiner": [model.refiner],
            "guidance": [model.guidance] if model.guidance is not None else []}


def latest_checkpoint(out_dir: str | os.PathLike) -> Optional[Path]:
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return None
    ckpts = sorted(d.glob("step-*.pt"))
    return ckpts[-1] if ckpts else None


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _clip_scores(metrics, p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """One clip's mean scores, predicted alpha ``p`` against true ``t`` (both (T, H, W))."""
    if metrics is not None:
        scorer = metrics.ClipScorer(metrics=("mad", "mse", "grad", "dtssd"))
        for k in range(p.shape[0]):
            scorer.add(p[k], t[k])
        return scorer.means()
    # paper scaling: MAD, MSE x 1e3
    return {"mad": float(np.abs(p - t).mean() * 1e3), "mse": float(((p - t) ** 2).mean() * 1e3)}


def _metrics_module():
    try:
        from .. import metrics  # needs scipy (the train and eval extras)
        return metrics
    except ImportError:
        return None


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Builds data, model, optimizer from a :class:`TrainConfig` and runs it.

    ``resume``: ``False``, ``True`` (latest checkpoint in ``cfg.out_dir``) or a path.
    ``device``: ``None`` picks CUDA (``cuda:LOCAL_RANK``) when available, else CPU.
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool | str = False,
                 device: Optional[str] = None, log=print) -> None:
        self.cfg = cfg
        self._log = log
        self._check_config()
        self._init_distributed(device)
        self.out = Path(cfg.out_dir)
        if self.rank == 0:
            (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.step = 0
        self._init_model()
        ckpt = None
        if resume:
            path = latest_checkpoint(self.out) if resume is True else Path(resume)
            if path is None or not Path(path).is_file():
                raise InputError(f"--resume: no checkpoint found in {self.out / 'checkpoints'}"
                                 if resume is True else f"--resume: checkpoint not found: {resume}")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            self._restore(ckpt, path)
        self._init_data()
        self.writer = None
        self._jsonl = None

    # -- setup -----------------------------------------------------------------------------

    def _check_config(self) -> None:
        c = self.cfg
        if c.amp not in ("none", "bf16", "fp16"):
            raise InputError(f"amp must be none, bf16 or fp16, got {c.amp!r}")
        if not c.train_lr_pass and not c.train_hr:
            raise InputError("nothing to train: train_lr_pass and train_hr are both off")
        if c.size_lr_min > c.size_lr_max or c.size_hr_min > c.size_hr_max:
            raise InputError("size_*_min must not exceed size_*_max")
        if c.train_hr and min(c.size_hr_min * c.downsample_ratio, c.size_lr_min) < 32:
            raise InputError("sizes too small: the network needs >= 32 px at working resolution")
        try:
            self.guidance = guidance_inputs(c.guidance)
        except ValueError as e:
            raise InputError(f"config key 'guidance': {e}") from None

    def _init_distributed(self, device: Optional[str]) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        elif device == "cuda":
            device = f"cuda:{local}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def _init_model(self) -> None:
        c = self.cfg
        torch.manual_seed(c.seed)  # same random init on every rank
        model = build_model(variant=c.variant, refiner=c.refiner, guidance=self.guidance)
        self.random_keys = load_init_weights(model, c.init, c.backbone_weights)
        lrs = {"backbone": c.lr_backbone, "aspp": c.lr_aspp, "decoder": c.lr_decoder,
               "refiner": c.lr_refiner, "guidance": c.lr_guidance}
        self.frozen: list[nn.Module] = []
        groups = []
        for name, mods in _group(model).items():
            params = [p for m in mods for p in m.parameters()]
            if lrs[name] > 0:
                if params:
                    groups.append({"params": params, "lr": lrs[name], "name": name})
            else:
                for p in params:
                    p.requires_grad_(False)
                self.frozen += mods
        if not groups:
            raise InputError("every learning rate is 0 (or the trainable modules have no "
                             "parameters): nothing to train")
        cuda = self.device.type == "cuda"
        if cuda and self.distributed and c.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if cuda and c.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = torch.optim.Adam(groups, **({"fused": True} if cuda else {}))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.amp == "fp16")
        wrapper: nn.Module = _Wrapper(model)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            wrapper = DDP(wrapper, device_ids=[self.device.index] if cuda else None,
                          broadcast_buffers=False, find_unused_parameters=True)
        if c.compile:
            wrapper = torch.compile(wrapper)
        self.net = wrapper
        self.n_trainable = sum(p.numel() for g in groups for p in g["params"])

    def _restore(self, ckpt: dict, path) -> None:
        if ckpt.get("world_size", 1) != self.world_size:
            self.log(f"warning: checkpoint was written with world size {ckpt.get('world_size')}, "
                     f"now {self.world_size}: the data order changes (resume is not exact)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.log(f"resumed from {path} at step {self.step}")

    def _backgrounds(self, size: int, split: str) -> Optional[D.Backgrounds]:
        d = self.cfg.data
        img = getattr(d, f"background_images_{split}")
        vid = getattr(d, f"background_videos_{split}")
        if img is None and vid is None:
            return None
        return D.Backgrounds(D.BackgroundImages(img, size) if img else None,
                             D.BackgroundVideos(vid, size, d.background_video_frames) if vid else None)

    def _matting_dataset(self, size: int, T: int, train: bool, hr: bool = False):
        c, d = self.cfg, self.cfg.data
        split = "train" if train else "valid"
        sampler = A.FrameSampler(train=train)
        kind = d.matting
        augment = train and c.augment
        if kind == "synthetic":
            root = d.synthetic_train if train else (d.synthetic_valid or d.synthetic_train)
            if root is None:
                raise InputError("data.matting is 'synthetic' but data.synthetic_train is not set")
            aug = A.imagematte_augmentation((size, size), augment)
            return D.SyntheticMatteDataset(root, size, T, aug, sampler, self._backgrounds(size, split))
        bgr = self._backgrounds(size, split)
        if kind == "videomatte":
            root = getattr(d, f"videomatte_{split}")
            if hr and train and d.videomatte_hr_train:
                root = d.videomatte_hr_train
            aug = A.videomatte_augmentation((size, size), augment)
            cls = D.VideoMatteDataset
        elif kind == "imagematte":
            root = getattr(d, f"imagematte_{split}")
            aug = A.imagematte_augmentation((size, size), augment)
            cls = D.ImageMatteDataset
        else:
            raise InputError(f"data.matting must be videomatte, imagematte or synthetic, got {kind!r}")
        if root is None:
            if not train:
                return None
            raise InputError(f"data.matting is {kind!r} but data.{kind}_train is not set")
        from .data.common import require_dir
        from .data.matting import IMAGEMATTE_LAYOUT, VIDEOMATTE_LAYOUT
        require_dir(root, "VideoMatte240K" if kind == "videomatte" else "ImageMatte",
                    VIDEOMATTE_LAYOUT if kind == "videomatte" else IMAGEMATTE_LAYOUT)
        if bgr is None:
            raise InputError(f"no backgrounds for the {split} split: set "
                             f"data.background_images_{split} and/or data.background_videos_{split}")
        return cls(root, bgr, size, T, aug, sampler)

    def _loader(self, ds, batch_size: int, stream: str, start_batch: int, collate=None):
        c = self.cfg
        sampler = StepSampler(len(ds), batch_size, seed=c.seed, stream=_STREAMS[stream],
                              rank=self.rank, world_size=self.world_size, start_batch=start_batch)
        nw = c.data.num_workers
        return iter(DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=nw,
                               pin_memory=self.device.type == "cuda", collate_fn=collate,
                               persistent_workers=nw > 0, prefetch_factor=2 if nw > 0 else None))

    def _init_data(self) -> None:
        c, d = self.cfg, self.cfg.data
        B, s = c.batch_size, self.step
        self.lr_iter = self.hr_iter = self.seg_video_iter = self.seg_image_iter = None
        ref = None
        if c.train_lr_pass:
            ref = self._matting_dataset(c.size_lr_max, c.seq_length_lr, True)
            self.lr_iter = self._loader(ref, B, "lr", s)
        if c.train_hr:
            hr = self._matting_dataset(c.size_hr_max, c.seq_length_hr, True, hr=True)
            self.hr_iter = self._loader(hr, B, "hr", s)
            ref = ref or hr
        self.steps_per_epoch = max(1, len(ref) // (B * self.world_size))
        self.total_steps = c.max_steps if c.max_steps is not None else \
            max(1, math.ceil(c.epochs * self.steps_per_epoch))
        if c.segmentation:
            size = c.size_lr_max
            img_sets = []
            if d.coco_panoptic:
                img_sets.append(D.CocoPanopticDataset(d.coco_panoptic, size, A.SegmentationAugmentation(
                    (size, size), jitter=(0.1, 0.1, 0.1, 0.1))))
            if d.spd:
                img_sets.append(D.SuperviselyPersonDataset(d.spd, size, A.SegmentationAugmentation(
                    (size, size), jitter=(0.1, 0.1, 0.1, 0.1))))
            if img_sets:
                ds = img_sets[0] if len(img_sets) == 1 else _Concat(img_sets)
                # image segmentation follows odd steps: batch k is used at step 2k+1
                # only one stream configured: it serves every step
                start = s // 2 if d.youtubevis else s
                self.seg_image_iter = self._loader(ds, B * c.seq_length_lr, "seg_image", start,
                                                   _collate_images)
            if d.youtubevis:
                ds = D.YouTubeVISDataset(d.youtubevis, size, c.seq_length_lr,
                                         A.SegmentationAugmentation((size, size)),
                                         A.FrameSampler(speeds=(1,)))
                self.seg_video_iter = self._loader(ds, B, "seg_video",
                                                   (s + 1) // 2 if img_sets else s)
            if self.seg_image_iter is None and self.seg_video_iter is None:
                raise InputError("segmentation is on but no segmentation data is set: give "
                                 "data.coco_panoptic / data.spd / data.youtubevis, or set "
                                 "segmentation=false")
        self.valid = None
        if self.rank == 0 and c.validate_every > 0:
            hr_only = not c.train_lr_pass
            size = c.size_hr_max if hr_only else c.size_lr_max
            T = c.seq_length_hr if hr_only else min(c.seq_length_lr, 8)
            self.valid = self._matting_dataset(size, T, False)
            self.valid_ratio = c.downsample_ratio if hr_only else 1.0

    # -- logging -----------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.rank == 0 and self._log:
            self._log(msg)

    def _record(self, entry: dict) -> None:
        if self.rank != 0:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tb"))
            self._jsonl = open(self.out / "metrics.jsonl", "a")
        tag = entry.get("tag", "train")
        for k, v in entry.items():
            if isinstance(v, (int, float)) and k not in ("step", "time"):
                self.writer.add_scalar(f"{tag}/{k}", v, entry["step"])
        self._jsonl.write(json.dumps(entry) + "\n")
        self._jsonl.flush()

    # -- one pass ------------------------------------------------------------------------------

    def _crop_gen(self, tag: str, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, self.step, self.rank, _STREAMS[tag], *salt])

    @staticmethod
    def _random_crop(rng: np.random.Generator, lo: int, hi: int, *xs: Tensor) -> list[Tensor]:
        """Random h, w in [lo, hi] (paper: h, w ~ (256, 512)): resize the square to max(h, w),
        centre-crop h x w. Same crop for every tensor."""
        h, w = (int(rng.integers(lo, hi + 1)) for _ in range(2))
        s = max(h, w)
        out = []
        for x in xs:
            lead = x.shape[:2]
            y = x.flatten(0, 1)
            if y.shape[-1] != s or y.shape[-2] != s:
                y = F.interpolate(y, (s, s), mode="bilinear", align_corners=False)
            top, left = (s - h) // 2, (s - w) // 2
            out.append(y[..., top:top + h, left:left + w].unflatten(0, lead))
        return out

    def _to_device(self, *xs: Tensor) -> list[Tensor]:
        return [x.to(self.device, non_blocking=True) for x in xs]

    def _autocast(self):
        c = self.cfg
        if c.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if c.amp == "bf16" else torch.float16)

    def _optimize(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _matting_pass(self, batch, tag: str, ratio: float) -> dict[str, Tensor]:
        c = self.cfg
        lo, hi = (c.size_hr_min, c.size_hr_max) if tag == "hr" else (c.size_lr_min, c.size_lr_max)
        fgr, pha, bgr = self._to_device(*batch)
        fgr, pha, bgr = self._random_crop(self._crop_gen(tag), lo, hi, fgr, pha, bgr)
        src = fgr * pha + bgr * (1 - pha)
        guidance = {}
        if self.guidance:  # the plate from this composite's background, the mask from its alpha
            guidance = synthesize(self._crop_gen(tag, 1), bgr, pha, self.guidance,
                                  c.guidance_synthesis)
        with self._autocast():
            pred_fgr, pred_pha = self.net(src, downsample_ratio=ratio, **guidance)
        loss = matting_loss(pred_fgr, pred_pha, fgr, pha)
        self._optimize(loss["total"])
        if self.rank == 0 and c.image_log_every and self.step % c.image_log_every == 0:
            self._log_images(tag, src, pred_pha, pha)
        return {k: v.detach() for k, v in loss.items()}

    def _seg_pass(self, batch, tag: str) -> Tensor:
        c = self.cfg
        img, seg = self._to_device(*batch)
        img, seg = self._random_crop(self._crop_gen(tag), c.size_lr_min, c.size_lr_max, img, seg)
        with self._autocast():
            pred = self.net(img, segmentation=True)
        loss = segmentation_loss(pred, seg)
        self._optimize(loss)
        return loss.detach()

    def _log_images(self, tag: str, src: Tensor, pred: Tensor, true: Tensor) -> None:
        if self.writer is None:
            self._record({"step": self.step, "tag": "info"})
        from torchvision.utils import make_grid
        T = src.shape[1]
        rows = torch.cat([src[0], pred[0].float().expand_as(src[0]), true[0].expand_as(src[0])])
        self.writer.add_image(f"{tag}/src_pred_true", make_grid(rows.detach().float().cpu(), nrow=T),
                              self.step)

    def _set_train_mode(self) -> None:
        self.model.train()
        for m in self.frozen:  # frozen modules keep their BatchNorm statistics
            m.eval()

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """MAD/MSE/Grad/dtSSD (rvmatte.metrics when scipy is installed, else MAD/MSE here).
        A guided network is scored without guidance and, as ``guided_*``, with synthesised
        guidance (seeded per clip, the same at every validation)."""
        if self.valid is None:
            return {}
        self.model.eval()
        metrics = _metrics_module()
        n = min(self.cfg.valid_clips, len(self.valid))
        clip_means = []
        for i in range(n):
            fgr, pha, bgr = (x[None].to(self.device) for x in self.valid[(i, 12345)])
            src = fgr * pha + bgr * (1 - pha)
            t = pha[0, :, 0].float().cpu().numpy()
            runs = {"": {}}
            if self.guidance:  # every input given (no clip or input left out)
                every = dataclasses.replace(self.cfg.guidance_synthesis, p_none=0.0, p_missing=0.0)
                runs["guided_"] = synthesize(np.random.default_rng([12345, i]), bgr, pha,
                                             self.guidance, every)
            scores = {}
            for prefix, guidance in runs.items():
                with self._autocast():
                    out = self.model(src, downsample_ratio=self.valid_ratio, **guidance)
                p = out.pha[0, :, 0].float().cpu().numpy()
                scores.update({prefix + k: v for k, v in _clip_scores(metrics, p, t).items()})
            clip_means.append(scores)
        self._set_train_mode()
        return {k: float(np.mean([m[k] for m in clip_means])) for k in clip_means[0]}

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> Optional[Path]:
        """Write ``checkpoints/step-XXXXXXXX.pt`` atomically (rank 0); keep the newest few."""
        path = None
        if self.rank == 0:
            d = self.out / "checkpoints"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"step-{self.step:08d}.pt"
            ckpt = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(), "rng": _rng_state(), "step": self.step,
                    "world_size": self.world_size, "config": json.dumps(to_dict(self.cfg))}
            tmp = path.with_suffix(".tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
            for old in sorted(d.glob("step-*.pt"))[:-max(1, self.cfg.keep_checkpoints)]:
                old.unlink()
        if self.distributed:
            dist.barrier()
        return path

    def export_weights(self, path: str | os.PathLike, only: Optional[str] = None) -> Path:
        """Save the model's state dict (or only keys starting with ``only``) for inference."""
        sd = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
              if only is None or k.startswith(only)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(sd, tmp)
        os.replace(tmp, path)
        return path

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        c = self.cfg
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(to_dict(c), indent=2))
        self.log(f"training {c.name}: {self.total_steps} steps ({self.steps_per_epoch} per epoch), "
                 f"{self.n_trainable:,} trainable parameters, world size {self.world_size}, "
                 f"device {self.device}, amp {c.amp}")
        self._set_train_mode()
        sums: dict[str, Tensor] = {}
        count = 0
        t0 = time.perf_counter()
        first_loss = last_loss = None
        start = time.monotonic()
        try:
            while self.step < self.total_steps:
                losses: dict[str, Tensor] = {}
                if self.lr_iter is not None:
                    for k, v in self._matting_pass(next(self.lr_iter), "lr", 1.0).items():
                        losses[f"lr_{k}"] = v
                if self.hr_iter is not None:
                    for k, v in self._matting_pass(next(self.hr_iter), "hr", c.downsample_ratio).items():
                        losses[f"hr_{k}"] = v
                seg_iter = self.seg_video_iter if self.step % 2 == 0 else self.seg_image_iter
                if seg_iter is None:
                    seg_iter = self.seg_video_iter if self.seg_video_iter is not None else self.seg_image_iter
                if seg_iter is not None:
                    tag = "seg_video" if seg_iter is self.seg_video_iter else "seg_image"
                    losses[f"{tag}_loss"] = self._seg_pass(next(seg_iter), tag)
                for k, v in losses.items():  # running sums stay on the device: no sync here
                    sums[k] = sums.get(k, 0) + v
                count += 1
                self.step += 1
                if self.step % c.log_every == 0 or self.step == self.total_steps or self.step == 1:
                    dt = time.perf_counter() - t0
                    entry = {"step": self.step, "tag": "train", "time": time.time(),
                             "s_per_iter": dt / count}
                    entry.update({k: float(v) / count for k, v in sums.items()})
                    frames = c.batch_size * self.world_size * (
                        (c.seq_length_lr if c.train_lr_pass else 0) + (c.seq_length_hr if c.train_hr else 0))
                    entry["frames_per_s"] = frames * count / dt
                    total_key = "lr_total" if "lr_total" in entry else "hr_total"
                    last_loss = entry.get(total_key)
                    first_loss = last_loss if first_loss is None else first_loss
                    self._record(entry)
                    self.log(f"step {self.step}/{self.total_steps} loss {last_loss:.4f} "
                             f"{entry['s_per_iter']:.3f} s/iter")
                    sums, count, t0 = {}, 0, time.perf_counter()
                    if self._out_of_time(start):
                        self.log(f"time limit of {c.time_limit_min} min reached at step {self.step}")
                        self.total_steps = self.step
                if c.validate_every and (self.step % c.validate_every == 0
                                         or self.step == self.total_steps):
                    if self.rank == 0:
                        v = self.validate()
                        if v:
                            self._record({"step": self.step, "tag": "valid", "time": time.time(), **v})
                            self.log("valid " + " ".join(f"{k} {x:.3f}" for k, x in v.items()))
                    if self.distributed:
                        dist.barrier()
                if self.step % c.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.log(f"interrupted at step {self.step}: saving a checkpoint")
            self.save_checkpoint()
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
                self._jsonl.close()
                self.writer = None
        return {"steps": self.step, "first_loss": first_loss, "last_loss": last_loss,
                "checkpoint": str(latest_checkpoint(self.out)) if self.rank == 0 else None}

    def _out_of_time(self, start: float) -> bool:
        """Checked at logging steps only (one tiny all-reduce there, none elsewhere)."""
        limit = self.cfg.time_limit_min
        if not limit:
            return False
        flag = torch.tensor([float(time.monotonic() - start > limit * 60)], device=self.device)
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: TrainConfig, *, resume: bool | str = False, device: Optional[str] = None,
          log=print) -> dict[str, Any]:
    """Run a whole training job; returns ``{"steps", "first_loss", "last_loss", "checkpoint"}``."""
    trainer = Trainer(cfg, resume=resume, device=device, log=log)
    try:
        return trainer.run()
    finally:
        trainer.close()
