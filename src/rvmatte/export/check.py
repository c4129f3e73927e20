"""Parity of an exported / accelerated model against the PyTorch model.

Used by the tests and by ``rvmatte export --verify``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..models import MattingNetwork


def max_abs_diff(model: MattingNetwork, candidate: Callable, *, size: tuple[int, int] = (77, 130),
                 ratios: Sequence[float] = (1.0, 0.5), frames: int = 3, batch: int = 1,
                 seed: int = 0) -> dict[float, float]:
    """``{ratio: max |candidate - model|}`` over fgr, pha and the state, ``frames`` recurrent frames.

    ``candidate(src (B,3,H,W), state_or_None, ratio) -> (fgr, pha, state)``; ``size`` (H, W)
    should differ from the size the candidate was exported / traced at.
    """
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    out = {}
    for ratio in ratios:
        state_ref = state_c = None
        worst = 0.0
        for _ in range(frames):
            src = torch.rand(batch, 3, *size, generator=g).to(p.device, p.dtype)
            with torch.inference_mode():
                ref = model(src, state_ref, ratio)
                got = candidate(src, state_c, ratio)
            state_ref, state_c = ref.state, got[2]
            pairs = [(ref.fgr, got[0]), (ref.pha, got[1])] + list(zip(ref.state, got[2]))
            for a, b in pairs:
                worst = max(worst, float((a.float() - b.to(a.device).float()).abs().max()))
        out[ratio] = worst
    return out


def torchscript_candidate(ts) -> Callable:
    """Adapt a module exported by :func:`~rvmatte.export.torchscript.export_torchscript`."""
    def run(src, state, ratio):
        if state is None:
            z = torch.zeros(1, 1, 1, 1, dtype=src.dtype, device=src.device)
            state = (z, z, z, z)
        fgr, pha, *rec = ts(src, *state, float(ratio))
        return fgr, pha, tuple(rec)
    return run
