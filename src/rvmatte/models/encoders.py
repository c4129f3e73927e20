"""Encoders: MobileNetV3-Large (last stage dilated, output stride 16) and ResNet-50.

Both subclass torchvision's models so parameter names match the official RVM release
(``backbone.features.0.0.weight``, ``backbone.layer1.0.conv1.weight``, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.resnet import Bottleneck, ResNet

from .time import per_frame

# ImageNet statistics as the official implementation uses them (torchvision normalize).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stem_plus(conv: nn.Module, bn: nn.Module, act: nn.Module, x: Tensor, extra: Tensor) -> Tensor:
    """The stem with guidance features added after its BatchNorm, before its activation
    (:mod:`rvmatte.models.guidance`)."""
    return act(bn(conv(x)) + extra)


class _PerFrame:
    """``forward`` of both encoders: ``_single`` over the frames of 4-D or 5-D input."""

    def forward(self, x: Tensor, stem_extra: Tensor | None = None) -> list[Tensor]:
        if stem_extra is None:
            return per_frame(self._single, x)
        return per_frame(self._single, x, stem_extra)


def _mobilenetv3_large_dilated() -> list[InvertedResidualConfig]:
    # (in, kernel, expanded, out, use_se, activation, stride, dilation, width_mult)
    c = InvertedResidualConfig
    return [
        c(16, 3, 16, 16, False, "RE", 1, 1, 1),
        c(16, 3, 64, 24, False, "RE", 2, 1, 1),     # 1/4
        c(24, 3, 72, 24, False, "RE", 1, 1, 1),
        c(24, 5, 72, 40, True, "RE", 2, 1, 1),      # 1/8
        c(40, 5, 120, 40, True, "RE", 1, 1, 1),
        c(40, 5, 120, 40, True, "RE", 1, 1, 1),
        c(40, 3, 240, 80, False, "HS", 2, 1, 1),    # 1/16
        c(80, 3, 200, 80, False, "HS", 1, 1, 1),
        c(80, 3, 184, 80, False, "HS", 1, 1, 1),
        c(80, 3, 184, 80, False, "HS", 1, 1, 1),
        c(80, 3, 480, 112, True, "HS", 1, 1, 1),
        c(112, 3, 672, 112, True, "HS", 1, 1, 1),
        c(112, 5, 672, 160, True, "HS", 2, 2, 1),   # dilated: stride stays 1 (torchvision rule)
        c(160, 5, 960, 160, True, "HS", 1, 2, 1),
        c(160, 5, 960, 160, True, "HS", 1, 2, 1),
    ]


class MobileNetV3LargeEncoder(_PerFrame, MobileNetV3):
    """MobileNetV3-Large feature extractor.

    ``forward(x)``: ``x`` is ``(N, 3, H, W)`` or ``(B, T, 3, H, W)`` RGB in [0, 1]; returns
    ``[f1, f2, f3, f4]`` at 1/2, 1/4, 1/8, 1/16 with 16, 24, 40, 960 channels. ``stem_extra``
    (``stem_channels`` at 1/2, optional) is added to the stem's features (guidance channels).
    """

    channels = (16, 24, 40, 960)
    stem_channels = 16

    def __init__(self) -> None:
        super().__init__(inverted_residual_setting=_mobilenetv3_large_dilated(), last_channel=1280)
        del self.avgpool
        del self.classifier
        # Not persistent: keeps the official state-dict keys; set_normalization() may swap them.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def set_normalization(self, mean, std) -> None:
        """Replace the ImageNet constants (used to reproduce the TF.js graph's quantised ones)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).view(1, 3, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).view(1, 3, 1, 1))

    def _single(self, x: Tensor, stem_extra: Tensor | None = None) -> list[Tensor]:
        x = (x - self.mean) / self.std
        f = self.features
        x = f[0](x) if stem_extra is None else _stem_plus(*f[0], x, stem_extra)
        x = f[1](x)
        f1 = x
        x = f[3](f[2](x))
        f2 = x
        x = f[6](f[5](f[4](x)))
        f3 = x
        for i in range(7, 17):
            x = f[i](x)
        return [f1, f2, f3, x]


class ResNet50Encoder(_PerFrame, ResNet):
    """ResNet-50 feature extractor (layer4 dilated, output stride 16), as in official RVM.

    Like the official release, no input normalisation is applied.
    Returns ``[f1, f2, f3, f4]`` with 64, 256, 512, 2048 channels; ``stem_extra`` as for
    MobileNetV3.
    """

    channels = (64, 256, 512, 2048)
    stem_channels = 64

    def __init__(self) -> None:
        super().__init__(block=Bottleneck, layers=[3, 4, 6, 3],
                         replace_stride_with_dilation=[False, False, True])
        del self.avgpool
        del self.fc

    def _single(self, x: Tensor, stem_extra: Tensor | None = None) -> list[Tensor]:
        if stem_extra is None:
            f1 = self.relu(self.bn1(self.conv1(x)))
        else:
            f1 = _stem_plus(self.conv1, self.bn1, self.relu, x, stem_extra)
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer4(self.layer3(f3))
        return [f1, f2, f3, f4]


ENCODERS: dict[str, type[nn.Module]] = {
    "mobilenetv3": MobileNetV3LargeEncoder,
    "resnet50": ResNet50Encoder,
}
