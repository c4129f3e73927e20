"""``rvmatte export``: write the model as ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError, OutputError

EPILOG = """examples:
  rvmatte export rvm.onnx                           # ONNX, opset 17, fp32, bundled weights
  rvmatte export rvm_fp16.onnx --dtype float16 --simplify
  rvmatte export rvm.torchscript --weights rvm_resnet50.pth --variant resnet50
  rvmatte export rvm.onnx --verify                  # compare with PyTorch at another size

ONNX inputs: src (B,3,H,W), r1i..r4i (zeros of shape (1,1,1,1) on the first frame, then the
previous r1o..r4o), downsample_ratio float32 (1,). Outputs: fgr, pha, r1o..r4o.
TorchScript: fgr, pha, r1, r2, r3, r4 = torch.jit.load(path)(src, r1, r2, r3, r4, ratio).
"""

FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript",
           ".jit": "torchscript"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export the model to ONNX or TorchScript",
        description="Export the matting network (dynamic batch/height/width, recurrent state "
                    "and downsample ratio as inputs) to ONNX or TorchScript.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="output file: .onnx, or .torchscript / .pt / .ts")
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="default: from the output's extension")
    p.add_argument("--variant", default="mobilenetv3", choices=["mobilenetv3", "resnet50"])
    p.add_argument("--weights", default="default",
                   help="'default' (bundled), a .pth checkpoint, or 'none' (random init)")
    p.add_argument("--refiner", default=None, choices=["fast_guided_filter", "deep_guided_filter"])
    p.add_argument("--dtype", default="float32", help="float32 | float16 (TorchScript: also bfloat16)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--simplify", action="store_true", help="ONNX: run onnxsim (pip install onnxsim)")
    p.add_argument("--device", default="cpu", help="TorchScript: device to trace on (cpu, cuda)")
    p.add_argument("--no-freeze", action="store_true", help="TorchScript: do not torch.jit.freeze")
    p.add_argument("--verify", action="store_true",
                   help="run the export at another size and compare with PyTorch (fp32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..weights import load_model

    out = Path(args.output)
    fmt = args.format or FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format from {out.name!r}: use .onnx or .torchscript, "
                         "or pass --format")
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} exists (use --overwrite to replace it)")
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = load_model(args.variant, refiner=args.refiner, weights=weights, device="cpu")
    if fmt == "onnx":
        from ..export.onnx import export_onnx

        export_onnx(model, out, dtype=args.dtype, opset=args.opset, simplify_graph=args.simplify)
    else:
        from ..export.torchscript import export_torchscript

        export_torchscript(model, out, dtype=args.dtype, device=args.device, freeze=not args.no_freeze)
    print(f"wrote {out} ({fmt}, {model.variant} + {model.refiner_name}, {args.dtype}, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    if args.verify:
        _verify(model, out, fmt, args.dtype)
    return 0


def _verify(model, path: Path, fmt: str, dtype: str) -> None:
    from ..export.check import max_abs_diff, torchscript_candidate

    if fmt == "onnx":
        from ..export.runtime import OnnxRuntimeRunner

        cand = OnnxRuntimeRunner(onnx_path=path, device="cpu", dtype=dtype)
    else:
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            cand = torchscript_candidate(torch.jit.load(str(path), map_location="cpu"))
    if "16" in str(dtype):
        print("verify: skipped for half precision (compare float32 exports)")
        return
    diffs = max_abs_diff(model, cand, size=(77, 130), ratios=(1.0, 0.5), frames=3)
    print("verify at 130x77, 3 frames: " + ", ".join(f"ratio {r:g}: max |diff| {d:.2e}"
                                                      for r, d in diffs.items()))
