"""``rvmatte train`` (the paper's stages, fine-tuning) and ``rvmatte prepare-greenscreen``.

Multi-GPU / multi-process: ``torchrun --nproc-per-node N -m rvmatte train ...``.
"""

from __future__ import annotations

import os
import sys

from ..errors import InputError
from .options import add_output, add_quiet

_DATA_FLAGS = {  # flag -> DataConfig field
    "videomatte": "videomatte_train",
    "imagematte": "imagematte_train",
    "synthetic": "synthetic_train",
    "backgrounds": "background_images_train",
    "background_videos": "background_videos_train",
    "coco": "coco_panoptic",
    "youtubevis": "youtubevis",
    "spd": "spd",
}

EPILOG = """examples:
  rvmatte train --preset stage1 --config data.toml -o runs/stage1
  torchrun --nproc-per-node 4 -m rvmatte train --preset stage1 --config data.toml --amp bf16
  rvmatte train -o runs/stage1 --resume                  # continue where it stopped
  rvmatte prepare-greenscreen take1.mp4 take2.mp4 -o my_set/
  rvmatte train --preset finetune --videomatte my_set/ --backgrounds bgs/ -o runs/mine \\
      --export mine.pth
  rvmatte train --preset stage1 --synthetic tests/fixtures/training/synthetic --no-segmentation \\
      --size 64 --seq-length 3 --max-steps 20 -o /tmp/smoke     # CPU smoke run
See docs/TRAINING.md for the dataset layouts and the config file format."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune the network (presets stage1-4, finetune, dgf, guided)",
        description="Train RVM with the paper's recipe, or fine-tune it on your own footage.",
        epilog=EPILOG)
    p.add_argument("--preset", help="stage1, stage2, stage3, stage4, finetune, dgf or guided")
    p.add_argument("--config", help="JSON or TOML file of config keys (may name a preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set data.num_workers=8 (repeatable)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    add_output(p, dest="out", metavar="DIR", aliases=("--out",),
               help="run folder: checkpoints/, tb/, metrics.jsonl, config.json")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in --output (or this file)")
    p.add_argument("--variant", choices=["mobilenetv3", "resnet50"])
    p.add_argument("--init", help="'bundled' (fine-tuning), a .pth checkpoint, or 'none'")
    p.add_argument("--backbone-weights", help="torchvision ImageNet state-dict file for the encoder")
    g = p.add_argument_group("datasets (train split; other keys via --config/--set)")
    for flag, key in _DATA_FLAGS.items():
        g.add_argument("--" + flag.replace("_", "-"), dest=f"data_{flag}", metavar="DIR",
                       help=f"root of {key}")
    p.add_argument("--no-segmentation", action="store_true", help="skip the segmentation passes")
    p.add_argument("--size", type=int, help="low-resolution side (sets min and max)")
    p.add_argument("--seq-length", type=int, help="low-resolution clip length T")
    p.add_argument("--batch-size", type=int, help="clips per process")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=int, help="data-loader workers per process")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--export", metavar="PTH", help="after training, write the model state dict here")
    add_quiet(p)
    p.set_defaults(func=run_train)

    q = subparsers.add_parser(
        "prepare-greenscreen", help="key green-screen clips into a fgr/ + pha/ training set",
        description="Chroma-key green/blue-screen videos or image folders (with spill "
                    "suppression) into the VideoMatte240K layout used by `rvmatte train`.")
    q.add_argument("inputs", nargs="+", help="video files or folders of frames")
    add_output(q, required=True, metavar="DIR", help="dataset folder to write")
    q.add_argument("--key-color", help="hex RGB of the screen, e.g. 00b140 (default: measured)")
    q.add_argument("--tolerance", nargs=2, type=float, default=(0.25, 0.65), metavar=("LOW", "HIGH"),
                   help="normalised screen excess where alpha starts to fall / reaches 0")
    q.add_argument("--spill", type=float, default=1.0, help="spill suppression 0..1 (default 1)")
    q.add_argument("--every", type=int, default=1, help="keep every N-th frame")
    q.add_argument("--max-frames", type=int, help="at most N frames per clip")
    q.add_argument("--max-side", type=int, help="downscale so the longer side is at most N px")
    q.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    add_quiet(q)
    q.set_defaults(func=run_greenscreen)


def build_config(args):
    from ..training.config import PRESETS, apply_overrides, load_config, preset

    if args.resume and not args.preset and not args.config:
        from ..training.config import from_dict
        import json
        from pathlib import Path
        if not args.out:
            raise InputError("--resume needs --output (the run folder)")
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise InputError(f"--resume: {saved} not found; pass --preset/--config as for the first run")
        cfg = from_dict(json.loads(saved.read_text()))
    elif args.config:
        cfg = load_config(args.config, base=preset(args.preset) if args.preset else None)
    elif args.preset:
        cfg = preset(args.preset)
    else:
        raise InputError(f"give --preset ({', '.join(PRESETS)}) or --config FILE")
    values: dict = {}
    data: dict = {}
    for flag in _DATA_FLAGS:
        v = getattr(args, f"data_{flag}")
        if v:
            data[_DATA_FLAGS[flag]] = v
    if args.data_synthetic:
        data["matting"] = "synthetic"
    elif args.data_imagematte and not args.data_videomatte:
        data["matting"] = "imagematte"
    elif args.data_videomatte:
        data["matting"] = "videomatte"
    if args.workers is not None:
        data["num_workers"] = args.workers
    if data:
        values["data"] = data
    for name, key in (("variant", "variant"), ("backbone_weights", "backbone_weights"),
                      ("seq_length", "seq_length_lr"), ("batch_size", "batch_size"),
                      ("max_steps", "max_steps"), ("epochs", "epochs"), ("amp", "amp"),
                      ("out", "out_dir")):
        v = getattr(args, name)
        if v is not None:
            values[key] = v
    if args.init is not None:
        values["init"] = None if args.init.lower() == "none" else args.init
    if args.size:
        values["size_lr_min"] = values["size_lr_max"] = args.size
    if args.no_segmentation:
        values["segmentation"] = False
    if args.compile:
        values["compile"] = True
    apply_overrides(cfg, values)
    for item in args.set:
        if "=" not in item:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        apply_overrides(cfg, {k.strip(): v})
    return cfg


def run_train(args) -> int:
    from ..training.config import PRESETS

    if args.list_presets:
        for name, c in PRESETS.items():
            print(f"{name:9s} data={c.data.matting:10s} T={c.seq_length_lr:<3d} "
                  f"hr={'T=%d' % c.seq_length_hr if c.train_hr else '-':5s} lr backbone/aspp/"
                  f"decoder/refiner={c.lr_backbone:g}/{c.lr_aspp:g}/{c.lr_decoder:g}/"
                  f"{c.lr_refiner:g} epochs={c.epochs:g} init={c.init}")
        return 0
    cfg = build_config(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from ..training.engine import Trainer

    def log(msg: str) -> None:  # with --quiet only the warnings
        if not args.quiet or msg.startswith("warning"):
            print(msg, file=sys.stderr, flush=True)

    trainer = Trainer(cfg, resume=args.resume, device=args.device, log=log)
    try:
        result = trainer.run()
        if args.export and trainer.rank == 0:
            path = trainer.export_weights(args.export)
            print(f"weights written to {path}", file=sys.stderr)
    finally:
        trainer.close()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {result['steps']} steps, loss {result['first_loss']} -> {result['last_loss']}, "
              f"checkpoint {result['checkpoint']}")
    return 0


def run_greenscreen(args) -> int:
    from ..training.greenscreen import prepare_greenscreen

    def progress(name, n):
        if n % 50 == 0 and not args.quiet:
            print(f"{name}: {n} frames", file=sys.stderr, flush=True)

    done = prepare_greenscreen(args.inputs, args.output, key_color=args.key_color,
                               tolerance=tuple(args.tolerance), spill=args.spill, every=args.every,
                               max_frames=args.max_frames, max_side=args.max_side,
                               overwrite=args.overwrite, progress=progress)
    for name, n in done.items():
        print(f"{name}: {n} frames -> {args.output}/fgr/{name}, {args.output}/pha/{name}")
    return 0
