"""nn.Modules only: no file I/O, argument parsing or printing here."""

from .matting import MattingNetwork, MattingOutput, SegmentationOutput, State, downsample
from .registry import REFINER_NAMES, VARIANTS, build_model

__all__ = ["MattingNetwork", "MattingOutput", "SegmentationOutput", "State", "downsample",
           "build_model", "VARIANTS", "REFINER_NAMES"]
