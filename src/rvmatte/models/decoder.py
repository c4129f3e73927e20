"""RVM's recurrent decoder: bottleneck ConvGRU at 1/16, three upsampling blocks, output block."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .conv_gru import ConvGRU
from .time import fold, per_frame, unfold


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """x2 bilinear upsampling, cropped to ``ref``'s spatial size (odd sizes round up)."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : ref.size(-2), : ref.size(-1)]


class AvgPool(nn.Module):
    """``s0 -> (s1, s2, s3)``: the source image at 1/2, 1/4, 1/8 (2x2 average, ceil mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)

    def _single(self, s0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s1 = self.avgpool(s0)
        s2 = self.avgpool(s1)
        s3 = self.avgpool(s2)
        return s1, s2, s3

    def forward(self, s0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return per_frame(self._single, s0)


def _gru_half(gru: ConvGRU, x: Tensor, r: Tensor | None, half: int) -> tuple[Tensor, Tensor]:
    """Run ``gru`` on the second half of the channels of ``x`` (dim -3); keep the first half."""
    a, b = x.split(half, dim=-3)
    b, r = gru(b, r)
    return torch.cat([a, b], dim=-3), r


class BottleneckBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Tensor | None) -> tuple[Tensor, Tensor]:
        return _gru_half(self.gru, x, r, self.channels // 2)


class UpsamplingBlock(nn.Module):
    """upsample x, concat skip feature f and pooled source s, conv-BN-ReLU, ConvGRU on half."""

    def __init__(self, in_channels: int, skip_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Sequential(*_conv_bn_relu(in_channels + skip_channels + src_channels, out_channels))
        self.gru = ConvGRU(out_channels // 2)

    def forward(self, x: Tensor, f: Tensor, s: Tensor, r: Tensor | None) -> tuple[Tensor, Tensor]:
        x, lead = fold(x)
        f, _ = fold(f)
        s, _ = fold(s)
        x = self.conv(torch.cat([_upsample_to(x, s), f, s], dim=1))
        return _gru_half(self.gru, unfold(x, lead), r, self.out_channels // 2)


class OutputBlock(nn.Module):
    def __init__(self, in_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_bn_relu(in_channels + src_channels, out_channels),
            *_conv_bn_relu(out_channels, out_channels),
        )

    def _single(self, x: Tensor, s: Tensor) -> Tensor:
        return self.conv(torch.cat([_upsample_to(x, s), s], dim=1))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return per_frame(self._single, x, s)


class RecurrentDecoder(nn.Module):
    """Decode features ``f1..f4`` (1/2..1/16) with the source ``s0`` and states ``r1..r4``.

    Returns ``(hid, r1, r2, r3, r4)``; ``hid`` has ``decoder_channels[3]`` channels at the
    resolution of ``s0``.
    """

    def __init__(self, feature_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        fc, dc = feature_channels, decoder_channels
        self.avgpool = AvgPool()
        self.decode4 = BottleneckBlock(fc[3])
        self.decode3 = UpsamplingBlock(fc[3], fc[2], 3, dc[0])
        self.decode2 = UpsamplingBlock(dc[0], fc[1], 3, dc[1])
        self.decode1 = UpsamplingBlock(dc[1], fc[0], 3, dc[2])
        self.decode0 = OutputBlock(dc[2], 3, dc[3])

    def forward(self, s0: Tensor, f1: Tensor, f2: Tensor, f3: Tensor, f4: Tensor,
                r1: Tensor | None, r2: Tensor | None, r3: Tensor | None, r4: Tensor | None):
        s1, s2, s3 = self.avgpool(s0)
        x4, r4 = self.decode4(f4, r4)
        x3, r3 = self.decode3(x4, f3, s3, r3)
        x2, r2 = self.decode2(x3, f2, s2, r2)
        x1, r1 = self.decode1(x2, f1, s1, r1)
        x0 = self.decode0(x1, s0)
        return x0, r1, r2, r3, r4


class Projection(nn.Module):
    """1x1 convolution head (alpha + foreground residual, or segmentation logit)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return per_frame(self.conv, x)
