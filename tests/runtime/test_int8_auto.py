"""``backend="auto"`` picks ``int8`` for the bundled weights on CPUs with VNNI, and falls back to
``fused`` with one warning line where the int8 network cannot be made; the calibration clip
ships in the package, so a pip install makes the same int8 file as a checkout.

The CPU's flags are given to the rule (``flags=``, or :func:`rvmatte.runtime.cpu_flags`
replaced), not read from this machine's /proc/cpuinfo. The one test that quantises for real
(the pip-install one) is marked slow; the others refuse or find the file before any
calibration runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("onnxruntime")

import rvmatte.runtime as runtime  # noqa: E402
from rvmatte.errors import RvmatteError  # noqa: E402
from rvmatte.runtime import auto_backend, cache, int8  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VNNI = frozenset({"fpu", "avx2", "avx512f", "avx512_vnni"})
NO_VNNI = frozenset({"fpu", "avx2", "avx512f", "avx512bw"})


@pytest.fixture()
def fresh(monkeypatch):
    """No int8 failure remembered from elsewhere in this process, and none left behind."""
    monkeypatch.setattr(runtime, "_int8_failed", [])


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_vnni\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert runtime.cpu_flags(str(info)) == {"fpu", "sse2", "avx512_vnni"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert runtime.cpu_flags(str(arm)) == {"fp", "asimd", "asimddp"}
    assert runtime.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_picks_int8_for_the_bundled_weights_where_vnni_is(fresh):
    for flags in (VNNI, {"avx_vnni"}):
        assert auto_backend("cpu", "float32", 0.25, bundled=True, flags=flags) == "int8"
    # no VNNI (int8 may be slower there), an ARM CPU, nothing known: the float path
    for flags in (NO_VNNI, {"asimd", "asimddp"}, frozenset()):
        assert auto_backend("cpu", "float32", 0.25, bundled=True, flags=flags) == "fused"
    # custom weights, ratio 1, other dtypes and devices: today's rule
    assert auto_backend("cpu", "float32", 0.25, bundled=False, flags=VNNI) == "fused"
    assert auto_backend("cpu", "float32", 0.25, flags=VNNI) == "fused"
    assert auto_backend("cpu", "float32", 1.0, bundled=True, flags=VNNI) == "onnxruntime"
    assert auto_backend("cpu", "bfloat16", 0.25, bundled=True, flags=VNNI) == "torch"
    assert auto_backend("mps", "float32", 0.25, bundled=True, flags=VNNI) == "torch"
    assert auto_backend("cuda", "float32", 0.25, bundled=True, flags=VNNI) == "cudagraph"


def test_auto_keeps_fused_without_the_quantiser(fresh, monkeypatch):
    """``onnx`` (which onnxruntime.quantization needs) not installed: ``fused``."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    assert auto_backend("cpu", "float32", 0.25, bundled=True, flags=VNNI) == "fused"


def test_a_session_follows_the_rule(fresh, monkeypatch):
    from rvm_clips import tiny_model

    from rvmatte.inference.session import Matter

    monkeypatch.setattr(runtime, "cpu_flags", lambda: VNNI)
    m = Matter(device="cpu", downsample_ratio=0.5)
    assert m.backend_for(0.5) == "int8" and m.uint8_path(0.5) and m._model is None
    assert m.backend_for(1.0) == "onnxruntime"
    assert Matter(model=tiny_model(), backend="auto").backend_for(0.5) == "fused"  # custom
    assert Matter(device="cpu", backend="fused").backend_for(0.5) == "fused"  # pinned
    monkeypatch.setattr(runtime, "cpu_flags", lambda: NO_VNNI)
    assert Matter(device="cpu").backend_for(0.5) == "fused"


def _cache_without_int8(tmp_path: Path, monkeypatch) -> Path:
    """A cache folder holding the float export of the bundled weights (copied from this
    session's cache) but no int8 file: what a first int8 run finds."""
    float_onnx = cache.bundled_onnx(graph="coefficients")
    folder = tmp_path / "cache"
    (folder / "onnx").mkdir(parents=True)
    shutil.copy(float_onnx, folder / "onnx" / float_onnx.name)
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(folder))
    return folder


def test_auto_falls_back_to_fused_with_one_warning_line(fresh, tmp_path, monkeypatch, capfd):
    """No quantisation tools: the session runs on ``fused``, says so in one line on stderr
    (no traceback), and later sessions of the process go to ``fused`` without a word."""
    import onnxruntime

    from rvmatte.inference.session import Matter

    folder = _cache_without_int8(tmp_path, monkeypatch)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: VNNI)
    monkeypatch.delattr(onnxruntime, "quantization", raising=False)
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    frames = np.random.default_rng(0).integers(0, 256, (2, 72, 128, 3), dtype=np.uint8)
    m = Matter(device="cpu", downsample_ratio=0.5, threads=1)
    assert m.backend_for(0.5) == "int8"
    pha = m.process(frames).pha
    assert pha.shape == (2, 72, 128) and sorted(m._runners) == ["fused"]
    assert m.backend_for(0.5) == "fused" and m.uint8_path(0.5)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvmatte: warning: the int8 network cannot")
    assert "onnxruntime.quantization" in err[0] and err[0].endswith("using backend fused")
    again = Matter(device="cpu", downsample_ratio=0.5, threads=1)
    assert again.backend_for(0.5) == "fused"
    assert np.array_equal(again.process(frames).pha, pha)
    assert capfd.readouterr().err == ""
    # an explicit --backend int8 still fails with its one clear error, it does not fall back
    with pytest.raises(RvmatteError, match="onnxruntime.quantization"):
        Matter(device="cpu", backend="int8", downsample_ratio=0.5).process(frames)
    assert not list(folder.rglob("*int8*"))


