"""Export the matting network to ONNX (opset >= 17).

The graph::

    inputs   src               (B, 3, H, W)   float32 | float16, RGB in [0, 1]
             r1i, r2i, r3i, r4i                recurrent state, same dtype as src; zeros of
                                               shape (1, 1, 1, 1) on a clip's first frame
             downsample_ratio  (1,)            float32, in (0, 1]
    outputs  fgr (B, 3, H, W), pha (B, 1, H, W), r1o, r2o, r3o, r4o   (feed r*o back as r*i)

Batch, height and width are dynamic. The downsample is an ONNX ``Resize`` with the ratio as
its scale (the semantics of ``interpolate(scale_factor=r, recompute_scale_factor=False)``), and
the guided-filter refiner sits inside an ``If`` on ``downsample_ratio != 1``, so ratio 1 gives
exactly what PyTorch gives (no refiner) and ratio < 1 runs it -- one graph for every ratio.

How: the legacy (TorchScript-based) exporter traces :class:`OnnxExportModule`, a wrapper that
calls the model's own sub-modules (``torch.export`` cannot keep the ratio an input: the working
size depends on its value). Two small rewrites of the traced graph follow:
:func:`_feed_ratio_to_resize` makes ``downsample_ratio`` the scale of the source ``Resize``
(traced with a constant 0.5 so every static dim stays known), and :func:`_wrap_refiner_in_if`
moves the refiner's nodes into the ``then`` branch of an ``If``. The Fast Guided Filter's
box-filter kernel is built from a traced channel count; :func:`_conv_symbolic` exports such
convolutions without ``kernel_shape`` (ONNX reads it from the weight).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import OutputError, RvmatteError
from ..models import MattingNetwork, downsample
from .names import (COEF_INPUT_NAMES, COEF_OUTPUT_NAMES, DEFAULT_OPSET, INPUT_NAMES,  # noqa: F401
                    MIN_OPSET, OUTPUT_NAMES)
from .wrapper import LowRes, Refine, finish

_MARKER = "SelectRefined"
_TRACE_RATIO = 0.5
_DOMAIN = "rvmatte"


class _SelectRefined(torch.autograd.Function):
    """Marker: refined outputs when ``ratio != 1``, else the low-resolution ones.

    Exported as a placeholder node that :func:`_wrap_refiner_in_if` turns into an ``If``.
    """

    @staticmethod
    def forward(ctx, ratio, fgr_ref, pha_ref, fgr_lo, pha_lo):  # noqa: D102
        if float(ratio.reshape(-1)[0]) != 1:
            return fgr_ref.clone(), pha_ref.clone()
        return fgr_lo.clone(), pha_lo.clone()

    @staticmethod
    def symbolic(g, ratio, fgr_ref, pha_ref, fgr_lo, pha_lo):  # noqa: D102
        fgr, pha = g.op(f"{_DOMAIN}::{_MARKER}", ratio, fgr_ref, pha_ref, fgr_lo, pha_lo, outputs=2)
        fgr.setType(fgr_ref.type())
        pha.setType(pha_ref.type())
        return fgr, pha


class OnnxExportModule(nn.Module):
    """``(src, r1, r2, r3, r4, downsample_ratio) -> (fgr, pha, r1, r2, r3, r4)`` around a model.

    In eager mode it computes both branches (export only); the exported graph runs one.
    """

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        self.low = LowRes(model)
        self.refine = Refine(model)

    def forward(self, src, r1, r2, r3, r4, downsample_ratio):
        # Traced with a fixed ratio; _feed_ratio_to_resize makes the ratio input the Resize scale.
        src_sm = downsample(src, _TRACE_RATIO)
        fgr_lo, pha_lo, hid, *rec = self.low(src_sm, r1, r2, r3, r4)
        fgr_ref, pha_ref = self.refine(src, src_sm, fgr_lo, pha_lo, hid)
        fgr_res, pha = _SelectRefined.apply(downsample_ratio, fgr_ref, pha_ref, fgr_lo, pha_lo)
        fgr, pha = finish(src, fgr_res, pha)
        return (fgr, pha, *rec)



def check_output_path(path) -> Path | None:
    """An export target: not a directory, in a folder that exists (``None`` passes through)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output is a directory: {path}")
    if not path.parent.exists():
        raise OutputError(f"output folder does not exist: {path.parent}")
    return path

