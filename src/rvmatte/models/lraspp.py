"""Lite R-ASPP (Howard et al., 2019) as used by RVM on the 1/16 features."""

from __future__ import annotations

from torch import Tensor, nn

from .time import per_frame


class LRASPP(nn.Module):
    """``x: (N|B,T, C_in, h, w) -> (..., C_out, h, w)``: conv-BN-ReLU gated by a global sigmoid."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )
        self.aspp2 = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def _single(self, x: Tensor) -> Tensor:
        return self.aspp1(x) * self.aspp2(x)

    def forward(self, x: Tensor) -> Tensor:
        return per_frame(self._single, x)
