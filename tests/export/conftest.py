"""Fixtures for the export tests: small random models with non-trivial BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch

import rvmatte

# Exports are traced at this (H, W); parity is checked at another size (see check.max_abs_diff).
EXPORT_SIZE = (96, 160)
TOL = 1e-4


def random_model(refiner: str, variant: str = "mobilenetv3", seed: int = 0):
    torch.manual_seed(seed)
    m = rvmatte.load_model(variant, refiner=refiner, weights=None, device="cpu")
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return m.eval()


@pytest.fixture(scope="session", params=["fast_guided_filter", "deep_guided_filter"])
def model(request):
    return random_model(request.param)
