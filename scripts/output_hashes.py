"""Hash the decoded outputs of ``rvmatte convert`` on the sample clip, per backend.

Used to show that a refactor of the runtime left every backend's output unchanged: run it
on the commit before and after, and compare the JSON (``tests/fixtures/output_hashes.json``
holds the hashes of the commit before the runtime-core redesign, with the CPU they were made
on; ``tests/inference/test_output_hashes.py`` checks the current code against them).

    python scripts/output_hashes.py > hashes.json
    python scripts/output_hashes.py --frames 8 --backends torch,fused

Each backend converts the first ``--frames`` frames of ``examples/`` sample clip at ratio 0.25
into an H.264 composite (one x264 thread, deterministic), an H.264 alpha and a PNG foreground;
the hash covers every decoded frame's bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_talking_head_640x360.mp4"
BACKENDS = ("torch", "torch-fast", "onnxruntime", "fused")


def decoded_hash(path: Path) -> str:
    """sha256 over every decoded frame (RGB24 for video, file bytes of PNG images)."""
    import av
    import numpy as np

    h = hashlib.sha256()
    if path.is_dir():
        from PIL import Image

        for f in sorted(path.iterdir()):
            h.update(np.asarray(Image.open(f)).tobytes())
        return h.hexdigest()
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            h.update(frame.to_ndarray(format="rgb24").tobytes())
    return h.hexdigest()


def hashes(backends, frames: int, ratio: float) -> dict:
    import rvmatte
    from rvmatte.hardware import set_threads

    set_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b in backends:
            d = Path(tmp) / b
            d.mkdir()
            rvmatte.convert_video(SAMPLE, d / "comp.mp4", alpha=d / "alpha.mp4",
                                  foreground=d / "fgr", backend=b, device="cpu",
                                  downsample_ratio=ratio, end=f"{frames}f",
                                  encoder_threads=1, encode_workers=1,
                                  # the network's own outputs (the CPU default's foreground
                                  # estimation changes composite and foreground)
                                  refine_foreground=False)
            out[b] = {k: decoded_hash(d / n) for k, n in
                      (("composite", "comp.mp4"), ("alpha", "alpha.mp4"), ("foreground", "fgr"))}
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    res = {"cpu": cpu_name(), "frames": a.frames, "ratio": a.ratio,
           "hashes": hashes(a.backends.split(","), a.frames, a.ratio)}
    json.dump(res, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
