"""Live-mode tests run torch on one thread: on a small shared CI machine, two OpenMP threads
contending with other processes are many times slower than one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
