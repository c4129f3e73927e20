"""TorchScript export: parity with PyTorch at another size, ratio 1 and < 1, save/load."""

from __future__ import annotations

import pytest
import torch

from rvmatte.export.check import max_abs_diff, torchscript_candidate
from rvmatte.export.torchscript import export_torchscript

from .conftest import EXPORT_SIZE, TOL


def test_parity_saved_and_loaded(model, tmp_path):
    freeze = model.refiner_name == "fast_guided_filter"  # one of each, to keep the suite short
    path = tmp_path / "m.torchscript"
    export_torchscript(model, path, sample_size=EXPORT_SIZE, freeze=freeze)
    ts = torch.jit.load(str(path))
    diffs = max_abs_diff(model, torchscript_candidate(ts), size=(77, 130), ratios=(1.0, 0.5, 0.37),
                         frames=3, batch=2)
    assert max(diffs.values()) <= TOL, diffs


def test_ratio_checked(model):
    if model.refiner_name != "fast_guided_filter":
        pytest.skip("one refiner is enough")
    ts = export_torchscript(model, sample_size=(48, 64), freeze=False)
    z = torch.zeros(1, 1, 1, 1)
    with pytest.raises(Exception, match="downsample_ratio"):
        ts(torch.rand(1, 3, 64, 64), z, z, z, z, 1.5)