def _conv_symbolic(g, input, weight, bias, stride, padding, dilation, transposed, output_padding,
                   groups, *rest):
    """``aten::_convolution`` that also exports kernels whose shape the tracer cannot see.

    The Fast Guided Filter builds its box-filter kernel from ``x.shape[1]``, which the tracer
    records as a computed shape; ONNX ``Conv`` may leave ``kernel_shape`` out (it is taken
    from the weight), which is what this does when the default symbolic gives up.
    """
    from torch.onnx import errors
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh
    from torch.onnx._internal.torchscript_exporter import symbolic_opset9 as op9

    try:
        return op9._convolution(g, input, weight, bias, stride, padding, dilation, transposed,
                                output_padding, groups, *rest)
    except errors.SymbolicValueError:
        if sh._get_const(transposed, "i", "transposed"):
            raise
    stride = sh._get_const(stride, "is", "stride")
    padding = sh._get_const(padding, "is", "padding")
    dilation = sh._get_const(dilation, "is", "dilation")
    args = [input, weight] + ([] if sh._is_none(bias) else [bias])
    return g.op("Conv", *args, strides_i=stride, pads_i=padding + padding, dilations_i=dilation,
                group_i=sh._get_const(groups, "i", "groups"))


class _ConvSymbolic:
    """Register :func:`_conv_symbolic` for the duration of one export."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def __enter__(self):
        torch.onnx.register_custom_op_symbolic("aten::_convolution", _conv_symbolic, self.opset)

    def __exit__(self, *exc):
        torch.onnx.unregister_custom_op_symbolic("aten::_convolution", self.opset)


def _feed_ratio_to_resize(model_proto):
    """Make ``downsample_ratio`` the scale of the ``Resize`` that downsamples ``src``.

    (Traced with a constant scale, which keeps every static dim known to the exporter.)
    """
    from onnx import TensorProto, helper

    graph = model_proto.graph
    resizes = [n for n in graph.node if n.op_type == "Resize" and n.input[0] == INPUT_NAMES[0]]
    if len(resizes) != 1:
        raise RuntimeError(f"expected one Resize of the source in the exported graph, found {len(resizes)}")
    resize = resizes[0]
    graph.initializer.append(helper.make_tensor("rvmatte_scale_nc", TensorProto.FLOAT, [2], [1.0, 1.0]))
    concat = helper.make_node("Concat", ["rvmatte_scale_nc", INPUT_NAMES[-1], INPUT_NAMES[-1]],
                              ["rvmatte_scales"], axis=0)
    if len(resize.input) < 3:
        raise RuntimeError("the source Resize has no scales input")
    resize.input[2] = "rvmatte_scales"
    if len(resize.input) > 3:
        resize.input[3] = ""
    nodes = list(graph.node)
    i = nodes.index(resize)
    graph.node.insert(i, concat)
    return model_proto


def _wrap_refiner_in_if(model_proto):
    """Replace the ``SelectRefined`` marker by ``If(ratio != 1)`` holding the refiner's nodes."""
    import onnx
    from onnx import TensorProto, helper

    graph = model_proto.graph
    nodes = list(graph.node)
    idx = [i for i, n in enumerate(nodes) if n.op_type == _MARKER]
    if len(idx) != 1:
        raise RuntimeError(f"expected one {_MARKER} node in the exported graph, found {len(idx)}")
    mi = idx[0]
    marker = nodes[mi]
    ratio, fgr_ref, pha_ref, fgr_lo, pha_lo = marker.input
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}

    def ancestors(names, skip_refined: bool) -> set[int]:
        seen: set[int] = set()
        stack = [producer[x] for x in names if x in producer]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            ins = nodes[i].input
            if i == mi and skip_refined:
                ins = [ratio, fgr_lo, pha_lo]
            stack.extend(producer[x] for x in ins if x in producer)
            for attr in nodes[i].attribute:  # values captured by existing sub-graphs
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.extend(producer[x] for sub in attr.g.node for x in sub.input if x in producer)
        return seen

    keep = ancestors([o.name for o in graph.output], skip_refined=True)
    branch = sorted(ancestors([fgr_ref, pha_ref], skip_refined=False) - keep)
    if not branch:
        raise RuntimeError("the refiner branch of the exported graph is empty")
    elem = {vi.name: vi for vi in list(graph.value_info)}
    out_type = next(o.type.tensor_type.elem_type for o in graph.output if o.name == OUTPUT_NAMES[0])

    then_graph = helper.make_graph(
        [nodes[i] for i in branch], "refine",
        inputs=[],
        outputs=[helper.make_tensor_value_info(fgr_ref, out_type, None),
                 helper.make_tensor_value_info(pha_ref, out_type, None)],
        value_info=[elem[o] for i in branch for o in nodes[i].output
                    if o in elem and o not in (fgr_ref, pha_ref)])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", [fgr_lo], ["else_fgr"]),
         helper.make_node("Identity", [pha_lo], ["else_pha"])], "no_refine",
        inputs=[],
        outputs=[helper.make_tensor_value_info("else_fgr", out_type, None),
                 helper.make_tensor_value_info("else_pha", out_type, None)])
    one = helper.make_tensor("rvmatte_one", TensorProto.FLOAT, [1], [1.0])
    graph.initializer.append(one)
    new_nodes = [
        helper.make_node("Equal", [ratio, "rvmatte_one"], ["rvmatte_ratio_is_one"]),
        helper.make_node("Not", ["rvmatte_ratio_is_one"], ["rvmatte_refine"]),
        helper.make_node("If", ["rvmatte_refine"], list(marker.output), name="refine_if_downsampled",
                         then_branch=then_graph, else_branch=else_graph),
    ]
    branch_set = set(branch)
    moved = {o for i in branch for o in nodes[i].output}
    rebuilt = []
    for i, n in enumerate(nodes):
        if i == mi:
            rebuilt.extend(new_nodes)
        elif i not in branch_set:
            rebuilt.append(n)
    del graph.node[:]
    graph.node.extend(rebuilt)
    vis = [vi for vi in graph.value_info if vi.name not in moved]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    # The marker's custom domain is gone.
    opsets = [o for o in model_proto.opset_import if o.domain != _DOMAIN]
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(opsets)
    return model_proto


