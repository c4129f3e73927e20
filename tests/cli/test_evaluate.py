"""``rvmatte evaluate``, ``rvmatte benchmark make|run`` and ``rvmatte diagnose`` end to end."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rvmatte.cli import main
from rvmatte.evaluation.frames import write_alpha

REPO = Path(__file__).resolve().parents[2]


def _folders(tmp_path):
    for root, v in (("gt", 0.0), ("pred", 0.2)):
        d = tmp_path / root / "clip"
        d.mkdir(parents=True)
        for i in range(2):
            write_alpha(d / f"{i:04d}.png", np.full((4, 6), v))
    return tmp_path / "pred", tmp_path / "gt"


def test_evaluate_json(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"mad", "mse", "grad", "conn", "dtssd"} <= set(out)
    assert abs(out["mad"] - 200.0) < 1e-9 and abs(out["clips"]["clip"]["mse"] - 40.0) < 1e-9


def test_evaluate_table_and_error(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    assert "| clip | 200.00 | 40.00 |" in capsys.readouterr().out
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvmatte: error:") and len(err.strip().splitlines()) == 1


def _tiny_recipe(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:30]
    alpha = (((xx - 15) / 10) ** 2 + ((yy - 25) / 20) ** 2 < 1).astype(np.uint8) * 255
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "fg.png")
    Image.fromarray(alpha, mode="L").save(tmp_path / "a.png")
    Image.fromarray((rng.random((30, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "bg.png")
    rec = {"name": "t", "seed": 1,
           "resolutions": [{"name": "low", "width": 48, "height": 32, "clips": 1, "frames": 3}],
           "foregrounds": [{"name": "f", "image": "fg.png", "alpha": "a.png"}],
           "backgrounds": [{"name": "b", "image": "bg.png"}]}
    (tmp_path / "r.json").write_text(json.dumps(rec))
    return tmp_path / "r.json"


def test_benchmark_make_run_and_evaluate(tmp_path, capsys):
    recipe = _tiny_recipe(tmp_path)
    bench, report = tmp_path / "bench", tmp_path / "report"
    assert main(["benchmark", "make", "-o", str(bench), "--recipe", str(recipe), "-q"]) == 0
    assert main(["benchmark", "make", "-o", str(bench), "--recipe", str(recipe), "-q"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["benchmark", "run", str(bench), "-o", str(report), "--weights", "none",
                 "--backends", "torch", "--peers", "mediapipe_meet",
                 "--peers-dir", str(REPO / "benchmarks" / "peers"), "--save-predictions",
                 "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    # the post-network stages run as methods of their own beside the network (--post)
    assert set(res["resolutions"]["low"]["methods"]) == {"rvmatte", "rvmatte_stab",
                                                         "rvmatte_fgest", "mediapipe_meet"}
    assert (report / "montage.png").is_file()
    assert main(["evaluate", "--pred", str(report / "predictions" / "low" / "mediapipe_meet"),
                 "--gt", str(bench / "low" / "pha"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert abs(ev["mad"] - res["resolutions"]["low"]["methods"]["mediapipe_meet"]["mean"]["mad"]) < 2.5
    assert main(["benchmark", "run", str(tmp_path), "-o", str(tmp_path / "r2"), "-q"]) == 2
    assert main(["benchmark", "run", str(bench), "-o", str(tmp_path / "r3"), "--weights", "none",
                 "--backends", "torch", "--peers", "none", "--post", "none", "--json",
                 "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["resolutions"]["low"]["methods"]) == {"rvmatte"}
    assert main(["benchmark", "run", str(bench), "-o", str(tmp_path / "r4"), "--post", "blur",
                 "-q"]) == 2
    assert "unknown --post stage blur" in capsys.readouterr().err


def test_diagnose_cli(tmp_path, capsys):
    src = tmp_path / "f"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 48, 3), 100 + i, np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "d"
    assert main(["diagnose", str(src), "-o", str(out), "--weights", "none", "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["summary"]["frames"] == 2 and (out / "diagnosis.png").is_file()
    assert main(["diagnose", str(tmp_path / "missing.mp4"), "--weights", "none"]) == 2


def test_benchmark_make_default_recipe_from_another_folder(tmp_path, monkeypatch, capsys):
    """The default recipe is found from any folder (the checkout rvmatte runs from), not
    only from the repository root."""
    from rvmatte.evaluation.benchmark_clips import find_repo_path

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "make", "-o", "bench", "--resolution", "low", "--frames", "1",
                 "--clips", "1", "-q"]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert manifest["recipe"]["name"] == "rvmatte-default"
    assert len(list((tmp_path / "bench" / "low" / "com").glob("*/*.png"))) == 1
    assert find_repo_path("benchmarks/no_such_recipe.json") is None


def test_benchmark_run_says_in_one_line_that_peers_were_skipped(tmp_path, capsys):
    recipe = _tiny_recipe(tmp_path)
    bench = tmp_path / "bench"
    assert main(["benchmark", "make", "-o", str(bench), "--recipe", str(recipe), "--frames",
                 "2", "-q"]) == 0
    (tmp_path / "nopeers").mkdir()
    assert main(["benchmark", "run", str(bench), "-o", str(tmp_path / "r"), "--weights", "none",
                 "--backend", "torch", "--peers-dir", str(tmp_path / "nopeers")]) == 0
    captured = capsys.readouterr()
    notes = [ln for ln in captured.err.splitlines() if "peer" in ln]
    assert notes == [f"rvmatte: note: peer models skipped, no ONNX file in "
                     f"{tmp_path / 'nopeers'}: mediapipe_selfie, mediapipe_meet, sinet "
                     "(--peers-dir DIR to point at them, --peers none for ours only)"]
    assert "| rvmatte mobilenetv3 (torch)" in captured.out  # the report, ours only
    assert main(["benchmark", "run", str(bench), "-o", str(tmp_path / "r2"), "--weights", "none",
                 "--backend", "torch", "--peers", "none", "-q"]) == 0
    assert "peer" not in capsys.readouterr().err
