"""Shared test helpers. Tests run on the CPU with few threads (the CI machine has 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch is imported

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def pretrained():
    """The bundled default model (MobileNetV3 + Fast Guided Filter), fp32 on CPU."""
    import rvmatte

    return rvmatte.load_model(device="cpu")
