"""CPU file conversion without PyTorch (rvmatte.hardware, the fused path built directly):
the same outputs as the fused path built by a Matter, resumable, and torch never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_talking_head_640x360.mp4"

pytest.importorskip("onnxruntime")
pytest.importorskip("numba")


def _pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def _run(code: str, **env_changes) -> dict:
    """``code`` in a fresh interpreter (this suite's environment and cache, with
    ``env_changes``: None removes a variable); its last stdout line is JSON."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        env.pop(k, None) if v is None else env.__setitem__(k, v)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_converts_on_the_cpu_without_importing_torch(tmp_path):
    from rvmatte.runtime.cache import bundled_onnx

    bundled_onnx(graph="coefficients")  # the cached export (made with torch, once per machine)
    code = f"""
import json, sys
from rvmatte import hardware
gpu = hardware.gpu_possible()
from rvmatte.cli import main
rc = main(["convert", {str(SAMPLE)!r}, "--end", "4f", "-o", {str(tmp_path / "c.mp4")!r},
           "--alpha", {str(tmp_path / "a")!r}, "-q", "--threads", "1"])
print(json.dumps({{"rc": rc, "gpu": gpu, "torch": "torch" in sys.modules,
                  "torchvision": "torchvision" in sys.modules}}))
"""
    r = _run(code)
    if r["gpu"]:
        pytest.skip("this machine may have a GPU: the default device is asked of torch")
    assert r["rc"] == 0 and not r["torch"] and not r["torchvision"]
    assert len(_pngs(tmp_path / "a")) == 4 and (tmp_path / "c.mp4").stat().st_size > 0


def test_same_outputs_as_the_fused_path_of_a_session(tmp_path):
    """The session convert_video makes itself (torch-free, ``backend="fused"``) and a given
    ``Matter(backend="fused")``: the same pixels."""
    from rvmatte.inference.convert import convert_video
    from rvmatte.inference.session import Matter

    kw = dict(downsample_ratio=0.25, end="5f", background="#3366cc")
    free = convert_video(SAMPLE, tmp_path / "f", alpha=tmp_path / "fa", backend="fused", **kw)
    matter = Matter(backend="fused")
    assert matter.uint8_path(0.25)
    made = convert_video(SAMPLE, tmp_path / "m", alpha=tmp_path / "ma", model=matter, **kw)
    assert free.frames == made.frames == 5
    for a, b in ((tmp_path / "f", tmp_path / "m"), (tmp_path / "fa", tmp_path / "ma")):
        ours, theirs = _pngs(a), _pngs(b)
        assert len(ours) == 5 and all(np.array_equal(x, y) for x, y in zip(ours, theirs))
    # and the pictures are a matting, not a constant: a person over the blue background
    alpha = np.stack(_pngs(tmp_path / "fa"))
    assert alpha.min() == 0 and alpha.max() == 255 and 0.05 < (alpha > 127).mean() < 0.9


def test_cancelled_and_resumed_gives_the_uninterrupted_result(tmp_path):
    """The checkpoint keeps the fused path's numpy state (state.npz, float32)."""
    from rvmatte.errors import Cancelled
    from rvmatte.inference.convert import convert_video

    kw = dict(downsample_ratio=0.25, start="10f", end="22f", seq_chunk=1, segment_frames=4,
              encode_workers=1)
    whole = convert_video(SAMPLE, tmp_path / "w.mp4", alpha=tmp_path / "wa", **kw)
    ev = threading.Event()
    seen = {}

    def progress(p):
        job = tmp_path / "c.mp4.rvmatte-resume"
        if (job / "state.npz").is_file() and "state" not in seen:
            with np.load(job / "state.npz") as z:
                seen["state"] = [z[k] for k in z.files]
        if p.done >= 9:
            ev.set()

    with pytest.raises(Cancelled):
        convert_video(SAMPLE, tmp_path / "c.mp4", alpha=tmp_path / "ca", cancel=ev,
                      progress=progress, **kw)
    assert len(seen["state"]) == 4 and all(s.dtype == np.float32 and s.ndim == 4
                                          for s in seen["state"])
    r = convert_video(SAMPLE, tmp_path / "c.mp4", alpha=tmp_path / "ca", resume=True, **kw)
    assert r.resumed_from in (4, 8) and r.frames == whole.frames == 12
    ours, theirs = _pngs(tmp_path / "ca"), _pngs(tmp_path / "wa")
    assert len(ours) == 12 and all(np.array_equal(x, y) for x, y in zip(ours, theirs))


