"""Backend ``"int8"``: the ``fused`` CPU path over a network quantised to 8 bits.

ONNX Runtime's static quantisation (``quantize_static``: QDQ format, int8 weights per output
channel, uint8 activations, MinMax ranges) of rvmatte's own float exports: the
working-resolution ``coefficients`` graph that :class:`~rvmatte.runtime.fused.FusedRunner`
runs below ratio 1, and the ``full`` graph for ratio 1. The full-resolution step stays the
numba kernel of ``fused``.

What stays in float, measured (docs/SPEED.md, "INT8"): the refiner (the guided filter's box
statistics, ``var = E[x^2] - E[x]^2``, do not survive 8 bits) and the MobileNetV3 encoder's
stem and first three blocks (``features.0-3``, at 1/2 and 1/4 of the working size: of the
encoder, the first convolution lost the most by far, then these early blocks). The rest --
the encoder's blocks 4-16, LR-ASPP, the recurrent decoder (its ConvGRUs included) and the
projection -- runs in int8. Recipe 1 (until issue 22's profile) kept the whole encoder in
float; recipe 2 takes 7-16 % less CPU time in the network (6-10 % in the whole fused step) at
the working sizes of 720p and 1080p, and its benchmark MAD and dtSSD stay within 1.1 % of
float's. Only the network's own nodes (``/low/...``) are candidates; anything else in a graph
stays float.

The calibration runs the float graph over real frames, frame after frame, carrying the
recurrent state as in use, and records every tensor's range. Its frames are the sample clip
shipped in the package (``rvmatte/assets/sample_talking_head_640x360.mp4``, the same file as
``examples/`` of the checkout, checked by sha256) in :data:`SEQUENCES`, with a seeded choice
of frames and exposure: the same recipe gives the same file, from a pip install as from a
checkout. The quantised file lives in the export cache next to the float one
(:mod:`rvmatte.runtime.cache`), keyed also by :data:`RECIPE_VERSION` and ONNX Runtime's
version; it is made on first use (one line on stderr says so: 12 s per graph on two idle
cores, more under load; the float export it starts from needs PyTorch) and reused from then on
without torch. Two processes making it at once take turns (a lock file next to it, where the
system has ``fcntl``) and each writes through a temporary file renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..bundled import uses_bundled
from ..errors import RvmatteError, WeightsError
from . import cache, kernels
from .fused import FusedRunner

# Bump when anything below changes the quantised file (frames, sequences, kept-float nodes,
# quantisation options): cached files of an older recipe are then made again. The recipes of
# the versions before stay in RECIPES, for benchmarks/int8_recipes.py to compare against.
RECIPE_VERSION = 2
CALIBRATION_CLIP = "sample_talking_head_640x360.mp4"  # in rvmatte/assets (and examples/)
CALIBRATION_SHA256 = "9de303e99917935dc80efa59975fc3db5b0febbbd043547bc4cdf6ec7f1dbc6b"
SEED = 20250522
# Seconds to quantise one graph on two idle cores of the machine of docs/SPEED.md ("INT8"),
# for the line that announces it; scaled by the load per core.
SECONDS_PER_GRAPH = 12


@dataclass(frozen=True)
class CalibrationSequence:
    """A calibration sequence: every ``stride``-th frame of the clip (from a seeded offset),
    downsampled to ``width`` x ``height`` (the working sizes of 1280x720 at ratios 0.4 and
    0.25), optionally mirrored and with a seeded exposure gain."""

    width: int
    height: int
    stride: int
    mirror: bool
    gain: tuple[float, float]  # the range the seeded gain is drawn from


SEQUENCES = (CalibrationSequence(512, 288, 3, False, (1.0, 1.0)),
             CalibrationSequence(320, 180, 3, True, (0.8, 1.2)))
# The nodes that may be quantised (the network's own; not the refiner's).
QUANTISABLE = re.compile(r"^/low/")


@dataclass(frozen=True)
class Recipe:
    """What is quantised: the nodes of :data:`QUANTISABLE` but those ``kept_float`` matches
    (a regular expression over node names). Its ``version`` is in the cached file's key."""

    version: int
    kept_float: str

    def keeps(self, name: str) -> bool:
        return re.search(self.kept_float, name) is not None


RECIPES = {
    # 2026-12-04: the whole MobileNetV3 encoder in float
    1: Recipe(1, r"^/low/backbone/"),
    # issue 22: the encoder's stem and first three blocks only
    2: Recipe(2, r"^/low/backbone/features\.[0-3]/"),
}
RECIPE = RECIPES[RECIPE_VERSION]


def _quantization():
    """``onnxruntime.quantization`` or one clear error (it also needs the ``onnx`` package)."""
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise RvmatteError("backend 'int8' quantises the network on first use with "
                           f"onnxruntime.quantization, which cannot be imported here ({e}); "
                           "install it with: pip install onnx onnxruntime, or use --backend "
                           "fused") from None
    return quantization


