"""ONNX Runtime backend: run the exported graph with the model's call signature.

``OnnxRuntimeRunner(...)(src, state, downsample_ratio) -> MattingOutput`` takes and returns
torch tensors like ``MattingNetwork.forward``. Without ``onnx_path`` the model is built with
:func:`rvmatte.load_model` (same keywords) and exported once into the user cache
(``$RVMATTE_CACHE_DIR`` or ``~/.cache/rvmatte/onnx/``), keyed by a hash of the weights.

PyTorch is imported only when something needs it (an export, torch tensors in or out, a
device name only torch can check): a cached export of the bundled weights runs on the CPU
without it (:mod:`rvmatte.hardware`).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ..bundled import uses_bundled
from ..errors import RvmatteError, WeightsError, one_line
from ..export.names import DEFAULT_OPSET
from ..hardware import default_threads, dtype_name, gpu_possible
from .cache import _graph, _load_model, bundled_onnx, cached_onnx

if TYPE_CHECKING:
    import torch

    from ..models import MattingNetwork, MattingOutput


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise RvmatteError("onnxruntime is not installed; install it with: pip install 'rvmatte[onnx]'"
                           ) from None
    return ort



def _providers(device: tuple[str, Optional[int]], available: Sequence[str]) -> list:
    kind, index = device
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RvmatteError("onnxruntime has no CUDA execution provider here "
                               "(pip install onnxruntime-gpu), or use --device cpu")
        return [("CUDAExecutionProvider", {"device_id": index or 0}), "CPUExecutionProvider"]
    if kind != "cpu":
        raise RvmatteError(f"the onnxruntime backend runs on cpu or cuda, not {kind}")
    return ["CPUExecutionProvider"]


def _resolve_device(device: Any, available: Sequence[str]) -> tuple[str, Optional[int]]:
    """``(type, index)`` of the device the graph runs on; torch is asked only when the answer
    depends on it (a default device on a machine that may have a GPU, an unusual name)."""
    if device is None or device == "auto":
        cuda = False
        if "CUDAExecutionProvider" in available and gpu_possible():
            import torch

            cuda = torch.cuda.is_available()
        return ("cuda", None) if cuda else ("cpu", None)
    if isinstance(device, str) and device == "cpu":
        return "cpu", None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise RvmatteError(f"invalid device {device!r}: {e}") from None
    return dev.type, dev.index


class OnnxRuntimeRunner:
    """Run RVM with ONNX Runtime; called like the PyTorch model.

    Keywords as :func:`rvmatte.load_model` (``variant``, ``weights``, ``refiner``, ``device``,
    ``dtype``), or ``model=`` an already-built :class:`MattingNetwork`, or ``onnx_path=`` an
    exported file (see :mod:`rvmatte.export.onnx`). ``device``: ``cpu`` (CPU execution
    provider), ``cuda[:N]`` (CUDA provider), ``None``/``"auto"`` (CUDA when both onnxruntime-gpu
    and a GPU are present). ``threads``: intra-op threads (default: torch's count,
    :func:`rvmatte.hardware.default_threads`);
    ``spin``: let idle intra-op workers spin (lower latency on an otherwise idle machine).
    ``pipeline``: split the graph at the refiner (:func:`~rvmatte.export.onnx.split_refiner`) and,
    for clips (B,T,3,H,W) at ratio < 1, run frame t's full-size refinement in a worker thread
    while frame t+1's network runs (one intra-op thread per stage unless ``threads``).
    ``graph="coefficients"``: open the working-resolution graph instead
    (:func:`~rvmatte.export.onnx.export_coefficients_onnx`) and run it with
    :meth:`coefficients`; used by :class:`rvmatte.runtime.fused.FusedRunner`.
    """

    def __init__(self, variant: str = "mobilenetv3", *, weights: Any = "default",
                 refiner: Optional[str] = None, device: Any = None, dtype: Any = None,
                 model: Optional[MattingNetwork] = None, onnx_path: str | os.PathLike | None = None,
                 threads: Optional[int] = None, providers: Optional[Sequence] = None,
                 opset: int = DEFAULT_OPSET, spin: bool = False, pipeline: bool = False,
                 graph: str = "full", guidance: Any = None) -> None:
        if guidance:
            raise RvmatteError("the ONNX graphs take no guidance inputs (plate, mask): run a "
                               "guided network with backend torch")
        _, input_names, _ = _graph(graph)
        if pipeline and graph != "full":
            raise ValueError("pipeline=True splits the full graph")
        self.graph = graph

        ort = _import_ort()
        available = ort.get_available_providers()
        self._device = _resolve_device(device, available)
        self._dtype = dtype_name(dtype)
        if self._dtype not in ("float32", "float16"):
            raise RvmatteError("the onnxruntime backend supports float32 and float16, not "
                               f"torch.{self._dtype}")
        # How to (re-)make the file when it is ours, in the export cache; None for a user's file.
        rebuild: Optional[Callable[[], Path]] = None
        if onnx_path is None and model is None and uses_bundled(variant, weights, refiner):
            rebuild = partial(bundled_onnx, variant, dtype=self._dtype, opset=opset, graph=graph)
        elif onnx_path is None:
            if model is None:
                model = _load_model(variant, refiner=refiner, weights=weights, device="cpu")
            rebuild = partial(cached_onnx, model, dtype=self._dtype, opset=opset, graph=graph)
        if rebuild is not None:
            onnx_path = rebuild()
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise WeightsError(f"ONNX file not found: {self.onnx_path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Same intra-op thread count as torch unless told (on a busy machine fewer threads can be
        # much faster: spinning workers fight for the cores; see docs/SPEED.md).
        opts.intra_op_num_threads = int(threads or default_threads())
        # Idle workers sleep instead of spinning: on the shared 2-core machine this was 9-30%
        # faster (docs/SPEED.md); pass spin=True on a dedicated machine.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        self.providers = list(providers) if providers else _providers(self._device, available)
        self.pipeline = pipeline
        self._pool = None
        if pipeline and not threads:
            opts.intra_op_num_threads = 1
        for retry in (False, True):
            try:
                self._open(ort, opts)
                break
            except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph...)
                if rebuild is None or retry:
                    raise WeightsError(f"onnxruntime cannot load {self.onnx_path}: "
                                       f"{one_line(e)}") from None
                # A damaged file in our own cache: export it again, once.
                self.onnx_path.unlink(missing_ok=True)
                self.onnx_path = Path(rebuild())
        names = [i.name for i in self.session.get_inputs()]
        if names != input_names:
            raise WeightsError(f"{self.onnx_path} is not an rvmatte export (inputs {names})")
        src_type = self.session.get_inputs()[0].type
        self._np_dtype = np.float16 if "float16" in src_type else np.float32
        self._zero = np.zeros((1, 1, 1, 1), dtype=self._np_dtype)

    @property
    def device(self) -> "torch.device":
        import torch

        return torch.device(*[v for v in self._device if v is not None])

    @property
    def dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self._dtype)

    def _open(self, ort, opts) -> None:
        if self.pipeline:
            import onnx

            from ..export.onnx import split_refiner

            low, refine, self._refine_inputs = split_refiner(onnx.load(str(self.onnx_path)))
            self.session = ort.InferenceSession(low.SerializeToString(), sess_options=opts,
                                                providers=self.providers)
            self._refine = ort.InferenceSession(refine.SerializeToString(), sess_options=opts,
                                                providers=self.providers)
            self._low_names = [o.name for o in self.session.get_outputs()]
        else:
            self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                                providers=self.providers)

    def __repr__(self) -> str:
        return f"OnnxRuntimeRunner({self.onnx_path.name}, providers={self.providers})"

    def _run_frame(self, src: np.ndarray, rec: list, ratio: np.ndarray) -> list[np.ndarray]:
        feeds = {"src": src, "r1i": rec[0], "r2i": rec[1], "r3i": rec[2], "r4i": rec[3],
                 "downsample_ratio": ratio}
        return self.session.run(None, feeds)

    def state_arrays(self, state) -> list[np.ndarray]:
        """``None`` (a clip's first frame: zeros ``(1,1,1,1)``) or four tensors / arrays ->
        the four state inputs as numpy arrays in the graph's dtype."""
        if state is None:
            return [self._zero] * 4
        return [(s.detach().to("cpu").numpy() if hasattr(s, "detach") else np.asarray(s))
                .astype(self._np_dtype, copy=False) for s in state]

    def coefficients(self, src_sm: np.ndarray, rec: Sequence[np.ndarray]):
        """``graph="coefficients"``: ``src_sm`` (B,3,h,w), ``rec`` the four state arrays (zeros
        ``(1,1,1,1)`` on the first frame) -> ``[a, b, r1, r2, r3, r4]`` as numpy arrays."""
        feeds = {"src_sm": np.ascontiguousarray(src_sm, self._np_dtype)}
        for k, r in enumerate(rec, 1):
            feeds[f"r{k}i"] = np.ascontiguousarray(r, self._np_dtype)
        return self.session.run(None, feeds)

    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        """``src``: (B,3,H,W) or (B,T,3,H,W) float in [0, 1]; ``state``: ``None`` or the last
        call's ``out.state``. Returns ``MattingOutput`` on ``src``'s device, in the graph's dtype.
        """
        import torch

        from ..models.outputs import MattingOutput

        if self.graph != "full":
            raise RuntimeError("this runner holds the coefficients graph: use .coefficients()")
        if src.ndim not in (4, 5) or src.shape[-3] != 3:
            raise ValueError(f"src must be (B,3,H,W) or (B,T,3,H,W), got {tuple(src.shape)}")
        r = float(downsample_ratio)
        if not 0 < r <= 1:
            raise ValueError(f"downsample_ratio must be in (0, 1], got {downsample_ratio}")
        out_device = src.device
        x = src.detach().to("cpu").numpy().astype(self._np_dtype, copy=False)
        rec = self.state_arrays(state)
        ratio = np.array([r], dtype=np.float32)
        if self.pipeline:
            return self._call_pipelined(x, rec, ratio, out_device)
        if x.ndim == 4:
            fgr, pha, *rec = self._run_frame(np.ascontiguousarray(x), rec, ratio)
        else:
            fgrs, phas = [], []
            for t in range(x.shape[1]):
                f, p, *rec = self._run_frame(np.ascontiguousarray(x[:, t]), rec, ratio)
                fgrs.append(f)
                phas.append(p)
            fgr, pha = np.stack(fgrs, axis=1), np.stack(phas, axis=1)

        def back(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(out_device)

        return MattingOutput(back(fgr), back(pha), tuple(back(s) for s in rec))

    # -- two-stage pipeline -----------------------------------------------------------------
    def _finish(self, src: np.ndarray, fgr: np.ndarray, pha: np.ndarray):
        """``clamp(src + residual)``, ``clamp(pha)`` as the full graph does (in place)."""
        np.add(fgr, src, out=fgr)
        np.clip(fgr, 0, 1, out=fgr)
        np.clip(pha, 0, 1, out=pha)
        return fgr, pha

    def _refine_frame(self, src: np.ndarray, feeds: dict):
        fgr, pha = self._refine.run(None, feeds)
        return self._finish(src, fgr, pha)

    def _call_pipelined(self, x: np.ndarray, rec: list, ratio: np.ndarray, out_device) -> MattingOutput:
        import torch

        from ..models.outputs import MattingOutput

        clip = x.ndim == 5
        frames = [np.ascontiguousarray(x[:, t]) for t in range(x.shape[1])] if clip else [x]
        refine = float(ratio[0]) != 1
        if refine and len(frames) > 1 and self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvmatte-refine")
        results = []
        for src in frames:
            feeds = {"src": src, "r1i": rec[0], "r2i": rec[1], "r3i": rec[2], "r4i": rec[3],
                     "downsample_ratio": ratio}
            low = dict(zip(self._low_names, self.session.run(None, feeds)))
            rec = [low[n] for n in ("r1o", "r2o", "r3o", "r4o")]
            if not refine:  # ratio 1: the network's output is the result (no refiner)
                results.append(self._finish(src, low["fgr_lo"], low["pha_lo"]))
                continue
            rfeeds = {k: (src if k == "src" else low[k]) for k in self._refine_inputs}
            if len(frames) > 1:  # overlap this frame's refinement with the next frame's network
                results.append(self._pool.submit(self._refine_frame, src, rfeeds))
            else:
                results.append(self._refine_frame(src, rfeeds))
        results = [r.result() if hasattr(r, "result") else r for r in results]
        if clip:
            fgr = np.stack([f for f, _ in results], axis=1)
            pha = np.stack([p for _, p in results], axis=1)
        else:
            fgr, pha = results[0]

        def back(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(out_device)

        return MattingOutput(back(fgr), back(pha), tuple(back(s) for s in rec))

    def close(self) -> None:
        """Stop the pipeline's worker thread (also done at garbage collection)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
