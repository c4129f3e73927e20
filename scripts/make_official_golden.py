#!/usr/bin/env python3
"""Make the golden outputs of the official PyTorch RVM code (run once by hand, not in tests).

Runs the official ``MattingNetwork`` (https://github.com/PeterL1n/RobustVideoMatting, its
``model`` package, unmodified) in float32 on the CPU with one thread, on real frames of
``examples/sample_talking_head_640x360.mp4`` scaled to 256x144, and stores inputs and outputs for
``tests/models/test_parity_official.py``. Get an official checkout with either of::

    git clone https://github.com/PeterL1n/RobustVideoMatting /tmp/rvm_official
    git --git-dir=<a mirror of that repository> archive HEAD | tar -x -C /tmp/rvm_official

then::

    python scripts/make_official_golden.py /tmp/rvm_official

It writes ``tests/fixtures/golden_official_mobilenetv3.npz`` and its sidecar ``.json`` (the
official commit, library versions, CPU capability, this command and the call sequence).

Weights. rvmatte's bundled default (``rvm_mobilenetv3_fgf.pth``) already has the official
state-dict layout: the official ``MattingNetwork('mobilenetv3', 'fast_guided_filter')`` loads it
with ``strict=True`` as it is, so no key mapping exists or is needed. The official default
refiner, the Deep Guided Filter, has parameters that the bundled weights (converted from the
TF.js release) do not carry; its run uses the bundled weights plus seeded refiner parameters
(stored in the npz as ``dgf_r05/param/refiner.*``, so the test needs no generator).

Runs (each a recurrent sequence; ``[a, b)`` is one ``(1, T, 3, H, W)`` call, ``t`` one
``(1, 3, H, W)`` call; the state of each call goes into the next):

- ``fgf_r025``: bundled weights, ratio 0.25 (network at 64x36, Fast Guided Filter to 256x144):
  ``[0, 2)``, ``2``;
- ``fgf_r1``: bundled weights, ratio 1 (no refiner): ``[0, 1)``, ``1``;
- ``dgf_r05``: bundled weights + seeded Deep Guided Filter, ratio 0.5: ``[0, 1)``, ``1``.

Stored: ``src`` (3, 144, 256, 3) uint8 (the network input is ``src / 255`` in float32), and per
run ``<run>/fgr`` (T, 3, H, W), ``<run>/pha`` (T, 1, H, W) and ``<run>/r1`` .. ``<run>/r4`` (the
state after the last call), all float32 as computed: nothing is rounded, so the comparison can
be exact.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "sample_talking_head_640x360.mp4"
OUT = ROOT / "tests" / "fixtures" / "golden_official_mobilenetv3.npz"
SIZE = (256, 144)  # width, height
FRAMES = 3
DGF_SEED = 24

# (name, refiner, downsample ratio, calls): a call [a, b] is frames a..b-1 with a time axis,
# [t] is frame t alone (no time axis). The test replays exactly this list from the sidecar.
RUNS = [
    ("fgf_r025", "fast_guided_filter", 0.25, [[0, 2], [2]]),
    ("fgf_r1", "fast_guided_filter", 1.0, [[0, 1], [1]]),
    ("dgf_r05", "deep_guided_filter", 0.5, [[0, 1], [1]]),
]


def read_frames(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` frames of ``path`` scaled to ``size`` (FFmpeg's scaler): (T,H,W,3) uint8."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise SystemExit(f"error: {path} has only {len(frames)} frames, need {count}")
    return np.stack(frames)


def dgf_parameters(seed: int) -> dict:
    """Seeded Deep Guided Filter parameters with the official keys (no official DGF weights are
    available here): every tensor differs from its default, so a refiner that ignored one of
    them (the box filter included) would not match."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, offset=0.0):
        return (torch.rand(*shape, generator=g) * 2 - 1) * scale + offset

    params = {"refiner.box_filter.weight": rand(4, 1, 3, 3, scale=0.02, offset=1 / 9)}
    for i, (cout, cin) in {0: (16, 24), 3: (16, 16), 6: (4, 16)}.items():
        params[f"refiner.conv.{i}.weight"] = rand(cout, cin, 1, 1, scale=(1 / cin) ** 0.5)
    params["refiner.conv.6.bias"] = rand(4, scale=0.1)
    for i in (1, 4):
        params[f"refiner.conv.{i}.weight"] = rand(16, scale=0.2, offset=1.0)
        params[f"refiner.conv.{i}.bias"] = rand(16, scale=0.1)
        params[f"refiner.conv.{i}.running_mean"] = rand(16, scale=0.1)
        params[f"refiner.conv.{i}.running_var"] = rand(16, scale=0.4, offset=1.0)
        params[f"refiner.conv.{i}.num_batches_tracked"] = torch.tensor(1000)
    return params


