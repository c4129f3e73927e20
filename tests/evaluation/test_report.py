import json

import numpy as np
import pytest

from rvmatte.errors import InputError, OutputError
from rvmatte.evaluation.evaluate import evaluate_folders
from rvmatte.evaluation.frames import read_alpha
from rvmatte.evaluation.report import Method, build_methods, missing_peers, run_benchmark
from rvmatte.spec import ModelSpec

from .conftest import PEERS_DIR

RANDOM = ModelSpec(weights=None, device="cpu")


def _zeros():
    return Method("zeros", "all background", lambda frames, r: (np.zeros((len(frames),) + frames[0].shape[:2]), None))


def test_run_benchmark_writes_report(tiny_bench, tmp_path):
    methods, notes = build_methods(RANDOM, backends=("torch",), peers_dir=PEERS_DIR,
                                   peers=["mediapipe_meet"])
    methods.append(_zeros())
    out = tmp_path / "report"
    res = run_benchmark(tiny_bench, out, methods=methods, notes=notes, save_predictions=True)
    for f in ("report.md", "results.json", "mad_curves_tiny.png", "montage.png"):
        assert (out / f).is_file(), f
    r = res["resolutions"]["tiny"]["methods"]
    assert set(r) == {"rvmatte", "mediapipe_meet", "zeros"}
    assert set(r["rvmatte"]["mean"]) == {"mad", "mse", "grad", "conn", "dtssd", "fgr_mse",
                                         "fgr_mse05", "comp_mse"}
    assert "fgr_mse" not in r["mediapipe_meet"]["mean"]
    # An all-zero matte has MAD = mean ground-truth alpha x 1e3.
    gt = [read_alpha(p) for p in sorted((tiny_bench / "tiny" / "pha" / "0000").glob("*.png"))]
    assert r["zeros"]["clips"]["0000"]["mad"] == pytest.approx(np.mean([g.mean() for g in gt]) * 1e3)
    assert len(r["zeros"]["per_frame_mad"]["0000"]) == 5
    assert json.loads((out / "results.json").read_text())["machine"]["cores"] >= 1
    assert "| MediaPipe meet" in (out / "report.md").read_text()
    # Saved predictions score the same through `evaluate`.
    ev = evaluate_folders(out / "predictions" / "tiny" / "zeros", tiny_bench / "tiny" / "pha")
    assert ev["mad"] == pytest.approx(r["zeros"]["mean"]["mad"])
    with pytest.raises(OutputError):
        run_benchmark(tiny_bench, out, methods=methods)


def test_missing_peers_and_backends_are_noted(tmp_path):
    methods, notes = build_methods(RANDOM, backends=("torch",), peers_dir=tmp_path)
    assert [m.name for m in methods] == ["rvmatte"]
    assert len(notes) == 3 and all("not found" in n for n in notes)
    assert missing_peers(tmp_path) == ["mediapipe_selfie", "mediapipe_meet", "sinet"]
    assert missing_peers(PEERS_DIR) == []
    with pytest.raises(InputError, match="unknown peer"):
        build_methods(RANDOM, backends=(), peers_dir=PEERS_DIR, peers=["x"])
    with pytest.raises(InputError, match="unknown backend"):
        build_methods(RANDOM, backends=("torch", "tensorrt"), peers_dir=None, peers=[])


def test_one_spec_several_backends(tiny_bench, tmp_path):
    """Each backend is the same spec with its backend replaced: the same numbers (ONNX
    Runtime against eager torch in float32), and the spec's ratio when asked for."""
    pytest.importorskip("onnxruntime")
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "w.pth"  # one random network for both backends
    torch.save(RANDOM.load_model().state_dict(), weights)
    spec = RANDOM.replace(weights=str(weights))
    frames = [np.full((36, 64, 3), 90 + 20 * i, np.uint8) for i in range(3)]
    methods, _ = build_methods(spec, backends=("torch", "onnxruntime"), peers_dir=None,
                               peers=[], chunk=2)
    assert [(m.name, m.title) for m in methods] == [
        ("rvmatte", "rvmatte mobilenetv3 (torch)"),
        ("rvmatte_onnxruntime", "rvmatte mobilenetv3 (onnxruntime)")]
    (pha_t, fgr_t), (pha_o, fgr_o) = (m.run(frames, 0.5) for m in methods)
    assert pha_t.shape == (3, 36, 64) and fgr_t.shape == (3, 36, 64, 3)
    assert np.abs(pha_t - pha_o).max() < 1e-3 and np.abs(fgr_t - fgr_o).max() < 1e-3
    # a new clip starts afresh: the same frames give the same mattes again
    assert np.array_equal(methods[0].run(frames, 0.5)[0], pha_t)
    # benchmark_ratio=False: the spec's ratio, whatever the benchmark says
    own, _ = build_methods(spec.replace(downsample=0.5), backends=("torch",), peers_dir=None,
                           peers=[], benchmark_ratio=False, chunk=2)
    assert np.array_equal(own[0].run(frames, 1.0)[0], pha_t)


def test_not_a_benchmark(tmp_path):
    with pytest.raises(InputError, match="benchmark.json"):
        run_benchmark(tmp_path, tmp_path / "r", methods=[_zeros()])
