"""The bundled weights' ONNX export, cached by their sha256: a CPU session that runs it never
builds the PyTorch model nor imports torchvision (about 1.5 s of start-up)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

CODE = r"""
import json, sys
import numpy as np
from rvmatte.inference.session import Matter
m = Matter(backend="fused", downsample_ratio=0.5)  # auto may pick int8 (test_int8_auto.py)
frames = np.random.default_rng(0).integers(0, 256, (2, 72, 128, 3), dtype=np.uint8)
fgr, pha, _ = m.process(frames)
print(json.dumps({"torchvision": "torchvision" in sys.modules, "built": m._model is not None,
                  "pha": pha.tolist()}))
"""


def _run(cache):
    env = dict(os.environ, RVMATTE_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_second_process_runs_the_cached_export_without_torchvision(tmp_path):
    first = _run(tmp_path)           # exports the bundled weights once (builds the model)
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert len(files) == 1 and "_w" in files[0]
    second = _run(tmp_path)
    assert second["torchvision"] is False and second["built"] is False
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == files  # reused
    # same numbers as the PyTorch model
    import rvmatte

    m = rvmatte.load_model(device="cpu")
    frames = np.random.default_rng(0).integers(0, 256, (2, 72, 128, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)[None]
    with torch.inference_mode():
        ref = m(x, None, 0.5).pha[0, :, 0].numpy()
    got = np.asarray(second["pha"], dtype=np.float32)
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(np.asarray(first["pha"], dtype=np.float32) - got).max() == 0


def test_lazy_session_builds_the_model_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(tmp_path))
    from rvmatte.inference.session import Matter

    m = Matter(backend="auto")
    assert m._model is None and m.device.type == "cpu" and m.dtype == torch.float32
    net = m.model
    assert net is not None and m.model is net and not net.training
    # explicit weights, another dtype or another backend build it at once, as before
    assert Matter(backend="auto", dtype="bfloat16")._model is not None
    assert Matter(backend="torch")._model is not None


def test_graph_version_is_part_of_the_key(tmp_path, monkeypatch):
    from rvmatte.bundled import uses_bundled
    from rvmatte.export import onnx
    from rvmatte.runtime import cache as runtime

    monkeypatch.setattr(onnx, "export_onnx", lambda model, path, **kw: path.write_bytes(b"x"))
    a = runtime.bundled_onnx(directory=tmp_path)
    monkeypatch.setattr(runtime, "GRAPH_VERSION", runtime.GRAPH_VERSION + 1)
    b = runtime.bundled_onnx(directory=tmp_path)
    assert a != b and a.is_file() and b.is_file()
    assert uses_bundled("mobilenetv3", "default", None)
    assert uses_bundled("mobilenetv3", "default", "fast_guided_filter")
    assert not uses_bundled("mobilenetv3", "default", "deep_guided_filter")
    assert not uses_bundled("mobilenetv3", "weights.pth", None)
    assert not uses_bundled("resnet50", "default", None)


def test_a_damaged_cache_file_is_exported_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(tmp_path))
    from rvmatte.runtime.cache import bundled_onnx
    from rvmatte.runtime.ort import OnnxRuntimeRunner

    path = bundled_onnx()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])          # truncated by a crash, a full disk...
    r = OnnxRuntimeRunner(device="cpu")
    out = r(torch.rand(1, 3, 72, 128), None, 0.5)
    assert out.pha.shape == (1, 1, 72, 128)
    assert path.read_bytes() == good                   # the same export, made again


def test_a_damaged_user_file_is_a_clear_error(tmp_path):
    from rvmatte.errors import RvmatteError
    from rvmatte.runtime.ort import OnnxRuntimeRunner

    bad = tmp_path / "mine.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(RvmatteError, match="onnxruntime cannot load") as ei:
        OnnxRuntimeRunner(onnx_path=bad, device="cpu")
    assert "\n" not in str(ei.value) and bad.read_bytes() == b"not an onnx file"


def test_an_unwritable_cache_exports_into_a_folder_of_the_process(tmp_path, monkeypatch):
    """A read-only home (here: the cache path runs through a file) must not stop a job: the
    export goes to a temporary folder of this process; an explicit folder is a clear error."""
    from rvmatte.errors import OutputError
    from rvmatte.export import onnx
    from rvmatte.runtime import cache as runtime

    made = []
    monkeypatch.setattr(onnx, "export_onnx",
                        lambda model, path, **kw: (made.append(path), path.write_bytes(b"x")))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    a = runtime.bundled_onnx()
    assert a.is_file() and "rvmatte-onnx-" in str(a.parent) and a.parent.exists()
    assert runtime.bundled_onnx() == a and len(made) == 1   # made once per process
    with pytest.raises(OutputError, match="cannot write the ONNX export in"):
        runtime.bundled_onnx(directory=tmp_path / "file" / "onnx")


def test_cli_runs_with_an_unwritable_cache_and_leaves_nothing(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "file").write_text("")
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, RVMATTE_CACHE_DIR=str(tmp_path / "file" / "cache"),
               TMPDIR=str(tmp_path / "tmp"))
    out = subprocess.run([sys.executable, "-m", "rvmatte", "convert",
                          str(repo / "examples" / "sample_talking_head_640x360.mp4"), "--end",
                          "2f", "-o", str(tmp_path / "c.mp4"), "-q"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-1500:]
    assert (tmp_path / "c.mp4").stat().st_size > 0
    assert not list((tmp_path / "tmp").glob("rvmatte-onnx-*"))  # the private folder is gone
    from rvmatte.runtime import int8_wins

    if int8_wins():  # auto's int8 is not made in a temporary folder: fused, said in one line
        said = [ln for ln in out.stderr.splitlines() if "int8" in ln]
        assert len(said) == 1 and said[0].endswith("using backend fused"), out.stderr[-1500:]
        assert "Traceback" not in out.stderr


def test_a_cache_that_fails_later_or_everywhere(tmp_path, monkeypatch):
    """A cache folder that exists but refuses the file (read-only, full) costs one export per
    process, not one per runner; no room anywhere is one line, not a traceback."""
    import errno

    from rvmatte.errors import OutputError
    from rvmatte.export import onnx
    from rvmatte.runtime import cache as runtime

    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)
    monkeypatch.setenv("RVMATTE_CACHE_DIR", str(cache))
    monkeypatch.setattr(runtime, "_private", [])
    calls = []

    def export(model, path, **kw):  # the cache's disk refuses, the temporary folder takes it
        calls.append(path)
        if cache in path.parents:
            raise OSError(errno.EROFS, "Read-only file system")
        path.write_bytes(b"x")

    monkeypatch.setattr(onnx, "export_onnx", export)
    first = runtime.bundled_onnx()
    assert runtime.bundled_onnx() == runtime.bundled_onnx() == first and len(calls) == 2

    def full(model, path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "export_onnx", full)
    monkeypatch.setattr(runtime, "_private", [tmp_path / "private"])
    (tmp_path / "private").mkdir()
    with pytest.raises(OutputError, match="nor in a temporary folder: No space left on device"):
        runtime.bundled_onnx()


def test_cli_with_a_cache_it_may_not_even_look_into(tmp_path):
    """A home that is not the user's (a container run with --user, HOME=/root): the cache
    cannot be searched; the job runs all the same. Run without the root's file-permission
    override (setpriv), where available."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop the permission override")
    repo = Path(__file__).resolve().parents[2]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    os.chown(locked, 65534, 65534)  # nobody's, closed to everyone else
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, RVMATTE_CACHE_DIR=str(locked / "cache"), TMPDIR=str(tmp_path / "tmp"))
    caps = "-dac_override,-dac_read_search"
    out = subprocess.run(["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}",
                          sys.executable, "-m", "rvmatte", "convert",
                          str(repo / "examples" / "sample_talking_head_640x360.mp4"), "--end",
                          "2f", "-o", str(tmp_path / "c.mp4"), "-q"],
                         capture_output=True, text=True, env=env, timeout=600)
    if "Operation not permitted" in out.stderr and "setpriv" in out.stderr:
        pytest.skip("setpriv may not drop capabilities here")
    assert out.returncode == 0, out.stderr[-1500:]
    assert (tmp_path / "c.mp4").stat().st_size > 0
    assert not list((tmp_path / "tmp").glob("rvmatte-onnx-*"))


def test_exports_in_threads_run_one_at_a_time(tmp_path, monkeypatch):
    """torch.onnx.export is not re-entrant: two threads asking for an export at once (a
    server's preview and its first job) get one export, made once, and the same file."""
    import threading
    import time

    from rvmatte.export import onnx
    from rvmatte.runtime import cache as runtime

    inside, most, made = [0], [0], []
    real = onnx.export_onnx

    def export(*a, **k):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        try:
            made.append(1)
            return real(*a, **k)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(onnx, "export_onnx", export)
    got = []
    threads = [threading.Thread(target=lambda: got.append(runtime.bundled_onnx(directory=tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and len(made) == 1 and got[0] == got[1] and got[0].is_file()