def _split_concat_convs(model_proto, block: int = 8):
    """Give ONNX Runtime's blocked (NCHWc) CPU kernels the decoder's concatenating convolutions.

    Each decoder block convolves ``cat([upsampled, skip, source])``: 35, 59, 107 and 171 input
    channels, which ONNX Runtime cannot run in its blocked layout, so it fell back to a kernel
    that took 31 % of the network's time at 480x270 (docs/SPEED.md). A convolution of a
    concatenation is the sum of the convolutions of its pieces, so each such ``Conv`` becomes
    one ``Conv`` per piece (the bias on the first) and ``Add`` s -- the pieces (32, 40, 80,
    128 channels...) run blocked, and the concatenation is gone: 11 % less time per network
    run. The sums differ from the original only by float rounding. Convolutions whose input
    channels already are a multiple of ``block``, grouped ones, and any whose pieces' channel
    counts cannot be inferred are left as they are.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model_proto).graph
    except Exception:  # noqa: BLE001 - an optimisation only: leave the graph as it is
        return model_proto
    channels = {}
    for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[v.name] = dims[1].dim_value
    uses: dict[str, int] = {}

    def count(g) -> None:
        for n in g.node:
            for x in n.input:
                uses[x] = uses.get(x, 0) + 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    count(a.g)

    count(graph)
    for o in graph.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    replace: dict[int, list] = {}
    dropped: set[int] = set()
    old_weights: set[str] = set()
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        if any(a.name == "group" and a.i != 1 for a in n.attribute):
            continue
        cat = producer.get(n.input[0])
        if (cat is None or cat.op_type != "Concat" or uses.get(n.input[0]) != 1
                or not any(a.name == "axis" and a.i in (1, -3) for a in cat.attribute)):
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if w.ndim != 4 or w.shape[1] % block == 0:
            continue
        pieces = [channels.get(x) for x in cat.input]
        if pieces.count(None) == 1:  # e.g. a Slice's output: whatever the others leave
            pieces[pieces.index(None)] = w.shape[1] - sum(c for c in pieces if c)
        if None in pieces or min(pieces) < 1 or sum(pieces) != w.shape[1]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        name = n.name or n.output[0]
        nodes, parts, start = [], [], 0
        for i, (x, c) in enumerate(zip(cat.input, pieces)):
            wn = f"{name}/w{i}"
            graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(w[:, start:start + c]), wn))
            start += c
            ins = [x, wn] + (list(n.input[2:3]) if i == 0 else [])
            parts.append(f"{name}/part{i}")
            nodes.append(helper.make_node("Conv", ins, [parts[-1]], name=f"{name}/part{i}", **attrs))
        acc = parts[0]
        for i, part in enumerate(parts[1:], 1):
            out = n.output[0] if i == len(parts) - 1 else f"{name}/sum{i}"
            nodes.append(helper.make_node("Add", [acc, part], [out], name=f"{name}/add{i}"))
            acc = out
        replace[id(n)] = nodes
        dropped.add(id(cat))
        old_weights.add(n.input[1])
    if not replace:
        return model_proto
    rebuilt = []
    for n in graph.node:
        if id(n) in dropped:
            continue
        rebuilt.extend(replace.get(id(n), [n]))
    kept = [i for i in graph.initializer if i.name not in old_weights or uses[i.name] > 1]
    del graph.node[:]
    graph.node.extend(rebuilt)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model_proto


def simplify(model_proto):
    """Run onnxsim (``pip install onnxsim``) on a dynamic-shape model; returns the new proto."""
    try:
        import onnxsim
    except ImportError:
        raise RvmatteError("onnxsim is not installed (pip install onnxsim)") from None
    simplified, ok = onnxsim.simplify(model_proto, check_n=0)
    if not ok:
        raise RvmatteError("onnxsim could not validate the simplified model")
    return simplified


def _trace(module: nn.Module, args: tuple, input_names: list, output_names: list,
           dynamic_axes: dict, dt: torch.dtype, opset: int):
    """Trace ``module(args[0], r1, r2, r3, r4, *args[1:])`` with first-frame zero states to
    an ``onnx.ModelProto``; the states get dynamic axes (inputs ``r*i``, outputs ``r*o``)."""
    import onnx

    zeros = torch.zeros(1, 1, 1, 1, dtype=dt)
    axes = dict(dynamic_axes)
    for k in range(1, 5):
        axes[f"r{k}i"] = {0: f"r{k}_batch", 1: f"r{k}_channels", 2: f"r{k}_height", 3: f"r{k}_width"}
        axes[f"r{k}o"] = {0: "batch", 2: f"r{k}o_height", 3: f"r{k}o_width"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _ConvSymbolic(opset):
        warnings.simplefilter("ignore")  # tracer warnings about Python ints; sizes are traced
        torch.onnx.export(module, (args[0], zeros, zeros, zeros, zeros, *args[1:]), buf,
                          dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, do_constant_folding=True,
                          custom_opsets=({_DOMAIN: 1} if isinstance(module, OnnxExportModule)
                                         else None))
    return _split_concat_convs(onnx.load_from_string(buf.getvalue()))


def _prepare(model: MattingNetwork, dtype, opset: int, path):
    """Check an export's options; returns ``(a CPU copy of model in dtype, dtype, path)``."""
    import copy

    from ..weights import resolve_dtype

    if opset < MIN_OPSET:
        raise RvmatteError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    dt = resolve_dtype(dtype)
    if dt not in (torch.float32, torch.float16):
        raise RvmatteError(f"ONNX export supports float32 and float16, not {dt}")
    path = check_output_path(path)
    return copy.deepcopy(model).to(device="cpu", dtype=dt).eval(), dt, path


