import json

import numpy as np
import pytest

from rvmatte.errors import InputError, OutputError
from rvmatte.evaluation.evaluate import evaluate_folders
from rvmatte.evaluation.frames import read_alpha
from rvmatte.evaluation.report import Method, build_methods, run_benchmark

from .conftest import PEERS_DIR


def _zeros():
    return Method("zeros", "all background", lambda frames, r: (np.zeros((len(frames),) + frames[0].shape[:2]), None))


def test_run_benchmark_writes_report(tiny_bench, tmp_path):
    methods, notes = build_methods(weights=None, backends=("torch",), peers_dir=PEERS_DIR,
                                   peers=["mediapipe_meet"])
    methods.append(_zeros())
    out = tmp_path / "report"
    res = run_benchmark(tiny_bench, out, methods=methods, notes=notes, save_predictions=True)
    for f in ("report.md", "results.json", "mad_curves_tiny.png", "montage.png"):
        assert (out / f).is_file(), f
    r = res["resolutions"]["tiny"]["methods"]
    assert set(r) == {"rvmatte", "mediapipe_meet", "zeros"}
    assert set(r["rvmatte"]["mean"]) == {"mad", "mse", "grad", "conn", "dtssd", "fgr_mse"}
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
    methods, notes = build_methods(weights=None, backends=("torch",), peers_dir=tmp_path)
    assert [m.name for m in methods] == ["rvmatte"]
    assert len(notes) == 3 and all("not found" in n for n in notes)
    with pytest.raises(InputError, match="unknown peer"):
        build_methods(weights=None, backends=(), peers_dir=PEERS_DIR, peers=["x"])


def test_not_a_benchmark(tmp_path):
    with pytest.raises(InputError, match="benchmark.json"):
        run_benchmark(tmp_path, tmp_path / "r", methods=[_zeros()])
