"""``rvmatte export``: write the model as ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError, OutputError
from .options import add_model_options, add_output, spec_from_args

EPILOG = """examples:
  rvmatte export -o rvm.onnx                        # ONNX, opset 17, fp32, bundled weights
  rvmatte export -o rvm_fp16.onnx --dtype float16 --simplify
  rvmatte export -o rvm.torchscript --weights rvm_resnet50.pth --variant resnet50
  rvmatte export -o rvm.onnx --verify               # compare with PyTorch at another size

ONNX inputs: src (B,3,H,W), r1i..r4i (zeros of shape (1,1,1,1) on the first frame, then the
previous r1o..r4o), downsample_ratio float32 (1,). Outputs: fgr, pha, r1o..r4o.
TorchScript: fgr, pha, r1, r2, r3, r4 = torch.jit.load(path)(src, r1, r2, r3, r4, ratio).
"""

FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript",
           ".jit": "torchscript"}


# Export's own defaults, where the shared ones (auto device, float16 on CUDA) would make the
# file depend on the machine that exported it: a TorchScript traced on CUDA runs only on CUDA,
# and float32 files are the ones --verify can check.
EXPORT_OVERRIDES = {
    "device": dict(default="cpu",
                   help="device to trace TorchScript on (ONNX is always traced on the CPU); cpu "
                        "by default here, unlike the other subcommands: a TorchScript traced on "
                        "CUDA runs only on CUDA"),
    "dtype": dict(default="float32",
                  help="precision of the exported network (TorchScript: also bfloat16); float32 "
                       "by default here, unlike the other subcommands, so that the file does "
                       "not depend on the machine that exported it"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export the model to ONNX or TorchScript",
        description="Export the matting network (dynamic batch/height/width, recurrent state "
                    "and downsample ratio as inputs) to ONNX or TorchScript.",
        epilog=EPILOG)
    add_output(p, metavar="FILE", help="output file: .onnx, or .torchscript / .pt / .ts")
    # the older spelling, `rvmatte export rvm.onnx`, still works (hidden from --help)
    p.add_argument("output_file", nargs="?", default=None, metavar="OUTPUT",
                   help=argparse.SUPPRESS)
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="file format (default: from the output's extension)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--simplify", action="store_true", help="ONNX: run onnxsim (pip install onnxsim)")
    p.add_argument("--no-freeze", action="store_true", help="TorchScript: do not torch.jit.freeze")
    p.add_argument("--verify", action="store_true",
                   help="run the export at another size and compare with PyTorch (fp32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    # The network's identity and the device to trace TorchScript on (ONNX is traced on the
    # CPU); backend, ratio and threads mean nothing to an exported file.
    add_model_options(p, only=("variant", "weights", "refiner", "device", "dtype"),
                      override=EXPORT_OVERRIDES)
    p.set_defaults(func=run)


def _output(args) -> Path:
    if args.output and args.output_file and args.output != args.output_file:
        raise InputError(f"two outputs given ({args.output_file}, -o {args.output}): give one")
    out = args.output or args.output_file
    if not out:
        raise InputError("no output given: rvmatte export -o FILE.onnx (or .torchscript)")
    return Path(out)


def run(args) -> int:
    out = _output(args)
    fmt = args.format or FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format from {out.name!r}: use .onnx or .torchscript, "
                         "or pass --format")
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} exists (use --overwrite to replace it)")
    spec = spec_from_args(args)
    dtype = spec.dtype_name()
    model = spec.replace(device="cpu", dtype="float32").load_model()
    if fmt == "onnx":
        from ..export.onnx import export_onnx

        export_onnx(model, out, dtype=dtype, opset=args.opset, simplify_graph=args.simplify)
    else:
        from ..export.torchscript import export_torchscript
        from ..spec import resolve_device

        export_torchscript(model, out, dtype=dtype, device=resolve_device(spec.device),
                           freeze=not args.no_freeze)
    print(f"wrote {out} ({fmt}, {model.variant} + {model.refiner_name}, {dtype}, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    if args.verify:
        _verify(model, out, fmt, dtype)
    return 0


def _verify(model, path: Path, fmt: str, dtype: str) -> None:
    from ..export.check import max_abs_diff, torchscript_candidate

    if fmt == "onnx":
        from ..runtime.ort import OnnxRuntimeRunner

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
