import json

import numpy as np
import pytest
from PIL import Image

from rvmatte.errors import InputError, OutputError
from rvmatte.evaluation.diagnose import FrameStats, diagnose, diagnose_frames
from rvmatte.spec import ModelSpec

RANDOM = ModelSpec(weights=None, device="cpu")  # random init: fast, no bundled weights needed


def test_flicker_coverage_uncertain_by_hand():
    img = np.zeros((2, 5, 3), np.uint8)
    moved = img.copy()
    moved[:, 4] = 255                       # one column of the picture changes
    a0 = np.zeros((2, 5))
    a1 = a0.copy()
    a1[:, 0] = 0.5                          # alpha changes where the picture did not: flicker
    a1[:, 4] = 1.0                          # and where it did: not flicker
    d = diagnose_frames([(img, a0), (moved, a1)])
    f = d["frames"]
    # static pixels: 8 of 10; |da| there: 0.5 on 2 of them -> mean 0.125 -> x1e3
    assert f["flicker"] == [0.0, pytest.approx(125.0)]
    assert f["static_share"][1] == pytest.approx(0.8)
    assert f["coverage"] == [0.0, pytest.approx(0.3)]    # (2 * .5 + 2 * 1) / 10
    assert f["uncertain"] == [0.0, pytest.approx(0.2)]   # the two 0.5 pixels
    assert d["coverage_jumps"] == [{"frame": 1, "coverage_change": pytest.approx(0.3)}]
    assert d["summary"]["flicker"] == pytest.approx(125.0)


def test_no_jump_below_threshold():
    img = np.zeros((4, 4, 3), np.uint8)
    s = FrameStats(jump_threshold=0.1)
    s.add(img, np.zeros((4, 4)))
    s.add(img, np.full((4, 4), 0.05))
    assert s.jumps() == []
    with pytest.raises(InputError):
        diagnose_frames([])


def test_diagnose_image_folder(tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((36, 64, 3)) * 255).astype(np.uint8)).save(src / f"{i:03d}.png")
    out = tmp_path / "diag"
    d = diagnose(src, out, spec=RANDOM, max_frames=2)
    assert d["summary"]["frames"] == 2
    saved = json.loads((out / "diagnosis.json").read_text())
    assert set(saved["frames"]) == {"flicker", "coverage", "uncertain", "static_share"}
    assert (out / "diagnosis.png").stat().st_size > 1000
    with pytest.raises(OutputError):
        diagnose(src, out, spec=RANDOM)
    with pytest.raises(InputError):
        diagnose(tmp_path / "missing.mp4", None, spec=RANDOM)


def test_diagnose_follows_the_spec_not_the_chunking(tmp_path):
    """The spec decides the model (its ratio shows in the result); frames per call do not
    change the numbers (the state is carried from call to call)."""
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "w.pth"  # one random network for every run below
    torch.save(RANDOM.load_model().state_dict(), weights)
    src = tmp_path / "frames"
    src.mkdir()
    rng = np.random.default_rng(1)
    base = rng.random((36, 64, 3)) * 200
    for i in range(4):
        img = np.clip(base + rng.random((36, 64, 3)) * 30, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(src / f"{i:03d}.png")
    spec = RANDOM.replace(weights=str(weights), backend="torch", downsample=0.5)
    one = diagnose(src, None, spec=spec, chunk=1)
    three = diagnose(src, None, spec=spec, chunk=3)
    assert one["downsample_ratio"] == 0.5
    assert one["summary"]["frames"] == three["summary"]["frames"] == 4
    assert np.allclose(one["frames"]["coverage"], three["frames"]["coverage"], atol=1e-5)
    assert np.allclose(one["frames"]["flicker"], three["frames"]["flicker"], atol=1e-3)
    auto = diagnose(src, None, spec=spec.replace(downsample="auto"), max_frames=1)
    assert auto["downsample_ratio"] == 1.0  # 64 px wide: auto never upsamples
    with pytest.raises(InputError, match="seq-chunk"):
        diagnose(src, None, spec=spec, chunk=0)
