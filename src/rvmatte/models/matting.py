"""The Robust Video Matting network (Lin et al., WACV 2022)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F

from .decoder import Projection, RecurrentDecoder
from .guided_filter import REFINERS
from .lraspp import LRASPP
from .outputs import MattingOutput, SegmentationOutput, State
from .time import fold, unfold


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


class MattingNetwork(nn.Module):
    """RVM: encoder -> LR-ASPP -> recurrent decoder -> projection (-> guided-filter refiner).

    Use :func:`rvmatte.models.build_model` or :func:`rvmatte.load_model` to create one.
    """

    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter") -> None:
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

    def _decode(self, src_sm: Tensor, state: Optional[State]):
        f1, f2, f3, f4 = self.backbone(src_sm)
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
                downsample_ratio: float = 1.0) -> MattingOutput:
        """Matte ``src``: (B,3,H,W) or (B,T,3,H,W) float in [0, 1].

        ``state`` is the previous call's ``out.state`` (``None`` for the first frames of a
        clip). ``downsample_ratio`` in (0, 1]: the network runs at that scale and the refiner
        brings alpha and foreground back to full resolution.
        """
        self._check(src, downsample_ratio)
        src_sm = downsample(src, downsample_ratio) if downsample_ratio != 1 else src
        hid, rec = self._decode(src_sm, state)
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
