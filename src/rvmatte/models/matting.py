"""The Robust Video Matting network (Lin et al., WACV 2022)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .decoder import Projection, RecurrentDecoder
from .guidance import GUIDANCE_CHANNELS, guidance_inputs
from .guided_filter import REFINERS
from .lraspp import LRASPP
from .outputs import MattingOutput, SegmentationOutput, State
from .time import fold, per_frame, unfold


# variant -> (feature channels after LR-ASPP, decoder channels, ASPP in, ASPP out)
_DECODER = {
    "mobilenetv3": ((16, 24, 40, 128), (80, 40, 32, 16), 960, 128),
    "resnet50": ((64, 256, 512, 256), (128, 64, 32, 16), 2048, 256),
}


def downsample(src: Tensor, ratio: float) -> Tensor:
    """Resize by ``ratio`` exactly as the official implementation does (scale_factor=r,
    recompute_scale_factor=False, bilinear, align_corners=False)."""
    x, lead = fold(src)
    x = F.interpolate(x, scale_factor=ratio, mode="bilinear", align_corners=False,
                      recompute_scale_factor=False)
    return unfold(x, lead)


class GuidanceStem(nn.Module):
    """``(N, C_g, H, W)`` guidance -> ``(N, C_stem, ceil(H/2), ceil(W/2))`` added to the stem.

    Same kernel, stride and padding as the MobileNetV3 stem (the output size also matches
    ResNet-50's 7x7 stride-2 stem). Zero-initialised, no bias (see :mod:`rvmatte.models.guidance`).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, g: Tensor) -> Tensor:
        return per_frame(self.conv, g)


def guidance_tensor(names: tuple[str, ...], src: Tensor, given: dict[str, Optional[Tensor]]
                    ) -> Optional[Tensor]:
    """The guidance inputs of ``names`` concatenated on the channel axis (``None`` when none is
    given: the plain path). A missing one is zeros. Each must have ``src``'s shape with its own
    channel count (plate 3, mask 1); it is cast to ``src``'s dtype and device."""
    if all(v is None for v in given.values()):
        return None
    extra = [k for k, v in given.items() if v is not None and k not in names]
    if extra:
        raise ValueError(f"this network has no {extra[0]} input (its guidance inputs: "
                         f"{', '.join(names) or 'none'}); build it with guidance=(..., "
                         f"{extra[0]!r})")
    parts = []
    for name in names:
        shape = src.shape[:-3] + (GUIDANCE_CHANNELS[name],) + src.shape[-2:]
        t = given.get(name)
        if t is None:
            t = src.new_zeros(shape)
        elif tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)} (src's, with "
                             f"{GUIDANCE_CHANNELS[name]} channels), got {tuple(t.shape)}")
        parts.append(t.to(device=src.device, dtype=src.dtype))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)


class MattingNetwork(nn.Module):
    """RVM: encoder -> LR-ASPP -> recurrent decoder -> projection (-> guided-filter refiner).

    Use :func:`rvmatte.models.build_model` or :func:`rvmatte.load_model` to create one.

    ``guidance``: extra inputs, ``()`` (the plain network), ``("plate",)``, ``("mask",)`` or
    ``("plate", "mask")`` -- a clean background plate and/or a person mask, entering through a
    zero-initialised convolution (:mod:`rvmatte.models.guidance`; parameters ``guidance.*``,
    absent from a plain network's state dict).
    """

    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter",
                 guidance=()) -> None:
        super().__init__()
        # Imported here: the encoders subclass torchvision's models, and importing torchvision
        # costs about a second, which a process that only runs an exported graph never pays.
        from .encoders import ENCODERS

        if variant not in ENCODERS:
            raise ValueError(f"unknown variant {variant!r}; choose from {sorted(ENCODERS)}")
        if refiner not in REFINERS:
            raise ValueError(f"unknown refiner {refiner!r}; choose from {sorted(REFINERS)}")
        self.variant = variant
        self.refiner_name = refiner
        feat, dec, aspp_in, aspp_out = _DECODER[variant]
        self.backbone = ENCODERS[variant]()
        self.aspp = LRASPP(aspp_in, aspp_out)
        self.decoder = RecurrentDecoder(feat, dec)
        self.project_mat = Projection(16, 4)
        self.project_seg = Projection(16, 1)
        self.refiner = REFINERS[refiner]()
        self.guidance_inputs = guidance_inputs(guidance)
        self.guidance = None
        if self.guidance_inputs:
            channels = sum(GUIDANCE_CHANNELS[n] for n in self.guidance_inputs)
            self.guidance = GuidanceStem(channels, self.backbone.stem_channels)

    def _decode(self, src_sm: Tensor, state: Optional[State], guide_sm: Optional[Tensor] = None):
        if guide_sm is None:  # the plain network's path
            f1, f2, f3, f4 = self.backbone(src_sm)
        else:
            f1, f2, f3, f4 = self.backbone(src_sm, self.guidance(guide_sm))
        f4 = self.aspp(f4)
        r1, r2, r3, r4 = state if state is not None else (None, None, None, None)
        hid, *rec = self.decoder(src_sm, f1, f2, f3, f4, r1, r2, r3, r4)
        return hid, tuple(rec)

    @staticmethod
    def _check(src: Tensor, downsample_ratio: float) -> None:
        if src.ndim not in (4, 5) or src.shape[-3] != 3:
            raise ValueError(f"src must be (B,3,H,W) or (B,T,3,H,W), got {tuple(src.shape)}")
        if not 0 < downsample_ratio <= 1:
            raise ValueError(f"downsample_ratio must be in (0, 1], got {downsample_ratio}")

    def forward(self, src: Tensor, state: Optional[State] = None,
                downsample_ratio: float = 1.0, *, plate: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> MattingOutput:
        """Matte ``src``: (B,3,H,W) or (B,T,3,H,W) float in [0, 1].

        ``state`` is the previous call's ``out.state`` (``None`` for the first frames of a
        clip). ``downsample_ratio`` in (0, 1]: the network runs at that scale and the refiner
        brings alpha and foreground back to full resolution.

        Guidance (a network built with ``guidance=``), each optional, given like ``src`` (same
        shape but the channels, values in [0, 1]): ``plate`` (...,3,H,W) the empty scene,
        ``mask`` (...,1,H,W) the person(s) to matte. A missing one is zeros, which contribute
        nothing; with neither, the plain network's path runs.
        """
        self._check(src, downsample_ratio)
        guide = guidance_tensor(self.guidance_inputs, src, {"plate": plate, "mask": mask})
        src_sm = downsample(src, downsample_ratio) if downsample_ratio != 1 else src
        guide_sm = guide
        if guide is not None and downsample_ratio != 1:
            guide_sm = downsample(guide, downsample_ratio)
        hid, rec = self._decode(src_sm, state, guide_sm)
        fgr_residual, pha = self.project_mat(hid).split([3, 1], dim=-3)
        if downsample_ratio != 1:
            fgr_residual, pha = self.refiner(src, src_sm, fgr_residual, pha, hid)
        fgr = (fgr_residual + src).clamp(0.0, 1.0)
        return MattingOutput(fgr, pha.clamp(0.0, 1.0), rec)

    def segment(self, src: Tensor, state: Optional[State] = None,
                downsample_ratio: float = 1.0) -> SegmentationOutput:
        """Segmentation logits of the person class at the working (downsampled) resolution."""
        self._check(src, downsample_ratio)
        src_sm = downsample(src, downsample_ratio) if downsample_ratio != 1 else src
        hid, rec = self._decode(src_sm, state)
        return SegmentationOutput(self.project_seg(hid), rec)
