"""A tiny registry of model builders (torchvision style)."""

from __future__ import annotations

from .matting import MattingNetwork

VARIANTS = ("mobilenetv3", "resnet50")
REFINER_NAMES = ("deep_guided_filter", "fast_guided_filter")


def build_model(*, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter") -> MattingNetwork:
    """A randomly initialised :class:`MattingNetwork` (no weights loaded)."""
    return MattingNetwork(variant=variant, refiner=refiner)
