"""The PyTorch runners: the model as is, with BatchNorm folded and channels-last, under
``torch.compile``, or replayed from CUDA graphs (see :mod:`rvmatte.runtime` for the list and
the protocol they share). Every CUDA-only path is guarded by ``torch.cuda.is_available()`` and
falls back to the CPU path."""

from __future__ import annotations

import copy
import os
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import one_line
from ..models import MattingNetwork, MattingOutput

# --------------------------------------------------------------------------- BatchNorm folding
def _fuse_pairs(parent: nn.Module, pairs: Sequence[tuple[str, str]]) -> int:
    n = 0
    for conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, nn.Identity())
            n += 1
    return n


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with each BatchNorm2d folded into the Conv2d before it.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``:
    exact in real arithmetic, ~1e-6 in fp32. Inference only (the copy has no BatchNorm to
    train, and its state dict no longer has the official keys). Handles ``Conv, BN`` in any
    ``nn.Sequential`` (MobileNetV3, LR-ASPP, decoder, Deep Guided Filter) and ResNet's
    ``convK``/``bnK`` attribute pairs and ``downsample`` blocks.
    """
    m = copy.deepcopy(model).eval()
    for module in list(m.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                if isinstance(children[i], nn.Conv2d) and isinstance(children[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(children[i], children[i + 1])
                    module[i + 1] = nn.Identity()
        _fuse_pairs(module, [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
    return m


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in model.modules())


# --------------------------------------------------------------------------------- runners
class TorchRunner:
    """The PyTorch model under ``inference_mode``, optionally with the inference-only transforms.

    fuse_bn: run a BatchNorm-folded copy. channels_last: NHWC weights (faster convolutions
    with oneDNN / cuDNN), and NHWC inputs at ratio 1. compile: ``torch.compile`` the model (``"reduce-overhead"``
    = CUDA graphs on a GPU). dtype: cast the copy and the inputs (``bfloat16`` on CPUs with
    AVX-512 BF16/AMX, ``float16`` on GPUs); outputs come back in that dtype.
    """

    def __init__(self, model: MattingNetwork, *, fuse_bn: bool = True, channels_last: bool = True,
                 compile: bool = False, dtype: Optional[torch.dtype] = None) -> None:
        m = fuse_batchnorm(model) if fuse_bn else model.eval()
        if dtype is not None:
            m = (m if fuse_bn else copy.deepcopy(m)).to(dtype=dtype)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        p = next(m.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.channels_last = channels_last
        self.model = m
        self._call: Callable = m
        self._cudagraphs = compile and self.device.type == "cuda" and torch.cuda.is_available()
        if compile:
            mode = "reduce-overhead" if self._cudagraphs else None
            self._call = torch.compile(m, mode=mode, dynamic=False)

    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        with torch.inference_mode():
            x = src.to(self.device, self.dtype)
            if self.channels_last and x.ndim == 4 and downsample_ratio == 1:
                # NHWC input only when the network runs at full size: with r < 1 the full-size
                # part is the refiner's elementwise work, which was slower in NHWC (docs/SPEED.md).
                x = x.contiguous(memory_format=torch.channels_last)
            if state is not None:
                state = tuple(s.to(self.device, self.dtype) for s in state)
            if self._cudagraphs:
                # CUDA graphs reuse their output buffers on the next replay: copy them out.
                torch.compiler.cudagraph_mark_step_begin()
                out = self._call(x, state, downsample_ratio)
                return MattingOutput(out[0].clone(), out[1].clone(), tuple(s.clone() for s in out[2]))
            out = self._call(x, state, downsample_ratio)
            return MattingOutput(out[0], out[1], tuple(out[2]))


class _Graph:
    """One captured CUDA graph with its static input, state and output tensors."""

    def __init__(self, graph, src, state_in, out) -> None:
        self.graph = graph
        self.src, self.state_in = src, state_in
        self.fgr, self.pha, self.state_out = out[0], out[1], tuple(out[2])


class CudaGraphRunner:
    """``torch-fast`` replayed from CUDA graphs: the launch overhead of the ~300 small kernels
    per frame (MobileNetV3, four ConvGRUs stepping through time, the refiner) disappears, which
    is what limits a small network on a large GPU.

    One graph is captured per (input shape, ratio) on first use, after two warm-up calls (where
    cuDNN picks its algorithms, autotuned if ``autotune``); at most ``max_graphs`` are kept (least recently used dropped).
    The graph always takes a recurrent state: ``state=None`` is fed as zeros, which is exactly
    what the network does with ``None``. Outputs are copied out of the graph's buffers, so
    they stay valid after the next call. On a CPU, or if capturing fails, it runs
    ``torch-fast`` eagerly (``self.fallback_reason`` says why).
    """

    def __init__(self, model: MattingNetwork, *, dtype: Optional[torch.dtype] = None,
                 fuse_bn: bool = True, channels_last: bool = True, max_graphs: int = 4,
                 autotune: Optional[bool] = None) -> None:
        self.inner = TorchRunner(model, fuse_bn=fuse_bn, channels_last=channels_last, dtype=dtype)
        # cuDNN autotuning (``cudnn.benchmark``) during the warm-up before a capture; None keeps
        # the process-wide setting (or $RVMATTE_CUDNN_BENCHMARK=0/1).
        env = os.environ.get("RVMATTE_CUDNN_BENCHMARK")
        self.autotune = autotune if autotune is not None else (
            env == "1" if env in ("0", "1") else torch.backends.cudnn.benchmark)
        self.device, self.dtype = self.inner.device, self.inner.dtype
        self.max_graphs = max(1, int(max_graphs))
        self._graphs: dict = {}
        self.fallback_reason: Optional[str] = None
        if self.device.type != "cuda" or not torch.cuda.is_available():
            self.fallback_reason = "not a CUDA device"

    def _capture(self, x: torch.Tensor, ratio: float) -> _Graph:
        model = self.inner.model
        bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bool(self.autotune)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            static_src = x.clone()
            with torch.cuda.stream(side), torch.inference_mode():
                out = model(static_src, None, ratio)
                state_in = tuple(torch.zeros_like(t) for t in out[2])
                out = model(static_src, state_in, ratio)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                out = model(static_src, state_in, ratio)
            return _Graph(graph, static_src, state_in, out)
        finally:
            torch.backends.cudnn.benchmark = bench

    def __call__(self, src: torch.Tensor, state=None, downsample_ratio: float = 1.0) -> MattingOutput:
        if self.fallback_reason is not None:
            return self.inner(src, state, downsample_ratio)
        with torch.inference_mode():
            x = src.to(self.device, self.dtype)
            key = (tuple(x.shape), float(downsample_ratio))
            g = self._graphs.pop(key, None)
            if g is None:
                try:
                    g = self._capture(x, float(downsample_ratio))
                except RuntimeError as e:  # capture unsupported here: run eagerly from now on
                    self.fallback_reason = f"CUDA graph capture failed: {one_line(e)}"
                    self._graphs.clear()
                    return self.inner(src, state, downsample_ratio)
                while len(self._graphs) >= self.max_graphs:
                    self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = g  # most recently used last
            g.src.copy_(x)
            if state is None:
                for t in g.state_in:
                    t.zero_()
            else:
                for t, s in zip(g.state_in, state):
                    t.copy_(s)
            g.graph.replay()
            return MattingOutput(g.fgr.clone(), g.pha.clone(), tuple(t.clone() for t in g.state_out))
