"""Export the matting network to TorchScript.

The exported module::

    fgr, pha, r1, r2, r3, r4 = ts(src, r1, r2, r3, r4, downsample_ratio)

``src`` (B, 3, H, W) float in [0, 1] (any B, H, W); ``r1..r4`` the previous call's state, or
zeros of shape ``(1, 1, 1, 1)`` on a clip's first frame; ``downsample_ratio`` a Python float
in (0, 1]. Load it with ``torch.jit.load(path)``; it needs no rvmatte code.

How: the resolution-independent parts (:class:`~rvmatte.export.wrapper.LowRes` and the
refiner) are *traced* (sizes are traced, so the graph holds for every size; checked by the
parity tests at a size other than the tracing one), and a small *scripted* module on top keeps
the ratio a runtime float and skips the refiner at ratio 1, as ``MattingNetwork.forward`` does.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import List

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import RvmatteError
from ..models import MattingNetwork
from .onnx import check_output_path
from .wrapper import LowRes, Refine


class ScriptedMatting(nn.Module):
    """The scripted top: ratio handling around the traced ``low`` and ``refine`` modules."""

    def __init__(self, low: nn.Module, refine: nn.Module) -> None:
        super().__init__()
        self.low = low
        self.refine = refine

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor,
                downsample_ratio: float = 1.0) -> List[Tensor]:
        if downsample_ratio <= 0.0 or downsample_ratio > 1.0:
            raise ValueError("downsample_ratio must be in (0, 1]")
        if downsample_ratio != 1.0:
            # As rvmatte.models.downsample: scale_factor=r, recompute_scale_factor=False.
            src_sm = F.interpolate(src, scale_factor=[downsample_ratio, downsample_ratio],
                                   mode="bilinear", align_corners=False, recompute_scale_factor=False)
        else:
            src_sm = src
        out = self.low(src_sm, r1, r2, r3, r4)
        fgr_residual, pha = out[0], out[1]
        if downsample_ratio != 1.0:
            refined = self.refine(src, src_sm, out[0], out[1], out[2])
            fgr_residual, pha = refined[0], refined[1]
        fgr = (fgr_residual + src).clamp(0.0, 1.0)
        return [fgr, pha.clamp(0.0, 1.0), out[3], out[4], out[5], out[6]]


def export_torchscript(model: MattingNetwork, path: str | os.PathLike | None = None, *,
                       dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
                       sample_size: tuple[int, int] = (288, 512), freeze: bool = True):
    """Trace + script ``model``; returns the ``ScriptModule`` (also saved to ``path``).

    dtype: ``float32`` (default), ``float16`` or ``bfloat16``. device: where to trace (the
    file can be loaded with ``map_location``). freeze: ``torch.jit.freeze`` (inlines weights,
    folds BatchNorm into convolutions; inference only).
    """
    from ..weights import resolve_dtype

    dt = resolve_dtype(dtype)
    path = check_output_path(path)
    try:
        m = copy.deepcopy(model).to(device=device, dtype=dt).eval()
    except (RuntimeError, AssertionError) as e:
        raise RvmatteError(f"cannot move the model to {device}: {e}") from None
    h, w = sample_size
    src = torch.rand(1, 3, h, w, dtype=dt, device=device)
    zero = torch.zeros(1, 1, 1, 1, dtype=dt, device=device)
    src_sm = F.interpolate(src, scale_factor=0.5, mode="bilinear", align_corners=False,
                           recompute_scale_factor=False)
    low_mod, refine_mod = LowRes(m).eval(), Refine(m).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; still works
        low = torch.jit.trace(low_mod, (src_sm, zero, zero, zero, zero), check_trace=False)
        fgr, pha, hid = low_mod(src_sm, zero, zero, zero, zero)[:3]
        refine = torch.jit.trace(refine_mod, (src, src_sm, fgr, pha, hid), check_trace=False)
        scripted = torch.jit.script(ScriptedMatting(low, refine).eval())
        if freeze:
            scripted = torch.jit.freeze(scripted)
        if path is not None:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
            torch.jit.save(scripted, str(tmp))
            os.replace(tmp, path)
    return scripted
