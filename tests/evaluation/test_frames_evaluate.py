import numpy as np
import pytest
from PIL import Image

from rvmatte.errors import InputError
from rvmatte.evaluation.evaluate import evaluate_folders, format_table
from rvmatte.evaluation.frames import read_alpha, write_alpha


def _clip(root, name, frames):
    d = root / name
    d.mkdir(parents=True)
    for i, a in enumerate(frames):
        write_alpha(d / f"{i:04d}.png", a)


def test_alpha_png_roundtrip_8_and_16_bit(tmp_path):
    a = np.linspace(0, 1, 12).reshape(3, 4)
    write_alpha(tmp_path / "a8.png", a, bits=8)
    write_alpha(tmp_path / "a16.png", a, bits=16)
    assert np.abs(read_alpha(tmp_path / "a8.png") - a).max() <= 0.5 / 255 + 1e-12
    assert np.abs(read_alpha(tmp_path / "a16.png") - a).max() <= 0.5 / 65535 + 1e-12


def test_colour_alpha_rejected_equal_channels_accepted(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(InputError, match="grayscale"):
        read_alpha(tmp_path / "c.png")
    Image.fromarray(np.full((2, 2, 3), 51, np.uint8)).save(tmp_path / "g.png")
    assert read_alpha(tmp_path / "g.png") == pytest.approx(np.full((2, 2), 0.2))


def test_evaluate_folders_known_values(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    zeros = np.zeros((4, 6))
    _clip(gt, "a", [zeros, zeros])
    _clip(gt, "b", [zeros, zeros])
    _clip(pred, "a", [zeros, zeros])                       # perfect
    _clip(pred, "b", [np.full((4, 6), 0.2), zeros])        # 51/255 = 0.2 exactly, then perfect
    r = evaluate_folders(pred, gt)
    assert set(r) >= {"mad", "mse", "grad", "conn", "dtssd", "clips"}
    assert r["clips"]["a"]["mad"] == 0
    assert r["clips"]["b"]["mad"] == pytest.approx(100.0)      # (200 + 0) / 2
    assert r["clips"]["b"]["mse"] == pytest.approx(20.0)       # (.04e3 + 0) / 2
    assert r["clips"]["b"]["dtssd"] == pytest.approx(10.0)     # (0 + sqrt(.04) * 100) / 2
    assert r["mad"] == pytest.approx(50.0)
    assert r["clips"]["b"]["frames"] == 2
    table = format_table({**r["clips"], "mean": r})
    assert "| b | 100.00 | 20.00 |" in table


def test_evaluate_mixed_bit_depths(tmp_path):
    a = np.linspace(0, 1, 24).reshape(4, 6)
    (tmp_path / "gt" / "c").mkdir(parents=True)
    (tmp_path / "pred" / "c").mkdir(parents=True)
    write_alpha(tmp_path / "gt" / "c" / "0.png", a, bits=8)
    write_alpha(tmp_path / "pred" / "c" / "0.png", a, bits=16)
    assert evaluate_folders(tmp_path / "pred", tmp_path / "gt")["mad"] < 2.0


@pytest.mark.parametrize("case", ["no_pred_dir", "missing_clip", "missing_frame", "size", "empty_gt"])
def test_evaluate_bad_inputs(tmp_path, case):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    z = np.zeros((4, 6))
    if case != "empty_gt":
        _clip(gt, "a", [z, z])
    else:
        gt.mkdir()
    if case == "missing_clip":
        _clip(pred, "other", [z, z])
    elif case == "missing_frame":
        _clip(pred, "a", [z])
    elif case == "size":
        _clip(pred, "a", [np.zeros((5, 6)), z])
    elif case == "empty_gt":
        _clip(pred, "a", [z])
    with pytest.raises(InputError):
        evaluate_folders(pred, gt)
