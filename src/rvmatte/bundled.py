"""The weights shipped inside the package (``rvmatte/assets``): names, pinned sha256 and the
refiner each was made with. Kept free of PyTorch so that a CPU conversion can find its
cached ONNX export without importing it (:mod:`rvmatte.hardware`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class BundledWeights:
    """A weights file shipped in ``rvmatte/assets``."""

    filename: str
    sha256: str
    variant: str
    refiner: str  # the refiner the weights were trained/converted with


# The official MobileNetV3 model converted from TF.js: it carries the Fast Guided Filter
# (parameter-free) and no Deep Guided Filter parameters.
BUNDLED: dict[str, BundledWeights] = {
    "mobilenetv3": BundledWeights(
        filename="rvm_mobilenetv3_fgf.pth",
        sha256="c460682df12544e37820b06581ede939b7aa11c501ef7f7f5cf958bd4bc38b50",
        variant="mobilenetv3",
        refiner="fast_guided_filter",
    ),
}


def uses_bundled(variant: str, weights: Any, refiner: Optional[str]) -> bool:
    """``weights``/``refiner`` name the bundled weights of ``variant`` as they ship."""
    return (isinstance(weights, str) and weights == "default" and variant in BUNDLED
            and refiner in (None, BUNDLED[variant].refiner))
