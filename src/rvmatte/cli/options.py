"""The options every subcommand shares, declared once.

- The model options (:func:`add_model_options`), built from :class:`rvmatte.spec.ModelSpec`:
  ``--variant --weights --refiner --device --dtype --backend --downsample --threads`` (and
  ``--seq-chunk`` where a subcommand mattes video), with the same names, defaults and help in
  every subcommand that runs the model. :func:`spec_from_args` turns them into the spec.
- ``-o/--output`` for every subcommand that writes a file (:func:`add_output`; older spellings
  stay as hidden aliases), ``-q/--quiet`` for every one that prints progress (:func:`add_quiet`).
- :class:`HelpFormatter`: every ``--help`` shows the defaults and the choices.

Importing this module does not import PyTorch (``rvmatte convert`` on the CPU runs without it).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from ..spec import BACKENDS, DTYPES, REFINERS, VARIANTS, ModelSpec

# ModelSpec's fields, in the order of --help: (field, flag).
MODEL_OPTIONS = ("variant", "weights", "refiner", "device", "dtype", "backend", "downsample",
                 "threads")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs kept as written; ``(default: X)`` after every option that has a
    default. Not after flags (``store_true``: off unless given) nor after ``None`` (no value:
    the help says in words what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.nargs == 0:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter` by default; subparsers made from
    it are of this class too, so every subcommand's help shows defaults and choices."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


# Declared once: flag -> add_argument keywords. Defaults are ModelSpec's, spelled as the CLI
# spells them ("auto" where the spec stores None for "decide for me").
MODEL_ARGS: dict[str, dict] = {
    "variant": dict(default="mobilenetv3", choices=VARIANTS,
                    help="network: mobilenetv3 (fast) or resnet50 (more accurate; needs its "
                         "weights, --weights rvm_resnet50.pth)"),
    "weights": dict(default="default", metavar="default|PATH|none",
                    help="'default' (bundled, sha256-checked), a .pth checkpoint (with "
                         "--backend onnxruntime also an exported .onnx), or 'none' (random "
                         "init, testing only)"),
    "refiner": dict(default=None, choices=REFINERS,
                    help="full-resolution refiner (default: the one the weights come with)"),
    "device": dict(default="auto", metavar="auto|cpu|cuda[:N]|mps",
                   help="where the model runs; auto = CUDA, then MPS, then the CPU"),
    "dtype": dict(default=None, metavar="{" + ",".join(DTYPES) + "}",
                  help="precision of the network (default: float16 on CUDA, else float32)"),
    "backend": dict(default="auto", choices=BACKENDS,
                    help="how the network runs; auto = the fastest path measured for the "
                         "device and ratio (docs/SPEED.md: on CPUs 'fused' -- ONNX Runtime plus "
                         "rvmatte's compiled full-resolution kernel -- below ratio 1, and "
                         "'int8' -- the same over the bundled network quantised to 8 bits, "
                         "made once and cached -- instead on CPUs with VNNI; else ONNX "
                         "Runtime; CUDA graphs on NVIDIA GPUs); torch = plain eager PyTorch"),
    "downsample": dict(default="auto", metavar="auto|R",
                       help="downsample ratio in (0, 1] for the network's low-resolution pass; "
                            "auto = longest side of the working image at most 512 px"),
    "threads": dict(type=int, default=None, metavar="N",
                    help="CPU threads for the model (default: all cores; 1 for the network "
                         "of a conversion on a 2-core CPU's fused/int8 path; 1 helps on a "
                         "machine busy with other work)"),
}
SEQ_CHUNK_ARGS = dict(type=int, default=None, metavar="N",
                      help="frames per model call (default: 1 on the CPU, where it lets decode, "
                           "model and encode interleave best; 12 at 1080p on a GPU)")


def add_model_options(parser: argparse.ArgumentParser, *, seq_chunk: bool = False,
                      only: Optional[Sequence[str]] = None,
                      override: Optional[dict[str, dict]] = None) -> argparse._ArgumentGroup:
    """Add the model options (a "model" group) to ``parser``.

    ``only``: the subset of :data:`MODEL_OPTIONS` that means something to the subcommand
    (``export`` has no backend, ratio nor threads). ``override``: per-option keywords that
    replace the shared ones -- only where a subcommand must differ, and its help says why.
    ``seq_chunk``: also ``--seq-chunk`` (subcommands that matte video in chunks).
    """
    group = parser.add_argument_group("model")
    for name in MODEL_OPTIONS:
        if only is not None and name not in only:
            continue
        kwargs = {**MODEL_ARGS[name], **(override or {}).get(name, {})}
        group.add_argument("--" + name, **kwargs)
    if seq_chunk:
        group.add_argument("--seq-chunk", **SEQ_CHUNK_ARGS)
    return group


def spec_from_args(args: argparse.Namespace, **fields: Any) -> ModelSpec:
    """The :class:`ModelSpec` of the parsed model options (those the subcommand declares;
    the others keep the spec's defaults), with ``fields`` replaced. ``--threads`` is applied
    here too (:func:`rvmatte.hardware.set_threads`: torch's threads, now or when it loads).
    A bad value is a :class:`~rvmatte.errors.RvmatteError` (one line on the CLI)."""
    given = {name: getattr(args, name) for name in MODEL_OPTIONS if hasattr(args, name)}
    spec = ModelSpec.of(None, **{**given, **fields})
    set_threads(spec.threads)
    return spec


def set_threads(threads: Optional[int]) -> None:
    """``--threads``; by default (None) PyTorch's own choice (all cores). With
    OMP_WAIT_POLICY=PASSIVE (set by the CLI) idle model threads no longer spin against the
    decode/encode threads; on a quiet 2-core machine two model threads then beat one end to end
    (16.4 s vs 20.2 s for 90 frames of 1080p, docs/SPEED.md). ``--threads 1`` suits a machine
    busy with other work."""
    from ..errors import InputError
    from ..hardware import set_threads as set_model_threads

    if threads is None:
        return
    if isinstance(threads, bool) or int(threads) < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    set_model_threads(int(threads))  # torch's threads, now or when it loads (rvmatte.hardware)


def add_output(parser: argparse.ArgumentParser, *, help: str, aliases: Sequence[str] = (),
               dest: str = "output", **kwargs: Any) -> argparse.Action:
    """``-o/--output`` (dest ``output`` unless given); ``aliases``: older spellings, accepted
    but not shown in ``--help`` (scripts keep working)."""
    action = parser.add_argument("-o", "--output", dest=dest, help=help, **kwargs)
    for old in aliases:
        parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                            metavar=action.metavar)
    return action


def add_quiet(parser: argparse.ArgumentParser) -> argparse.Action:
    """``-q/--quiet``: no progress output; warnings and errors still print on stderr."""
    return parser.add_argument("-q", "--quiet", action="store_true",
                               help="no progress output (warnings and errors still print)")


def add_task_resources(parser) -> None:
    """``--cpus-per-task`` / ``--gpus-per-task`` / ``--actors``: what each conversion declares
    to a Ray cluster (``--cluster``) and where it runs; the same in every subcommand that can
    send work there."""
    parser.add_argument("--cpus-per-task", type=float, default=1, metavar="N",
                        help="with --cluster: CPUs each conversion task declares (and its "
                             "model threads on the CPU)")
    parser.add_argument("--gpus-per-task", type=float, default=0, metavar="N",
                        help="with --cluster: GPUs each conversion task declares (1: one task "
                             "per GPU; 0.5: two)")
    parser.add_argument("--actors", type=int, default=None, metavar="N",
                        help="with --cluster: convert on N long-lived Ray actors that keep the "
                             "model loaded from one video to the next (default: one per GPU "
                             "share with --gpus-per-task, else a task per video; 0: always "
                             "tasks)")


def add_post_options(p) -> None:
    """--stabilize and --foreground-estimation (convert and live)."""
    q = p.add_argument_group("quality (post stage after the network; docs/BENCHMARKS.md)")
    q.add_argument("--stabilize", action=argparse.BooleanOptionalAction, default=False,
                   help="temporal stabilisation: hold alpha and foreground where the image is "
                        "still (less flicker), the network's values where it moves")
    q.add_argument("--foreground-estimation", dest="refine_foreground",
                   action=argparse.BooleanOptionalAction, default=None,
                   help="estimate the foreground colours from the frame and the alpha "
                        "(multi-level, Germer et al. 2020) and mix them with the network's. "
                        "convert: on by default where the network runs on the CPU and an "
                        "output shows the foreground; live: off by default (its CPU budget)")


def post_kwargs(args) -> dict:
    """The quality options for convert_video / run_live: those given (on or off); the
    others keep the callee's default."""
    return {k: bool(v) for k in ("stabilize", "refine_foreground")
            if (v := getattr(args, k, None)) is not None}


def add_selection_options(g, *, frame_note: str = "") -> None:
    """Who is matted: --select, --select-box, --select-mask, --people, --select-frame
    (convert and live)."""
    g.add_argument("--select", action="append", default=None, metavar="X,Y",
                   help="keep only the person at this pixel (of the first frame, or of "
                        "--select-frame); repeat for several people; the others get alpha 0")
    g.add_argument("--select-box", default=None, metavar="X0,Y0,X1,Y1",
                   help="keep the people mostly inside this box")
    g.add_argument("--select-mask", default=None, metavar="PATH",
                   help="keep the people a mask image covers (white = keep)")
    g.add_argument("--people", type=int, default=None, metavar="N",
                   help="keep the N largest people (picked on the selection frame)")
    g.add_argument("--select-frame", type=int, default=None, metavar="N",
                   help=f"the frame the selection refers to (default 0{frame_note})")


def selection_from_args(args):
    """The :class:`rvmatte.post.people.Selection` of the flags (None: everyone)."""
    from ..post.people import Selection

    return Selection.parse(args.select, args.select_box, args.select_mask, args.people,
                           args.select_frame)
