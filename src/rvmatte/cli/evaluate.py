"""``rvmatte evaluate``: score predicted alpha PNG folders against ground truth."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score predicted alpha mattes against ground truth",
        description="PRED and GT are folders of per-clip subfolders of 8- or 16-bit grayscale PNG "
                    "frames with matching names. Prints MAD, MSE (x1e3), Grad, Conn (/1e3) and "
                    "dtSSD (x1e2), as defined in the RVM paper's evaluation.")
    p.add_argument("--pred", required=True, metavar="PRED", help="predicted alpha folder")
    p.add_argument("--gt", required=True, metavar="GT", help="ground-truth alpha folder")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_folders, format_table

    result = evaluate_folders(args.pred, args.gt)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = dict(result["clips"])
        rows["**mean**"] = result
        print(format_table(rows))
    return 0
