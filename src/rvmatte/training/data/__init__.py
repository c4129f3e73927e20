"""Dataset readers for training (see each module for the expected layouts)."""

from .matting import (BackgroundImages, Backgrounds, BackgroundVideos, ImageMatteDataset,
                      SyntheticMatteDataset, VideoMatteDataset)
from .segmentation import (CocoPanopticDataset, SuperviselyPersonDataset, YouTubeVISDataset,
                           decode_rle)

__all__ = ["BackgroundImages", "BackgroundVideos", "Backgrounds", "VideoMatteDataset",
           "ImageMatteDataset", "SyntheticMatteDataset", "CocoPanopticDataset",
           "YouTubeVISDataset", "SuperviselyPersonDataset", "decode_rle"]
