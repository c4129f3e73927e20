"""Training configuration as data: dataclass presets for the paper's four stages and fine-tuning.

A :class:`TrainConfig` is plain data. Presets come from :data:`PRESETS`; a JSON or TOML file
(``--config``) and ``--set key=value`` overrides are applied on top. Dataset roots are never
hard-coded: they come from the config file or flags.

Facts from the paper (Lin et al., "Robust High-Resolution Video Matting with Temporal
Guidance", WACV 2022, Sec. 4.1 "Training procedure"):

* stage 1: VideoMatte240K, low resolution without DGF, 15 epochs, T=15, h, w ~ U(256, 512);
  backbone lr 1e-4 (ImageNet init), rest 2e-4;
* stage 2: T=50, learning rates halved, 2 more epochs;
* stage 3: attach the DGF, 1 epoch; a low-resolution pass (T=40, h, w ~ (256, 512), no DGF)
  and a high-resolution pass (T=6, h, w ~ (1024, 2048), s=0.25, DGF); DGF lr 2e-4, rest 1e-5;
* stage 4: ImageMatte (D646 + AIM), 5 epochs, decoder lr 5e-5, other settings as stage 3;
* segmentation interleaved after every matting iteration: image segmentation (T'=1,
  B'=B*T) after odd iterations, video segmentation (same B, T) after even ones;
* batch size B=4 in total (one clip per GPU on 4 GPUs), Adam.

Where the public training script differs we follow the paper (see docs/TRAINING.md):
stage 1 runs 15 epochs (script: 20) and sizes are sampled in a range (script: fixed 512 /
2048 then a random crop between half and full size).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError

__all__ = ["DataConfig", "GuidanceSynthesis", "TrainConfig", "PRESETS", "preset", "load_config",
           "apply_overrides"]


@dataclass
class DataConfig:
    """Where the datasets live. Each root is in the dataset's published layout
    (see :mod:`rvmatte.training.data`). ``None`` means "not used"."""

    matting: str = "videomatte"                 # videomatte | imagematte | synthetic
    videomatte_train: Optional[str] = None      # VideoMatte240K_JPEG_SD/train  (fgr/<clip>/, pha/<clip>/)
    videomatte_valid: Optional[str] = None
    videomatte_hr_train: Optional[str] = None   # JPEG HD version for stage 3 (defaults to train)
    imagematte_train: Optional[str] = None      # ImageMatte/train (fgr/, pha/)
    imagematte_valid: Optional[str] = None
    background_images_train: Optional[str] = None
    background_images_valid: Optional[str] = None
    background_videos_train: Optional[str] = None  # DVM clips: <clip>/0000.jpg ...
    background_videos_valid: Optional[str] = None
    synthetic_train: Optional[str] = None       # fgr/ + pha/ (or rgba/) + backgrounds/
    synthetic_valid: Optional[str] = None
    coco_panoptic: Optional[str] = None         # train2017/, panoptic_train2017/, annotations/
    youtubevis: Optional[str] = None            # train/JPEGImages/, train/instances.json
    spd: Optional[str] = None                   # img/, seg/
    num_workers: int = 4
    background_video_frames: int = 100          # DVM: first 100 frames of each clip


@dataclass
class GuidanceSynthesis:
    """How a guided model's inputs are made from each training sample
    (:mod:`rvmatte.training.guidance`). Pixel sizes are at the training crop's resolution."""

    p_none: float = 0.25             # a clip trained without any guidance (all zeros)
    p_missing: float = 0.15          # each input left out (zeros) on its own
    # plate: the clip's background as a separately taken photo of the empty scene would be
    p_static_plate: float = 0.5      # one frame's background for the whole clip
    max_shift_px: float = 3.0        # misalignment: translation, rotation and scale
    max_rotation_deg: float = 1.0
    max_scale: float = 0.01
    exposure: float = 0.25           # overall gain in [1/(1+e), 1+e]
    white_balance: float = 0.06      # per-channel gain in [1-w, 1+w]
    max_noise_std: float = 0.02      # Gaussian noise, std up to this
    # mask: the ground-truth alpha as a segmenter or the person tracker would give it
    threshold_min: float = 0.2       # binarised at a threshold in [min, max]
    threshold_max: float = 0.8
    max_morph_px: int = 4            # then eroded or dilated by up to this many pixels
    max_blur_px: int = 2             # then box-blurred with a radius up to this
    p_drop_frame: float = 0.1        # a frame's mask missing (all zeros)


@dataclass
class TrainConfig:
    """One training run. Learning rates of 0 freeze the module (and keep its BatchNorm in
    eval mode, so frozen statistics do not drift)."""

    name: str = "custom"
    variant: str = "mobilenetv3"
    refiner: str = "deep_guided_filter"
    data: DataConfig = field(default_factory=DataConfig)
    # Low-resolution matting pass: T frames, side sampled in [size_lr_min, size_lr_max].
    seq_length_lr: int = 15
    size_lr_min: int = 256
    size_lr_max: int = 512
    # High-resolution pass (stage 3/4): DGF at downsample_ratio.
    train_hr: bool = False
    seq_length_hr: int = 6
    size_hr_min: int = 1024
    size_hr_max: int = 2048
    downsample_ratio: float = 0.25
    train_lr_pass: bool = True                  # False: only the HR pass (DGF-only training)
    batch_size: int = 1                         # per process (paper: 4 in total on 4 GPUs)
    # Adam learning rates per module (project_mat/project_seg follow the decoder's).
    lr_backbone: float = 1e-4
    lr_aspp: float = 2e-4
    lr_decoder: float = 2e-4
    lr_refiner: float = 0.0
    # Guidance inputs (issue 19): [] (the plain network), or names out of "plate", "mask"
    # (a list, or one string "plate,mask"); their zero-initialised convolution's learning rate.
    guidance: list = field(default_factory=list)
    lr_guidance: float = 1e-4
    guidance_synthesis: GuidanceSynthesis = field(default_factory=GuidanceSynthesis)
    epochs: float = 15
    max_steps: Optional[int] = None             # overrides epochs when set
    time_limit_min: Optional[float] = None      # stop (with a checkpoint) after this long
    segmentation: bool = True                   # interleave segmentation iterations
    augment: bool = True                        # False: no motion/colour augmentation (debug)
    # Engineering
    seed: int = 42
    amp: str = "none"                           # none | bf16 | fp16
    channels_last: bool = True                  # on CUDA only
    compile: bool = False
    sync_batchnorm: bool = True                 # on CUDA DDP only
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 500
    valid_clips: int = 8
    log_every: int = 20
    image_log_every: int = 500
    init: Optional[str] = None                  # "bundled" | path to .pth | None (random)
    backbone_weights: Optional[str] = None      # torchvision ImageNet state-dict file
    out_dir: str = "runs/train"


