"""``ModelSpec``: which network, with which weights, runs where and how -- one frozen value.

Every entry point that runs the model takes one (``convert_video``, ``Matter``, ``live``,
``serve``, ``diagnose``, ``benchmark``, ``export``; the CLI builds it from the options that
:mod:`rvmatte.cli.options` declares once). The device is resolved by the one resolver,
:func:`rvmatte.hardware.resolve_device`, and the dtype here, without importing PyTorch where
the answer does not need it::

    spec = ModelSpec(device="cpu", downsample=0.25)
    spec.device_type()        # "cpu" (torch-free)
    spec.dtype_name()         # "float32" (float16 on CUDA when not given)
    spec.replace(backend="torch")
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional

from .bundled import uses_bundled
from .downsample import parse_downsample_ratio
from .errors import InputError, WeightsError
from .hardware import dtype_name, resolve_device, torch_device  # noqa: F401 - re-exported
from .models.guidance import guidance_inputs

VARIANTS = ("mobilenetv3", "resnet50")
REFINERS = ("fast_guided_filter", "deep_guided_filter")
# Every way of running the network (rvmatte.runtime builds each; "auto" picks one there, in
# rvmatte.runtime.auto_backend). The one list: the CLI's choices and the API's checks use it.
# "int8": the fused CPU path over the network quantised to 8 bits (rvmatte.runtime.int8).
BACKENDS = ("auto", "torch", "torch-fast", "compile", "cudagraph", "onnxruntime",
            "onnxruntime-pipe", "fused", "int8")
DTYPES = ("float32", "float16", "bfloat16")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "not given" for keyword arguments whose None means something


@dataclass(frozen=True)
class ModelSpec:
    """The model's identity and where it runs.

    variant: ``"mobilenetv3"`` | ``"resnet50"``.
    weights: ``"default"`` (bundled, sha256-checked), a checkpoint path (``.pth``; with the
        ``onnxruntime`` backend also an exported ``.onnx``), or ``None`` (random init, testing).
    refiner: ``None`` (the one the weights come with), ``"fast_guided_filter"`` or
        ``"deep_guided_filter"``.
    device: ``None``/``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``.
    dtype: ``None`` (float16 on CUDA, else float32), ``"float32"``, ``"float16"``, ``"bfloat16"``.
    backend: one of :data:`BACKENDS`; ``"auto"`` is the fastest measured path for the device
        and ratio (:func:`rvmatte.runtime.auto_backend`).
    downsample: ``"auto"`` (longest side of the working image at most 512 px) or a ratio in
        (0, 1]; stored as ``None`` for auto.
    threads: the model's CPU threads (``None``: PyTorch's count, :mod:`rvmatte.hardware`).
    guidance: the network's extra inputs (:mod:`rvmatte.models.guidance`): ``None`` (those the
        weights come with; none for the bundled weights), ``()``, or names out of ``"plate"``,
        ``"mask"`` (a tuple, or one string ``"plate,mask"``); stored as a tuple or ``None``.
    """

    variant: str = "mobilenetv3"
    weights: Any = "default"
    refiner: Optional[str] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    backend: str = "auto"
    downsample: Any = None
    threads: Optional[int] = None
    guidance: Optional[tuple] = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise the frozen fields once
        if self.variant not in VARIANTS:
            raise WeightsError(f"unknown variant {self.variant!r}; choose from "
                               f"{', '.join(VARIANTS)}")
        if self.refiner is not None and self.refiner not in REFINERS:
            raise WeightsError(f"unknown refiner {self.refiner!r}; choose from "
                               f"{', '.join(REFINERS)}")
        if self.backend not in BACKENDS and not str(self.backend).startswith("onnxruntime:"):
            raise InputError(f"unknown backend {self.backend!r}; choose from "
                             f"{', '.join(BACKENDS)}")
        if isinstance(self.weights, os.PathLike):
            set_(self, "weights", os.fspath(self.weights))
        elif isinstance(self.weights, str) and self.weights.lower() == "none":
            set_(self, "weights", None)
        if self.device is not None:
            dev = str(self.device)
            set_(self, "device", None if dev == "auto" else dev)
        if self.dtype is not None:
            set_(self, "dtype", dtype_name(self.dtype))
        set_(self, "downsample", parse_downsample_ratio(self.downsample))
        if self.threads is not None:
            if isinstance(self.threads, bool) or int(self.threads) < 1:
                raise InputError(f"threads must be at least 1, got {self.threads}")
            set_(self, "threads", int(self.threads))
        if self.guidance is not None:
            try:
                set_(self, "guidance", guidance_inputs(self.guidance))
            except ValueError as e:
                raise WeightsError(str(e)) from None

    # -- building -------------------------------------------------------------------------
    @classmethod
    def of(cls, spec: Optional["ModelSpec"] = None, **fields: Any) -> "ModelSpec":
        """``spec`` (or the defaults) with the given fields replaced. A field given as
        :data:`UNSET`, or as ``None`` (except ``weights``, where ``None`` means random init),
        keeps the spec's value; ``downsample_ratio`` is the API's older name of ``downsample``."""
        if "downsample_ratio" in fields:
            ratio = fields.pop("downsample_ratio")
            if fields.get("downsample", UNSET) is UNSET:
                fields["downsample"] = ratio
        given = {k: v for k, v in fields.items()
                 if v is not UNSET and (v is not None or k == "weights")}
        base = spec if spec is not None else cls()
        return dataclasses.replace(base, **given) if given else base

    def replace(self, **fields: Any) -> "ModelSpec":
        return dataclasses.replace(self, **fields)

    # -- resolving (torch-free where possible) -----------------------------------------------
    def on_cpu(self) -> bool:
        """The model runs on the CPU (answered without torch where possible)."""
        return self.device_type() == "cpu"

    def device_type(self) -> str:
        """``"cpu"``, ``"cuda"`` or ``"mps"``."""
        return resolve_device(self.device).split(":")[0]

    def dtype_name(self) -> str:
        """The dtype the network runs in: the given one, else float16 on CUDA, else float32."""
        if self.dtype is not None:
            return self.dtype
        return "float16" if self.device_type() == "cuda" else "float32"

    def bundled(self) -> bool:
        """The bundled default weights, as they ship (with no guidance inputs added)."""
        return not self.guidance and uses_bundled(self.variant, self.weights, self.refiner)

    def fingerprint(self) -> dict:
        """What identifies the outputs this model makes (for checkpoints): the network, its
        weights (a file by size and modification time), dtype and backend. The device is left
        out on purpose only where it does not change numbers: it is kept."""
        w = self.weights
        if isinstance(w, str) and w != "default":
            try:
                st = os.stat(w)
                w = f"{os.path.abspath(w)}:{st.st_size}:{int(st.st_mtime)}"
            except OSError:
                pass
        return {"variant": self.variant, "weights": w, "refiner": self.refiner,
                "device": self.device, "dtype": self.dtype, "backend": self.backend,
                "downsample": self.downsample,
                **({"guidance": list(self.guidance)} if self.guidance is not None else {})}

    def load_model(self):
        """The PyTorch network of this spec (imports torch)."""
        from .weights import load_model

        return load_model(self.variant, refiner=self.refiner, weights=self.weights,
                          device=self.device, dtype=self.dtype_name(), guidance=self.guidance)
