"""A tiny registry of model builders (torchvision style)."""

from __future__ import annotations

from .guidance import GUIDANCE_CHANNELS
from .matting import MattingNetwork

VARIANTS = ("mobilenetv3", "resnet50")
REFINER_NAMES = ("deep_guided_filter", "fast_guided_filter")
GUIDANCE_INPUTS = tuple(GUIDANCE_CHANNELS)


def build_model(*, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter",
                guidance=()) -> MattingNetwork:
    """A randomly initialised :class:`MattingNetwork` (no weights loaded; the guidance
    convolution, when ``guidance`` names inputs, starts at zero)."""
    return MattingNetwork(variant=variant, refiner=refiner, guidance=guidance)