def _stage(name: str, **kw: Any) -> TrainConfig:
    return TrainConfig(name=name, **kw)


# Fine-tuning on one's own footage (e.g. from `rvmatte prepare-greenscreen`): start from
# the bundled weights, small learning rates, short clips, no segmentation data needed.
_FINETUNE = _stage("finetune", data=DataConfig(matting="videomatte"), init="bundled",
                   refiner="fast_guided_filter", seq_length_lr=8, size_lr_min=256,
                   size_lr_max=512, lr_backbone=5e-6, lr_aspp=1e-5, lr_decoder=2e-5,
                   lr_refiner=0.0, epochs=2, segmentation=False, checkpoint_every=200,
                   validate_every=200)

PRESETS: dict[str, TrainConfig] = {
    "stage1": _stage("stage1", seq_length_lr=15, lr_backbone=1e-4, lr_aspp=2e-4,
                     lr_decoder=2e-4, lr_refiner=0.0, epochs=15),
    "stage2": _stage("stage2", seq_length_lr=50, lr_backbone=5e-5, lr_aspp=1e-4,
                     lr_decoder=1e-4, lr_refiner=0.0, epochs=2),
    "stage3": _stage("stage3", seq_length_lr=40, train_hr=True, seq_length_hr=6,
                     lr_backbone=1e-5, lr_aspp=1e-5, lr_decoder=1e-5, lr_refiner=2e-4,
                     epochs=1),
    "stage4": _stage("stage4", data=DataConfig(matting="imagematte"), seq_length_lr=40,
                     train_hr=True, seq_length_hr=6, lr_backbone=1e-5, lr_aspp=1e-5,
                     lr_decoder=5e-5, lr_refiner=2e-4, epochs=5),
    "finetune": _FINETUNE,
    # Fine-tuning with guidance inputs (issue 19): the finetune recipe on a network that also
    # takes a plate and a person mask; from the bundled weights, whose output it starts equal to.
    "guided": dataclasses.replace(_FINETUNE, name="guided", data=DataConfig(matting="videomatte"),
                                  guidance=["plate", "mask"]),
    # Train only the Deep Guided Filter on top of frozen weights (how the shipped DGF was made).
    "dgf": _stage("dgf", data=DataConfig(matting="synthetic"), init="bundled",
                  train_lr_pass=False, train_hr=True, seq_length_hr=2, size_hr_min=512,
                  size_hr_max=1024, lr_backbone=0.0, lr_aspp=0.0, lr_decoder=0.0,
                  lr_refiner=2e-4, epochs=1, segmentation=False),
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of the preset ``name``."""
    if name not in PRESETS:
        raise InputError(f"unknown training preset {name!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    return dataclasses.replace(p, data=dataclasses.replace(p.data), guidance=list(p.guidance),
                               guidance_synthesis=dataclasses.replace(p.guidance_synthesis))


def _coerce(value: Any, current: Any, key: str) -> Any:
    if isinstance(value, str) and not isinstance(current, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            return None
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise InputError(f"config key {key!r} expects true/false, got {value!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return value
    if isinstance(current, bool) and not isinstance(value, bool):
        raise InputError(f"config key {key!r} expects true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        if value != int(value):
            raise InputError(f"config key {key!r} expects an integer, got {value!r}")
        value = int(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], prefix: str = "") -> TrainConfig:
    """Set fields from a (possibly nested) mapping; ``"data.spd"`` style keys are accepted."""
    for key, value in values.items():
        if "." in key:
            head, rest = key.split(".", 1)
            apply_overrides(cfg, {head: {rest: value}}, prefix)
            continue
        target = cfg
        names = {f.name for f in dataclasses.fields(target)}
        if key not in names:
            raise InputError(f"unknown config key {prefix + key!r}; known: {', '.join(sorted(names))}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise InputError(f"config key {prefix + key!r} expects a table of keys")
            apply_overrides(current, value, prefix + key + ".")
        else:
            setattr(target, key, _coerce(value, current, prefix + key))
    return cfg


def load_config(path: str | Path, base: Optional[TrainConfig] = None) -> TrainConfig:
    """Read a JSON or TOML file. A top-level ``preset = "stage1"`` picks the base preset."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError / json.JSONDecodeError
        raise InputError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(values, dict):
        raise InputError(f"config file {path} must hold a table/object of keys")
    name = values.pop("preset", None)
    cfg = preset(name) if name else (base or TrainConfig())
    return apply_overrides(cfg, values)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: dict[str, Any]) -> TrainConfig:
    return apply_overrides(TrainConfig(), dict(values))
