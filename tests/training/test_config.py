import json

import pytest

from rvmatte.errors import InputError
from rvmatte.training.config import PRESETS, apply_overrides, load_config, preset


def test_presets_follow_the_paper():
    s1, s2, s3, s4 = (PRESETS[f"stage{i}"] for i in (1, 2, 3, 4))
    assert (s1.seq_length_lr, s1.lr_backbone, s1.lr_decoder, s1.epochs, s1.train_hr) == (15, 1e-4, 2e-4, 15, False)
    assert (s1.size_lr_min, s1.size_lr_max) == (256, 512)
    assert (s2.seq_length_lr, s2.lr_backbone, s2.lr_aspp, s2.lr_decoder, s2.epochs) == (50, 5e-5, 1e-4, 1e-4, 2)
    assert s3.train_hr and (s3.seq_length_lr, s3.seq_length_hr, s3.downsample_ratio) == (40, 6, 0.25)
    assert (s3.size_hr_min, s3.size_hr_max, s3.lr_refiner, s3.lr_decoder) == (1024, 2048, 2e-4, 1e-5)
    assert s4.data.matting == "imagematte" and s4.lr_decoder == 5e-5 and s4.epochs == 5
    assert PRESETS["finetune"].init == "bundled" and not PRESETS["finetune"].segmentation
    assert PRESETS["dgf"].lr_backbone == PRESETS["dgf"].lr_decoder == 0 < PRESETS["dgf"].lr_refiner


def test_preset_is_a_copy():
    a = preset("stage1")
    a.data.spd = "x"
    a.seq_length_lr = 3
    assert PRESETS["stage1"].data.spd is None and PRESETS["stage1"].seq_length_lr == 15


def test_overrides_and_files(tmp_path):
    cfg = apply_overrides(preset("stage1"), {"data.spd": "/d/spd", "amp": "bf16",
                                             "max_steps": "10", "segmentation": "false"})
    assert cfg.data.spd == "/d/spd" and cfg.amp == "bf16" and cfg.max_steps == 10
    assert cfg.segmentation is False
    t = tmp_path / "c.toml"
    t.write_text('preset = "stage2"\nbatch_size = 2\n[data]\nvideomatte_train = "/v"\n')
    c = load_config(t)
    assert c.name == "stage2" and c.batch_size == 2 and c.data.videomatte_train == "/v"
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"preset": "stage3", "data": {"youtubevis": "/y"}}))
    assert load_config(j).data.youtubevis == "/y"


@pytest.mark.parametrize("values, msg", [
    ({"nope": 1}, "unknown config key 'nope'"),
    ({"data": {"nope": 1}}, "unknown config key 'data.nope'"),
    ({"segmentation": "maybe"}, "expects true/false"),
    ({"data": 3}, "expects a table"),
])
def test_bad_overrides(values, msg):
    with pytest.raises(InputError, match=msg):
        apply_overrides(preset("stage1"), values)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(InputError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(InputError, match="unknown training preset"):
        preset("stage9")
