"""Model weights: the bundled default, our own checkpoints and official RVM ``.pth`` files.

Nothing is downloaded. The default MobileNetV3 weights ship inside the package
(``rvmatte/assets/``), converted once from the official TensorFlow.js release by
``scripts/convert_tfjs_weights.py``; their sha256 is pinned here and checked at load.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .bundled import BUNDLED, BundledWeights  # noqa: F401 - re-exported
from .errors import WeightsError, one_line
from .hardware import dtype_name, torch_device
from .models import MattingNetwork, build_model


# Keys that a Deep-Guided-Filter checkpoint has and a Fast-Guided-Filter model lacks.
_DGF_PREFIX = "refiner."
# The guidance convolution's keys (rvmatte.models.guidance): a guided model loads a plain
# checkpoint with them at their zero init, a plain model drops them (without guidance inputs
# they contribute nothing, so the outputs are the same).
_GUIDANCE_PREFIX = "guidance."


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_path(variant: str = "mobilenetv3") -> Path:
    """Path of the bundled weights file for ``variant`` (checked to exist)."""
    if variant not in BUNDLED:
        raise WeightsError(
            f"no bundled weights for variant {variant!r} (bundled: {', '.join(BUNDLED)}); "
            "pass weights=PATH to a checkpoint")
    path = Path(str(resources.files("rvmatte") / "assets" / BUNDLED[variant].filename))
    if not path.is_file():
        raise WeightsError(f"bundled weights file is missing: {path} (reinstall rvmatte)")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` safely (``weights_only=True``).

    Accepts a plain state dict (official RVM ``.pth``, ours) or a training checkpoint with a
    ``"model"`` entry. Raises :class:`WeightsError` naming the file on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"weights path is a directory, expected a .pth file: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on garbage; all mean "bad file"
        raise WeightsError(f"cannot read weights file {path}: not a valid PyTorch checkpoint "
                           f"({one_line(e)})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    # Checkpoints saved from DDP or torch.compile wrap the keys.
    for prefix in ("module.", "_orig_mod."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def infer_variant(state_dict: dict[str, torch.Tensor]) -> str:
    """Which encoder a state dict belongs to."""
    if any(k.startswith("backbone.features.") for k in state_dict):
        return "mobilenetv3"
    if any(k.startswith("backbone.layer1.") for k in state_dict):
        return "resnet50"
    raise WeightsError("state dict matches neither the MobileNetV3 nor the ResNet-50 encoder")


def infer_guidance(state_dict: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The guidance inputs a state dict was trained with (``()`` for a plain network)."""
    w = state_dict.get(_GUIDANCE_PREFIX + "conv.weight")
    if w is None:
        return ()
    found = {4: ("plate", "mask"), 3: ("plate",), 1: ("mask",)}.get(int(w.shape[1]))
    if found is None:
        raise WeightsError(f"guidance weights with {int(w.shape[1])} input channels match no "
                           "guidance inputs (plate 3, mask 1, both 4)")
    return found


def load_state_dict(model: MattingNetwork, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Load strictly; a Fast-Guided-Filter model ignores Deep-Guided-Filter keys it has no use
    for, and guidance keys are filled in (zero) or dropped (see ``_GUIDANCE_PREFIX``)."""
    if model.refiner_name == "fast_guided_filter":
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_DGF_PREFIX)}
    if model.guidance is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_GUIDANCE_PREFIX)}
    elif not any(k.startswith(_GUIDANCE_PREFIX) for k in state_dict):
        state_dict = {**state_dict, **{k: v for k, v in model.state_dict().items()
                                       if k.startswith(_GUIDANCE_PREFIX)}}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        if len(msg) > 300:
            msg = msg[:300] + "..."
        raise WeightsError(f"weights in {source} do not fit the {model.variant} model: {msg}") from None


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """The device as a ``torch.device``: :func:`rvmatte.hardware.torch_device`, the one resolver."""
    return torch_device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` (float32), a name (``"fp16"``, ``"bf16"``, ...) or a ``torch.dtype``; an
    unknown name is a :class:`WeightsError` (the names: :func:`rvmatte.hardware.dtype_name`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype_name(dtype))


def load_model(variant: str = "mobilenetv3", *, refiner: str | None = None,
               weights: str | os.PathLike | None = "default", device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, guidance=None) -> MattingNetwork:
    """Build the network and load weights; returned in eval mode.

    variant: ``"mobilenetv3"`` or ``"resnet50"``.
    refiner: ``"fast_guided_filter"`` or ``"deep_guided_filter"``. Default: the refiner the
        weights come with (FGF for the bundled weights, DGF for a checkpoint that has DGF keys).
    weights: ``"default"`` (bundled, sha256-checked), ``None`` (random init) or a path to a
        checkpoint (ours or an official RVM ``.pth``; loaded with ``weights_only=True``).
    device: ``None``/``"auto"`` (CUDA, then MPS, then CPU), or any torch device string.
    dtype: ``float32`` (default), ``float16`` or ``bfloat16``.
    guidance: extra inputs (``"plate"``, ``"mask"``; :mod:`rvmatte.models.guidance`). Default:
        those the weights come with (none for the bundled weights); given for weights without
        them, the new inputs start at zero and the outputs equal the plain network's.
    """
    from .models import VARIANTS, REFINER_NAMES, guidance_inputs

    if variant not in VARIANTS:
        raise WeightsError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if refiner is not None and refiner not in REFINER_NAMES:
        raise WeightsError(f"unknown refiner {refiner!r}; choose from {', '.join(REFINER_NAMES)}")
    state_dict = None
    source = "random init"
    if isinstance(weights, str) and weights == "default":
        spec = BUNDLED.get(variant)
        path = bundled_path(variant)
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise WeightsError(f"bundled weights {path} are corrupt (sha256 {digest[:12]}..., "
                               f"expected {spec.sha256[:12]}...); reinstall rvmatte")
        state_dict = read_checkpoint(path)
        refiner = refiner or spec.refiner
        source = str(path)
    elif weights is not None:
        state_dict = read_checkpoint(weights)
        found = infer_variant(state_dict)
        if found != variant:
            raise WeightsError(f"weights file {weights} holds a {found} model, not {variant} "
                               f"(pass variant={found!r} / --variant {found})")
        has_dgf = any(k.startswith(_DGF_PREFIX) for k in state_dict)
        refiner = refiner or ("deep_guided_filter" if has_dgf else "fast_guided_filter")
        if refiner == "deep_guided_filter" and not has_dgf:
            raise WeightsError(f"weights file {weights} has no Deep Guided Filter parameters; "
                               "use refiner='fast_guided_filter'")
        source = str(weights)
    try:
        guidance = guidance_inputs(guidance) if guidance is not None else \
            infer_guidance(state_dict or {})
    except ValueError as e:
        raise WeightsError(str(e)) from None
    model = build_model(variant=variant, refiner=refiner or "deep_guided_filter", guidance=guidance)
    if state_dict is not None:
        load_state_dict(model, state_dict, source=source)
    return model.to(device=_resolve_device(device), dtype=resolve_dtype(dtype)).eval()