def _ort_version() -> str:
    from importlib import metadata

    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def expected_seconds() -> int:
    """About how long quantising one graph takes here (:data:`SECONDS_PER_GRAPH` on two idle
    cores, longer on fewer cores or under load): for the announcement, not a promise."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return int(round(SECONDS_PER_GRAPH * max(1.0, 2 / cores) * max(1.0, load / cores)))


@contextlib.contextmanager
def _turn(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (an exclusive ``flock``) while ``path`` is made, so that a second
    process making the same file waits and then finds it; without ``fcntl`` (Windows) both
    make it and the last rename wins (the same bytes). ``OSError`` if the folder cannot be
    written (the cache then falls back, :func:`rvmatte.runtime.cache._find_or_make`)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Int8Quantiser:
    """The int8 derivation of a float export, for :mod:`rvmatte.runtime.cache` (``derived=``):
    the file's tag, the version in its key, and how to make it. ``cache_only``: refuse to make
    it anywhere but the user cache (``backend="auto"``: where the cache cannot be written,
    ``fused`` is better than quantising again in every process)."""

    tag = "int8"

    def __init__(self, *, cache_only: bool = False) -> None:
        self.cache_only = cache_only

    @property
    def version(self) -> str:
        return f"recipe{RECIPE_VERSION}/ort{_ort_version()}"

    def make(self, float_onnx: Callable[[], Path], path: Path, *, graph: str) -> None:
        _quantization()  # before the float export (which needs torch): one clear error
        folder = cache.cache_dir() / "onnx"
        if self.cache_only and path.parent.resolve() != folder.resolve():
            raise RvmatteError(f"the cache {folder} cannot be written")
        with _turn(path):
            if path.is_file():
                return  # another process made it while this one waited
            print(f"rvmatte: preparing the int8 network once (about {expected_seconds()} s); "
                  f"cached in {path.parent}", file=sys.stderr, flush=True)
            src = float_onnx()
            try:
                quantize(src, path, graph=graph)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, by name below
                if type(e).__name__ != "DecodeError":
                    raise
                # a damaged float export in the cache (a killed write, a full disk): made
                # again, once, as OnnxRuntimeRunner does for the float graphs
                Path(src).unlink(missing_ok=True)
                quantize(float_onnx(), path, graph=graph)


INT8 = Int8Quantiser()
INT8_CACHE_ONLY = Int8Quantiser(cache_only=True)


# -- calibration ---------------------------------------------------------------------------
def calibration_clip() -> Path:
    """The sample clip shipped in the package (``rvmatte/assets``), checked by sha256; one
    clear error if it is missing or altered."""
    from importlib import resources

    path = Path(str(resources.files("rvmatte") / "assets" / CALIBRATION_CLIP))
    if not path.is_file():
        raise RvmatteError(f"backend 'int8' calibrates on {path}, which is missing from this "
                           "installation; reinstall rvmatte, or use --backend fused")
    if hashlib.sha256(path.read_bytes()).hexdigest() != CALIBRATION_SHA256:
        raise RvmatteError(f"{path} is not the calibration clip rvmatte expects (sha256 "
                           "differs); reinstall rvmatte, or use --backend fused")
    return path


def calibration_frames() -> list[list[np.ndarray]]:
    """The calibration sequences: one list of float32 (1,3,h,w) RGB frames in [0, 1] per
    entry of :data:`SEQUENCES`, the same on every run."""
    import av

    with av.open(str(calibration_clip())) as container:
        clip = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rng = np.random.default_rng(SEED)
    out = []
    for s in SEQUENCES:
        start = int(rng.integers(s.stride))
        gain = float(rng.uniform(*s.gain))
        seq = []
        for frame in clip[start::s.stride]:
            x = kernels.downsample(np.ascontiguousarray(frame[:, ::-1] if s.mirror else frame),
                                   s.width / frame.shape[1])
            if x.shape[1:] != (s.height, s.width):
                raise RvmatteError(f"calibration frame of {x.shape[1:]}, expected "
                                   f"{(s.height, s.width)}")
            seq.append(np.clip(x * gain, 0, 1, dtype=np.float32)[None])
        out.append(seq)
    return out


def calibration_feeds(float_onnx: Path, graph: str) -> list[dict]:
    """The inputs of ``float_onnx`` (a ``graph`` export) for each calibration frame, the
    recurrent state of each being what the float graph returned for the frame before (zeros
    at a sequence's start), as in use. ``full`` graphs run at ratio 1."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(float_onnx), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    zero = np.zeros((1, 1, 1, 1), np.float32)
    feeds = []
    for seq in calibration_frames():
        rec = [zero] * 4
        for x in seq:
            feed = {"src_sm" if graph == "coefficients" else "src": x}
            feed.update({f"r{k}i": r for k, r in enumerate(rec, 1)})
            if graph == "full":
                feed["downsample_ratio"] = np.ones(1, np.float32)
            feeds.append(feed)
            rec = session.run(["r1o", "r2o", "r3o", "r4o"], feed)
    return feeds


# -- quantisation --------------------------------------------------------------------------
def nodes_to_quantize(model_proto, recipe: Recipe = RECIPE) -> list[str]:
    """The names of the nodes ``recipe`` quantises in ``model_proto`` (an rvmatte export).
    A graph where the recipe finds nothing to keep in float (renamed nodes) is an error, not
    a silently worse network."""
    names = [n.name for n in model_proto.graph.node if QUANTISABLE.search(n.name)]
    kept = [n for n in names if recipe.keeps(n)]
    if not kept or len(kept) == len(names):
        raise RvmatteError("the exported graph's node names are not those the int8 recipe "
                           "knows (rvmatte.runtime.int8.RECIPES); use --backend fused")
    return [n for n in names if not recipe.keeps(n)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the quantiser's advice (on the root logger: "consider pre-processing...") and its
    calibration session's warnings (ONNX Runtime's default logger) out of the user's
    terminal. (ONNX Runtime has no getter for its default severity: it goes back to 2, its
    default, which rvmatte does not change elsewhere.)"""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def quantize(float_onnx: str | os.PathLike, path: str | os.PathLike, *, graph: str,
             recipe: Recipe = RECIPE) -> Path:
    """Quantise ``float_onnx`` (rvmatte's float32 export of ``graph``, ``"coefficients"`` or
    ``"full"``) into ``path`` by ``recipe`` (default: this module's, :data:`RECIPE`); written
    atomically."""
    q = _quantization()
    import onnx

    float_onnx, path = Path(float_onnx), Path(path)
    if graph not in ("coefficients", "full"):
        raise ValueError(f"unknown graph {graph!r}")
    nodes = nodes_to_quantize(onnx.load(str(float_onnx)), recipe)
    feeds = calibration_feeds(float_onnx, graph)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> Optional[dict]:
            return next(self._it, None)

    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        # Every frame's ranges are kept (a few numbers each). Not CalibMaxIntermediateOutputs:
        # onnxruntime 1.32 drops each full batch without merging its ranges into the result.
        with _quiet():
            q.quantize_static(str(float_onnx), str(tmp), Reader(),
                              quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              nodes_to_quantize=nodes, calibrate_method=q.CalibrationMethod.MinMax)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def int8_onnx(graph: str, *, variant: str = "mobilenetv3", weights: Any = "default",
              refiner: Optional[str] = None, model=None, onnx_path=None,
              cache_only: bool = False) -> Path:
    """The cached int8 file of ``graph`` for a model given as :class:`FusedRunner` takes it:
    the bundled weights by their pinned key (no torch once made), a built ``model`` by a hash
    of its weights; a user's ``.onnx`` file is refused (rvmatte quantises its own exports).
    ``cache_only``: see :class:`Int8Quantiser`."""
    if onnx_path is not None:
        raise RvmatteError("backend 'int8' quantises rvmatte's own export of a model, not an "
                           ".onnx file; use --backend onnxruntime for that")
    derived = INT8_CACHE_ONLY if cache_only else INT8
    if model is None and uses_bundled(variant, weights, refiner):
        return cache.bundled_onnx(variant, graph=graph, derived=derived)
    if model is None:
        model = cache._load_model(variant, refiner=refiner, weights=weights, device="cpu")
    return cache.cached_onnx(model, graph=graph, derived=derived)


class Int8Runner(FusedRunner):
    """``Int8Runner(**source, threads=None, cache_only=False)``:
    :class:`~rvmatte.runtime.fused.FusedRunner` (same ``source`` keywords, CPU, float32 in and
    out) over the int8 graphs; ``cache_only`` as for :class:`Int8Quantiser`."""

    backend = "int8"

    def __init__(self, *, cache_only: bool = False, **kwargs: Any) -> None:
        self._cache_only = cache_only  # before FusedRunner opens the first graph
        super().__init__(**kwargs)

    def _open(self, graph: str):
        from .ort import OnnxRuntimeRunner

        source = {k: v for k, v in self._source.items() if k != "threads"}
        source["cache_only"] = self._cache_only
        threads = self._source.get("threads")
        path = int8_onnx(graph, **source)
        try:
            return OnnxRuntimeRunner(device="cpu", onnx_path=path, graph=graph, threads=threads)
        except WeightsError:
            # A damaged file in our own cache (a crash, a full disk): make it again, once.
            path.unlink(missing_ok=True)
        return OnnxRuntimeRunner(device="cpu", onnx_path=int8_onnx(graph, **source), graph=graph,
                                 threads=threads)
