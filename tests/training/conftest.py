from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def tiny_config(out_dir, **kw):
    """A stage-1 config on the tiny fixtures: 64 px, T=2, segmentation on all three sets."""
    from rvmatte.training.config import apply_overrides, preset
    cfg = preset(kw.pop("preset", "stage1"))
    values = {
        "data": {"matting": "synthetic", "synthetic_train": str(FIXTURES / "synthetic"),
                 "coco_panoptic": str(FIXTURES / "coco_panoptic"), "spd": str(FIXTURES / "spd"),
                 "youtubevis": str(FIXTURES / "youtubevis"), "num_workers": 0},
        "seq_length_lr": 2, "size_lr_min": 64, "size_lr_max": 64, "max_steps": 4,
        "log_every": 1, "validate_every": 0, "checkpoint_every": 2, "image_log_every": 0,
        "out_dir": str(out_dir), "lr_backbone": 1e-3, "lr_aspp": 1e-3, "lr_decoder": 1e-3,
    }
    values.update(kw)
    return apply_overrides(cfg, values)
