"""Shared test helpers. Tests run on the CPU with few threads (the CI machine has 2 cores)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch is imported

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
# tests/io/rvm_clips.py (generated clips, the stand-in network, pixel checks) for every folder
sys.path.insert(0, str(Path(__file__).parent / "io"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for the whole suite: on the small (2-core), often shared CI machine
    two OpenMP threads contending with our own decode/encode threads are many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Keep exported graphs and speed choices out of the user's cache: the suite's conversions
    run backend "auto", which exports every (random) test model it meets."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RVMATTE_CACHE_DIR", str(tmp_path_factory.mktemp("rvmatte-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("speed")`` imports ``benchmarks/speed.py`` (not a package) as a module."""
    import importlib.util
    import sys

    def load(name: str):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        return sys.modules[name]

    return load


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def pretrained():
    """The bundled default model (MobileNetV3 + Fast Guided Filter), fp32 on CPU."""
    import rvmatte

    return rvmatte.load_model(device="cpu")