def test_auto_makes_int8_only_in_the_user_cache(tmp_path, monkeypatch):
    """Where the cache cannot be written, ``auto``'s quantiser refuses the temporary folder
    (quantising again in every process would cost more than ``fused`` saves); an explicit
    ``int8`` takes it."""
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(tmp_path / "cache"))
    outside = tmp_path / "private" / "q.onnx"
    outside.parent.mkdir()
    with pytest.raises(RvmatteError, match="cannot be written"):
        int8.INT8_CACHE_ONLY.make(lambda: pytest.fail("exported"), outside, graph="coefficients")
    assert not int8.INT8.cache_only and not list(tmp_path.rglob("*.onnx"))


def test_a_second_maker_waits_and_finds_the_file(tmp_path, monkeypatch, capfd):
    """Two processes making the same int8 file: the second waits for the first's lock, then
    finds the file and makes nothing (no calibration, no announcement)."""
    import fcntl

    monkeypatch.setattr(int8, "quantize", lambda *a, **k: pytest.fail("quantised twice"))
    path = tmp_path / "m_int8.onnx"
    done = threading.Event()

    def second():
        int8.INT8.make(lambda: pytest.fail("exported"), path, graph="coefficients")
        done.set()

    with open(path.with_name(path.name + ".lock"), "a") as lock:  # the first maker
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = threading.Thread(target=second, daemon=True)
        t.start()
        assert not done.wait(1.0)  # waiting for its turn
        path.write_bytes(b"made by the first")  # (renamed into place, in the real maker)
        fcntl.flock(lock, fcntl.LOCK_UN)
    t.join(60)
    assert done.is_set() and path.read_bytes() == b"made by the first"
    assert "preparing" not in capfd.readouterr().err


def test_the_calibration_clip_ships_in_the_package():
    import rvmatte

    clip = int8.calibration_clip()
    assert clip.parent == Path(rvmatte.__file__).parent / "assets"
    assert clip.read_bytes() == (REPO / "examples" / int8.CALIBRATION_CLIP).read_bytes()
    from rvmatte.cli.demo import find_sample

    assert find_sample() == clip


def _wheel_install(tmp_path: Path) -> Path:
    """rvmatte as ``pip install`` puts it: a wheel built from this tree's sources (a copy),
    installed (no dependencies: they are this environment's) into a folder of its own."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(tree)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("rvmatte-*.whl")
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target",
                          str(tmp_path / "site"), str(wheel)], check=True, capture_output=True)
    return tmp_path / "site"


PIP_CODE = r"""
import json, sys
import rvmatte
from rvmatte.cli.demo import find_sample
from rvmatte.runtime import int8
print(json.dumps({"rvmatte": rvmatte.__file__, "clip": str(int8.calibration_clip()),
                  "sample": str(find_sample()), "int8": str(int8.int8_onnx("coefficients"))}))
"""


@pytest.mark.slow
def test_a_pip_install_makes_the_same_int8_file_as_the_checkout(tmp_path, monkeypatch):
    """From a wheel installed elsewhere, run outside the checkout (no examples/ anywhere near):
    the calibration clip and the demo's sample come from the package, and the int8 graph it
    quantises (announced in one line) is byte for byte the checkout's."""
    ours = int8.int8_onnx("coefficients")  # the checkout's, in this session's cache
    site = _wheel_install(tmp_path)
    cache_dir = _cache_without_int8(tmp_path, monkeypatch)  # the float export: no torch
    run_in = tmp_path / "elsewhere"
    run_in.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), RVMATTE_CACHE_DIR=str(cache_dir),
               OMP_NUM_THREADS="2")
    p = subprocess.run([sys.executable, "-c", PIP_CODE], cwd=run_in, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    import json

    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert Path(got["rvmatte"]).is_relative_to(site)
    assert Path(got["clip"]).is_relative_to(site) and got["sample"] == got["clip"]
    made = Path(got["int8"])
    assert made.parent == cache_dir / "onnx" and made.name == ours.name
    assert made.read_bytes() == ours.read_bytes()
    said = [ln for ln in p.stderr.splitlines() if "int8" in ln]
    assert len(said) == 1 and said[0].startswith("rvmatte: preparing the int8 network once")
    assert str(cache_dir / "onnx") in said[0]