def official_model(checkout: Path, refiner: str, state_dict: dict):
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from model import MattingNetwork  # the official package, imported as it is

    model = MattingNetwork("mobilenetv3", refiner).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def run_official(model, src, ratio: float, calls: list) -> dict:
    """Replay ``calls`` with the official forward: fgr/pha of every frame, the last state."""
    import torch

    rec, fgrs, phas = [None] * 4, [], []
    with torch.no_grad():
        for call in calls:
            x = src[:, call[0]:call[1]] if len(call) == 2 else src[:, call[0]]
            fgr, pha, *rec = model(x, *rec, downsample_ratio=ratio)
            fgrs.append(fgr[0] if len(call) == 2 else fgr)  # (T,3,H,W) either way
            phas.append(pha[0] if len(call) == 2 else pha)
    out = {"fgr": torch.cat(fgrs), "pha": torch.cat(phas)}
    out.update({f"r{i}": r for i, r in enumerate(rec, 1)})
    return {k: v.numpy() for k, v in out.items()}


def git_commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def metadata(commit: str, argv: list[str]) -> dict:
    """The sidecar: where the outputs come from, what made them and the call sequence."""
    import torch
    import torchvision

    from rvmatte.weights import BUNDLED

    return {
        "official_repository": "https://github.com/PeterL1n/RobustVideoMatting",
        "official_commit": commit,
        "official_code_changes": "none",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "threads": 1,
        "weights": {"file": BUNDLED["mobilenetv3"].filename, "sha256": BUNDLED["mobilenetv3"].sha256},
        "dgf_seed": DGF_SEED,
        "clip": str(CLIP.relative_to(ROOT)),
        "frames": f"first {FRAMES}, scaled to {SIZE[0]}x{SIZE[1]} by PyAV to_ndarray (rgb24)",
        "command": " ".join(["python", "scripts/make_official_golden.py", *argv]),
        "runs": [{"name": n, "refiner": r, "downsample_ratio": s, "calls": c} for n, r, s, c in RUNS],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="an official RobustVideoMatting checkout")
    ap.add_argument("--commit", default="",
                    help="the checkout's commit, when it is not a git work tree (git archive)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not (args.checkout / "model" / "model.py").is_file():
        print(f"error: {args.checkout} is not an official RVM checkout (no model/model.py)", file=sys.stderr)
        return 2
    commit = args.commit or git_commit(args.checkout)
    if not commit:
        print("error: cannot tell the checkout's commit; pass --commit", file=sys.stderr)
        return 2

    import torch

    from rvmatte.weights import BUNDLED, bundled_path, read_checkpoint, sha256_file

    torch.set_num_threads(1)  # as the test suite runs
    bundled = read_checkpoint(bundled_path("mobilenetv3"))
    if sha256_file(bundled_path("mobilenetv3")) != BUNDLED["mobilenetv3"].sha256:
        print("error: bundled weights do not match their pinned sha256", file=sys.stderr)
        return 2
    dgf = dgf_parameters(DGF_SEED)
    frames = read_frames(CLIP, FRAMES, SIZE)
    src = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)

    arrays: dict[str, np.ndarray] = {"src": frames}
    for name, refiner, ratio, calls in RUNS:
        weights = {**bundled, **dgf} if refiner == "deep_guided_filter" else bundled
        model = official_model(args.checkout, refiner, weights)
        for key, value in run_official(model, src, ratio, calls).items():
            arrays[f"{name}/{key}"] = value
        if refiner == "deep_guided_filter":
            arrays.update({f"{name}/param/{k}": v.numpy() for k, v in dgf.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    meta = metadata(commit, argv if argv is not None else sys.argv[1:])
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