def export_onnx(model: MattingNetwork, path: str | os.PathLike | None = None, *,
                dtype: str | torch.dtype | None = None, opset: int = DEFAULT_OPSET,
                sample_size: tuple[int, int] = (288, 512), simplify_graph: bool = False,
                check: bool = True):
    """Export ``model`` to ONNX; returns the ``onnx.ModelProto`` (also written to ``path``).

    dtype: ``float32`` (default) or ``float16`` (weights and tensors; the ratio stays float32).
    sample_size: ``(H, W)`` of the tracing input; the graph is dynamic in batch, H and W.
    simplify_graph: run onnxsim on the result (optional dependency).
    """
    m, dt, path = _prepare(model, dtype, opset, path)
    h, w = sample_size
    proto = _trace(OnnxExportModule(m).eval(),
                   (torch.rand(1, 3, h, w, dtype=dt), torch.tensor([0.5], dtype=torch.float32)),
                   INPUT_NAMES, OUTPUT_NAMES, {"src": _SPATIAL, "fgr": _SPATIAL, "pha": _SPATIAL},
                   dt, opset)
    proto = _wrap_refiner_in_if(_feed_ratio_to_resize(proto))
    if simplify_graph:
        proto = simplify(proto)
    return _finish(proto, path, check,
                   f"rvmatte RVM {model.variant}/{model.refiner_name} {_dt_name(dt)}. Feed zeros "
                   "(1,1,1,1) as r1i..r4i on the first frame, then r*o of the previous frame; "
                   "downsample_ratio float32 (1,) in (0, 1].")


_SPATIAL = {0: "batch", 2: "height", 3: "width"}


def _dt_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _finish(proto, path: Path | None, check: bool, doc: str):
    """Name and describe ``proto``, check it, write it to ``path`` atomically (a reader never
    sees a half-written file); returns it."""
    import onnx

    proto.producer_name = "rvmatte"
    proto.doc_string = doc
    if check:
        onnx.checker.check_model(proto)
    if path is not None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            onnx.save(proto, str(tmp))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written part behind
            raise
    return proto


