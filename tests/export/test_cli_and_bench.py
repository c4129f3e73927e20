"""``rvmatte export`` and a CPU smoke run of benchmarks/speed.py."""

from __future__ import annotations

import pytest

from rvmatte.cli import main


def test_export_onnx_verify(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(out), "--weights", "none", "--verify"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "wrote" in text and "ratio 0.5: max |diff|" in text
    worst = max(float(x.split()[0].rstrip(",")) for x in text.split("max |diff| ")[1:])
    assert worst <= 1e-4
    assert main(["export", str(out), "--weights", "none"]) == 2  # exists
    assert "exists" in capsys.readouterr().err


def test_export_torchscript(tmp_path, capsys):
    out = tmp_path / "m.torchscript"
    assert main(["export", str(out), "--weights", "none", "--refiner", "deep_guided_filter",
                 "--verify"]) == 0
    assert "ratio 1: max |diff|" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["m.xyz"], "cannot tell the format"),
    (["m.onnx", "--dtype", "int8"], "unknown dtype"),
    (["m.onnx", "--opset", "11"], "opset"),
])
def test_export_errors(tmp_path, capsys, argv, msg):
    argv = [str(tmp_path / argv[0])] + argv[1:]
    assert main(["export", *argv, "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_speed_benchmark_cpu_smoke(capsys, load_benchmark):
    speed = load_benchmark("speed")
    # --device cuda must fall back to the CPU when there is no GPU
    assert speed.main(["--device", "cuda", "--sizes", "96x64@0.5", "--frames", "1", "--rounds", "1",
                       "--warmup", "0", "--backends", "torch,torch-fast,onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "torch-fast" in out and "onnxruntime" in out and "x eager" in out
