"""ONNX export: graph contract and parity with PyTorch at another size, ratio 1 and < 1."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from rvmatte.errors import RvmatteError
from rvmatte.export.check import max_abs_diff
from rvmatte.export.onnx import INPUT_NAMES, OUTPUT_NAMES, export_onnx
from rvmatte.runtime.ort import OnnxRuntimeRunner

from .conftest import EXPORT_SIZE, TOL

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / f"{model.refiner_name}.onnx"
    proto = export_onnx(model, path, sample_size=EXPORT_SIZE)
    return path, proto


def test_graph_contract(exported):
    path, proto = exported
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == INPUT_NAMES
    assert [o.name for o in proto.graph.output] == OUTPUT_NAMES
    src = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in src] == ["batch", 3, "height", "width"]
    assert [n.op_type for n in proto.graph.node].count("If") == 1  # refiner only when ratio != 1
    assert not any(n.domain == "rvmatte" for n in proto.graph.node)
    onnx.checker.check_model(str(path))


def test_decoder_convolutions_are_split_for_blocked_kernels(exported):
    """No convolution reads a concatenation with a channel count ONNX Runtime's blocked CPU
    kernels cannot take: the decoder's four are split into one convolution per piece."""
    from onnx import numpy_helper

    _, proto = exported
    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "Conv" and n.input[0] in producer and producer[n.input[0]].op_type == "Concat":
            assert inits[n.input[1]].shape[1] % 8 == 0, n.name
    parts = [n.name for n in g.node if n.op_type == "Conv" and "/part" in n.name]
    assert len(parts) == 3 + 3 + 3 + 2  # decode3..decode1: upsampled, skip, source; decode0: 2


@pytest.mark.parametrize("size", [(77, 130), (130, 77)])
def test_parity_other_size(model, exported, size):
    runner = OnnxRuntimeRunner(onnx_path=exported[0], device="cpu")
    diffs = max_abs_diff(model, runner, size=size, ratios=(1.0, 0.5, 0.37), frames=3, batch=2)
    assert max(diffs.values()) <= TOL, diffs


def test_raw_session_first_frame_zeros(model, exported):
    """The documented protocol with a bare onnxruntime session: zeros (1,1,1,1), then r*o."""
    sess = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    src = torch.rand(3, 1, 3, 64, 100)
    rec = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    state = None
    for t in range(3):
        fgr, pha, *rec = sess.run(None, {"src": src[t].numpy(), "r1i": rec[0], "r2i": rec[1],
                                         "r3i": rec[2], "r4i": rec[3],
                                         "downsample_ratio": np.array([0.5], np.float32)})
        with torch.inference_mode():
            ref = model(src[t], state, 0.5)
        state = ref.state
        assert fgr.shape == (1, 3, 64, 100) and pha.shape == (1, 1, 64, 100)
        assert [r.shape for r in rec] == [tuple(s.shape) for s in ref.state]
        assert np.abs(fgr - ref.fgr.numpy()).max() <= TOL


def test_fp16_export_runs(model, tmp_path):
    if model.refiner_name != "fast_guided_filter":
        pytest.skip("one refiner is enough for the fp16 smoke test")
    path = tmp_path / "m16.onnx"
    proto = export_onnx(model, path, dtype="float16", sample_size=EXPORT_SIZE)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert proto.graph.input[-1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # ratio
    runner = OnnxRuntimeRunner(onnx_path=path, device="cpu")
    diffs = max_abs_diff(model, runner, ratios=(1.0, 0.5), frames=2)
    assert max(diffs.values()) < 0.1, diffs  # half precision


def test_simplify(model, tmp_path):
    pytest.importorskip("onnxsim")
    if model.refiner_name != "fast_guided_filter":
        pytest.skip("one refiner is enough")
    path = tmp_path / "sim.onnx"
    export_onnx(model, path, sample_size=EXPORT_SIZE, simplify_graph=True)
    diffs = max_abs_diff(model, OnnxRuntimeRunner(onnx_path=path, device="cpu"), ratios=(1.0, 0.5))
    assert max(diffs.values()) <= TOL, diffs


def test_bad_options(model, tmp_path):
    with pytest.raises(RvmatteError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=12)
    with pytest.raises(RvmatteError, match="bfloat16"):
        export_onnx(model, tmp_path / "a.onnx", dtype="bfloat16")
    with pytest.raises(RvmatteError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "a.onnx")