def split_refiner(model_proto):
    """Split an exported model into ``(low, refine)`` graphs for two-stage pipelining.

    ``low``: the exported inputs -> the refiner's inputs from the network (``refine_inputs``),
    ``fgr_lo``/``pha_lo`` (names ``"fgr_lo"``, ``"pha_lo"``: the working-resolution residual and
    alpha) and ``r1o..r4o``. ``refine``: ``src`` + ``refine_inputs`` -> ``fgr_residual``, ``pha``
    at full size (before the final ``clamp(src + residual)``). The recurrence lives in ``low``
    alone, so frame t's ``refine`` can run while frame t+1's ``low`` does.
    """
    import copy as _copy

    from onnx import helper

    proto = _copy.deepcopy(model_proto)
    graph = proto.graph
    ifs = [n for n in graph.node if n.op_type == "If"]
    if len(ifs) != 1:
        raise RuntimeError("not an rvmatte ONNX export (no refiner If)")
    node = ifs[0]
    then_g = next(a.g for a in node.attribute if a.name == "then_branch")
    else_g = next(a.g for a in node.attribute if a.name == "else_branch")
    fgr_lo, pha_lo = (n.input[0] for n in else_g.node)
    produced = {o for n in then_g.node for o in n.output} | {i.name for i in then_g.initializer}
    needed = []
    for n in then_g.node:
        for x in n.input:
            if x and x not in produced and x not in needed:
                needed.append(x)
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    elem = graph.input[0].type.tensor_type.elem_type
    acts = [x for x in needed if x not in inits and x not in consts]
    refine = helper.make_graph(
        [consts[x] for x in needed if x in consts] + list(then_g.node), "rvmatte_refine",
        inputs=[helper.make_tensor_value_info(x, elem, [None] * 4) for x in acts],
        outputs=[helper.make_tensor_value_info(o.name, elem, [None] * 4) for o in then_g.output],
        initializer=[inits[x] for x in needed if x in inits])
    refine_proto = helper.make_model(refine, opset_imports=list(proto.opset_import),
                                     producer_name="rvmatte")
    refine_proto.ir_version = proto.ir_version
    # low: drop the If and everything after it; expose what the refiner needs.
    nodes = list(graph.node)
    frontier = set(node.output)
    keep = []
    for n in nodes:
        if n.op_type == "If" or any(x in frontier for x in n.input):
            frontier.update(n.output)
        else:
            keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)
    graph_inputs = {i.name for i in graph.input}
    rec_outputs = [o for o in graph.output if o.name not in OUTPUT_NAMES[:2]]
    outs = [helper.make_node("Identity", [fgr_lo], ["fgr_lo"]),
            helper.make_node("Identity", [pha_lo], ["pha_lo"])]
    graph.node.extend(outs)
    del graph.output[:]
    exposed = [x for x in acts if x not in graph_inputs]
    graph.output.extend([helper.make_tensor_value_info(x, elem, [None] * 4) for x in exposed]
                        + [helper.make_tensor_value_info("fgr_lo", elem, [None] * 4),
                           helper.make_tensor_value_info("pha_lo", elem, [None] * 4)] + rec_outputs)
    return proto, refine_proto, acts




def export_coefficients_onnx(model: MattingNetwork, path: str | os.PathLike | None = None, *,
                             dtype: str | torch.dtype | None = None, opset: int = DEFAULT_OPSET,
                             sample_size: tuple[int, int] = (144, 256), check: bool = True):
    """Export the working-resolution half of ``model``: ``src_sm (B,3,h,w)`` (the frame already
    downsampled), ``r1i..r4i`` -> the refiner's coefficients ``a``, ``b`` (B,4,h,w) and
    ``r1o..r4o`` (:class:`~rvmatte.export.wrapper.Coefficients`). The full-resolution step is
    left to the caller (rvmatte's fused CPU kernel, :mod:`rvmatte.runtime.kernels`). Returns the
    ``onnx.ModelProto`` (also written to ``path``)."""
    from .wrapper import Coefficients

    m, dt, path = _prepare(model, dtype, opset, path)
    h, w = sample_size
    proto = _trace(Coefficients(m).eval(), (torch.rand(1, 3, h, w, dtype=dt),),
                   COEF_INPUT_NAMES, COEF_OUTPUT_NAMES,
                   {"src_sm": _SPATIAL, "a": _SPATIAL, "b": _SPATIAL}, dt, opset)
    return _finish(proto, path, check, f"rvmatte RVM {model.variant}/{model.refiner_name} "
                   f"coefficients {_dt_name(dt)}")