def test_an_unreadable_checkpoint_state_starts_over(tmp_path):
    from rvmatte.errors import Cancelled
    from rvmatte.inference.convert import convert_video

    kw = dict(downsample_ratio=0.25, end="8f", seq_chunk=1, segment_frames=2, encode_workers=1)
    ev = threading.Event()
    with pytest.raises(Cancelled):
        convert_video(SAMPLE, tmp_path / "c.mp4", cancel=ev,
                      progress=lambda p: p.done >= 5 and ev.set(), **kw)
    job = tmp_path / "c.mp4.rvmatte-resume"
    (job / "state.npz").write_bytes(b"not a zip")
    r = convert_video(SAMPLE, tmp_path / "c.mp4", resume=True, **kw)
    assert r.resumed_from == 0 and r.frames == 8 and not job.exists()


def test_thread_count_without_torch_is_torchs():
    """What the torch-free path gives the model is what torch would: its own default (physical
    cores), OMP_NUM_THREADS / MKL_NUM_THREADS up to that."""
    code = """
import json, sys
from rvmatte import hardware
n, v = hardware.default_threads(), hardware.torch_version()
assert "torch" not in sys.modules
import torch
print(json.dumps({"free": n, "torch": torch.get_num_threads(), "v": v,
                  "tv": torch.__version__.split("+")[0]}))
"""
    r = _run(code, OMP_NUM_THREADS=None, MKL_NUM_THREADS=None)
    assert r["free"] == r["torch"] and r["v"] == r["tv"]
    for env in ({"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "64"}, {"MKL_NUM_THREADS": "1"},
                {"OMP_NUM_THREADS": "1,1"}, {"OMP_NUM_THREADS": "junk"}, {"OMP_NUM_THREADS": "0"}):
        r = _run(code, **{"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None, **env})
        assert r["free"] == r["torch"], env


def test_threads_option_reaches_torch_loaded_later(tmp_path):
    """``--threads N`` before torch loads: the torch-free path and a torch model both get N
    (more than the cores if asked, as torch.set_num_threads allows)."""
    r = _run(f"""
import json
from rvmatte import hardware
from rvmatte.cli import main
rc = main(["convert", {str(SAMPLE)!r}, "--end", "1f", "-o", {str(tmp_path / "c")!r}, "-q",
           "--threads", "3", "--backend", "torch"])
import torch
print(json.dumps({{"rc": rc, "torch": torch.get_num_threads(), "free": hardware.default_threads()}}))
""", OMP_NUM_THREADS=None, MKL_NUM_THREADS=None)
    assert r == {"rc": 0, "torch": 3, "free": 3}


def test_other_torch_dtypes_still_run_on_the_torch_path(tmp_path):
    import torch

    from rvmatte.inference.convert import convert_video

    r = convert_video(SAMPLE, tmp_path / "c", end="1f", downsample_ratio=0.25,
                      dtype=torch.float64)
    assert r.frames == 1 and len(_pngs(tmp_path / "c")) == 1


def test_dtype_and_device_answers():
    from rvmatte import hardware
    from rvmatte.errors import WeightsError
    import torch

    assert hardware.dtype_name(None) == "float32"
    assert hardware.dtype_name("fp16") == hardware.dtype_name(torch.float16) == "float16"
    assert hardware.dtype_name("BF16") == "bfloat16"
    with pytest.raises(WeightsError, match="unknown dtype"):
        hardware.dtype_name("int8")
    # float64 is named (a ModelSpec stores names); the runners say what they support
    assert hardware.dtype_name(torch.float64) == hardware.dtype_name("float64") == "float64"
    assert hardware.cpu_requested("cpu") and hardware.cpu_requested(torch.device("cpu"))
    assert not hardware.cpu_requested("cuda") and not hardware.cpu_requested("cuda:1")
    assert hardware.cpu_requested(None) == (not hardware.gpu_possible())
    assert hardware.physical_cores() >= 1


def test_runners_name_the_dtype_they_refuse():
    import torch

    from rvmatte.errors import RvmatteError
    from rvmatte.runtime.ort import OnnxRuntimeRunner
    from rvmatte.runtime.fused import FusedRunner

    with pytest.raises(RvmatteError, match="supports float32 and float16, not torch.float64"):
        OnnxRuntimeRunner(device="cpu", dtype=torch.float64)
    with pytest.raises(RvmatteError, match="runs on the CPU in float32"):
        FusedRunner(dtype=torch.float64)
