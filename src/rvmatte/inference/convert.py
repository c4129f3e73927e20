"""``convert_video``: matte a video (or image sequence / image) into any combination of outputs.

Pipeline (three threads, bounded queues, flat memory)::

    decode thread:  Source.frames() -> chunks of seq_chunk uint8 frames      --q_in-->
    caller thread:  Matter.step() -> composite / alpha / foreground as uint8 --q_out-->
    encode thread:  segment writers (video) / PNG files; checkpoints at segment ends
                    (on 4+ cores the video encoders run on worker threads; on 8+ cores, or
                    2+ with the model on a GPU, several segments of each output at a time:
                    rvmatte.io.segments)

Every ``segment`` frames (a multiple of ``seq_chunk``) the encode thread closes the segment
files and, once they and every earlier segment are encoded, saves a checkpoint (frame index,
last timestamp, recurrent state, segment list) in ``<first output>.rvmatte-resume/``. A job
killed at any point (even ``kill -9``) continues from there with ``resume=True``. When all
frames are done the segments are remuxed with the input's audio into temporary files that are
renamed into place; the checkpoint is removed.

On the CPU, a conversion that the fused path can make (rvmatte.inference.fused: bundled
weights, float32, a downsample ratio below 1, 8-bit outputs over a colour) runs without
importing PyTorch, which is 1.3-2.5 s of a 2-core machine's start-up (rvmatte.hardware).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import io
import json
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ..errors import Cancelled, InputError, OutputError, RvmatteError
from ..io.compose import (Background, ColorBackground, NAMED, composite, parse_background,
                          to_uint8)
from ..io.readers import Source, SourceInfo, list_videos, parse_range, probe
from ..io.segments import SegmentedOutputs, check_count, plan_encoding
from ..io.writers import (AudioPlan, HARDWARE_ENCODERS, OutputSpec, SegmentWriter,
                          SEGMENT_FORMAT, assemble, check_encoder_choice, check_output_target,
                          check_preset, image_name, move_images, pick_encoder, pix_fmt_for,
                          plan_output, replace_into_place, write_png)
from ..io.yuv import gray_to_yuv420, is_full_range, matrix_for, rgb_to_yuv420
from ..downsample import auto_downsample_ratio, parse_downsample_ratio

if TYPE_CHECKING:
    import torch

CHECKPOINT_VERSION = 2  # 2: the recurrent state as float32 numpy arrays (state.npz)
DEFAULT_BACKGROUND = NAMED["green"]
_QUEUE_CHUNKS = 3  # chunks buffered between threads (bounds memory)


@dataclass(frozen=True)
class ProgressInfo:
    """Passed to a ``progress`` callable after each chunk of frames."""

    done: int                      # frames processed so far (including resumed ones)
    total: Optional[int]           # frames expected (None if the container does not say)
    fps: float                     # frames per second in this run
    eta_seconds: Optional[float]


@dataclass
class ConversionResult:
    frames: int                    # frames in the outputs
    seconds: float                 # wall time of this run
    fps: float                     # frames processed per second in this run
    outputs: dict = field(default_factory=dict)   # kind -> path
    audio: Optional[str] = None    # "copy", "aac", "opus" or None (no audio carried)
    resumed_from: int = 0          # frame index this run started at (0 = from scratch)
    downsample_ratio: float = 1.0
    input: Optional[str] = None
    encoders: dict = field(default_factory=dict)  # kind -> libavcodec encoder (video outputs)
    notes: list = field(default_factory=list)     # e.g. why hardware encoding was not used
    encoding: dict = field(default_factory=dict)  # segment_frames, workers, threads (video)
    stages: dict = field(default_factory=dict)    # seconds per stage, see _Stages.report

    @property
    def bottleneck(self) -> Optional[str]:
        """The pipeline stage that bounded this run's speed: ``"decode"``, ``"model"`` or
        ``"encode"`` (the one busy for the largest share of the run), None if not timed."""
        busy = {k: self.stages.get(f"{k}_s", 0.0) for k in ("decode", "model", "encode")}
        return max(busy, key=busy.get) if any(busy.values()) else None

    def as_dict(self) -> dict:
        return {"input": self.input, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 3), "outputs": {k: str(v) for k, v in self.outputs.items()},
                "audio": self.audio, "resumed_from": self.resumed_from,
                "downsample_ratio": self.downsample_ratio, "encoders": dict(self.encoders),
                "notes": list(self.notes), "encoding": dict(self.encoding),
                "stages": {k: round(v, 3) for k, v in self.stages.items()},
                "bottleneck": self.bottleneck}


# ---- helpers ------------------------------------------------------------------------------

def _default_seq_chunk(device: Any, height: int = 1080, width: int = 1920) -> int:
    """GPUs gain from batching frames: 12 per call at 1080p, fewer for larger frames so that a
    chunk's memory stays that of 12 1080p frames (about 2.3 GB with CUDA graphs in fp16; 4K
    gets 3). On the CPU one frame per call lets decode, model and encode interleave best: 90
    frames of 1080p (composite + alpha, ratio 0.25) took 14.3 s with 1 frame per call against
    16.8 s with 4 (docs/SPEED.md). ``device``: a ``torch.device`` or its type."""
    if getattr(device, "type", device) not in ("cuda", "mps"):
        return 1
    return max(1, min(12, round(12 * 1920 * 1080 / max(1, height * width))))


def _fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _expected_frames(info: SourceInfo, rng) -> Optional[int]:
    total = info.frames
    if rng.empty or total is None:
        return total
    if rng.unit == "f":
        s = int(rng.start or 0)
        e = int(rng.end) if rng.end is not None else total
        return max(0, min(e, total) - s)
    dur = info.duration if info.duration is not None else total / float(info.rate)
    s = rng.start or 0.0
    e = min(rng.end, dur) if rng.end is not None else dur
    return max(0, int(round((e - s) * float(info.rate))))


class _Tqdm:
    def __init__(self, total, initial):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="frame", file=sys.stderr,
                        dynamic_ncols=True, leave=True)

    def __call__(self, p: ProgressInfo):
        self.bar.update(p.done - self.bar.n)

    def close(self):
        self.bar.close()


def _torch_free_fused(model, variant, weights, refiner, device, dtype, backend):
    """The fused CPU path can be built without PyTorch for this request: no model given,
    the bundled weights, the CPU in float32, ``auto`` or ``fused`` backend, onnxruntime and
    numba installed. (The caller checks the ratio and outputs.)"""
    from .. import kernels
    from ..bundled import uses_bundled
    from ..hardware import cpu_requested, dtype_name

    return (model is None and backend in ("auto", "fused") and kernels.available()
            and importlib.util.find_spec("onnxruntime") is not None
            and uses_bundled(variant, weights, refiner) and cpu_requested(device)
            and dtype_name(dtype) == "float32")


def _state_arrays(state) -> list:
    """The recurrent state (tensors on any device and dtype, or arrays) as float32 numpy
    copies, for a checkpoint (float32 holds float16 and bfloat16 values exactly)."""
    out = []
    for s in state:
        if hasattr(s, "detach"):
            import torch

            s = s.detach().to("cpu", torch.float32).numpy()
        out.append(np.array(s, dtype=np.float32, copy=True))
    return out


def _is_cuda_oom(e: BaseException) -> bool:
    mod = sys.modules.get("torch")  # a CUDA error can only come from a loaded torch
    return mod is not None and isinstance(e, mod.cuda.OutOfMemoryError)


def _make_matter(model, **kw):
    from ..hardware import apply_threads
    from .session import Matter

    apply_threads()  # --threads, given before torch was loaded

    if isinstance(model, Matter):
        return model  # its weights/device; the conversion's downsample ratio is passed per step
    return Matter(model, **kw)


@functools.cache
def _tune_malloc() -> bool:
    """Keep freed frame-sized buffers in the process instead of handing them back to the OS.

    Each 1080p frame passes through 15-20 MB of short-lived buffers (decoded frame, network
    input, outputs, encoder frames). glibc serves blocks that large with ``mmap`` and returns
    them with ``munmap``, so every frame paid about 4000 page faults: 1.2 M minor faults and
    3 s of system time for 300 frames, 7 % of the wall time on 2 cores (docs/SPEED.md). Raising
    the mmap and trim thresholds (64 MB / 256 MB) lets the heap reuse them. glibc only; done
    once per process; returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return (libc.mallopt(m_mmap_threshold, 64 << 20) == 1
                and libc.mallopt(m_trim_threshold, 256 << 20) == 1)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


# ---- the job --------------------------------------------------------------------------------

class _Job:
    """State shared by the three threads of one conversion."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.lock = threading.Lock()

    def fail(self, e: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = e
        self.stop.set()


class _Stages:
    """Where a conversion's time goes, one accumulator per thread (each written by its own
    thread only): the decode thread's time decoding, the model thread's time matting and
    transferring, the encode thread's time handing frames to the encoders (which includes
    waiting for a free encoder), and the time each spent waiting for its neighbour. A stage
    busy for nearly the whole run is the one that bounds the speed."""

    KEYS = ("decode_s", "decode_blocked_s", "model_s", "model_waited_for_input_s",
            "model_blocked_s", "encode_s", "encode_waited_for_input_s")

    def __init__(self) -> None:
        self.t = dict.fromkeys(self.KEYS, 0.0)

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.t[key] += now - since
        return now

    def report(self) -> dict:
        return dict(self.t)


def _put(q: queue.Queue, item, job: _Job, halt: Optional[threading.Event] = None) -> bool:
    while not job.stop.is_set() and not (halt is not None and halt.is_set()):
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, job: _Job):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if job.stop.is_set():
                return None


def convert_video(input, output=None, *, alpha=None, foreground=None, background=None,
                  downsample_ratio="auto", variant="mobilenetv3", weights="default", refiner=None,
                  device=None, dtype=None, backend="auto", seq_chunk=None, start=None, end=None,
                  codec=None, quality=None, overwrite=False, resume=False, progress=None,
                  cancel=None, model=None, alpha_bits: int = 8,
                  segment_frames: Optional[int] = None, preset: Optional[str] = None,
                  encoder: str = "auto", device_yuv: Optional[bool] = None,
                  encode_workers="auto", encoder_threads=None,
                  encode_processes: bool = False) -> ConversionResult:
    """Matte ``input`` and write any combination of ``output`` (composite), ``alpha`` and
    ``foreground``.

    input: a video file, an image folder, a ``%06d.png`` pattern or a single image.
    output / alpha / foreground: paths; the format follows the extension (``.mp4``/``.mkv``
        H.264, ``.mov`` ProRes 4444, ``.webm`` VP9, a folder or ``%06d.png`` pattern for PNG).
    background: colour (name or ``#rrggbb``), image path, video path, ``blur[:SIGMA]`` or
        ``transparent``. Default: transparent where the format stores alpha, else green.
    downsample_ratio: ``"auto"`` (longest side at most 512 px) or a float in (0, 1].
    start / end: seconds (``12.5``, ``"1:02"``) or frames (``"150f"``).
    codec / quality: ``h264``/``h265``/``vp9``/``prores``/``ffv1``/``qtrle``/``png``; CRF-like.
    resume: continue a killed job from its checkpoint (``<output>.rvmatte-resume/``).
    progress: None/False, True (tqdm on stderr) or a callable receiving :class:`ProgressInfo`.
    cancel: a ``threading.Event``; when set the job stops with :class:`~rvmatte.errors.Cancelled`
        and keeps its checkpoint.
    model: an already loaded network (or a :class:`~rvmatte.inference.session.Matter`).
    alpha_bits: 8 or 16 (alpha written as PNG).
    segment_frames: frames per checkpoint segment (default about 10 s of video, 2 s when
        several segments are encoded at a time).
    preset: x264/x265 speed preset, ``ultrafast`` .. ``veryslow`` (default ``veryfast``).
    encoder: ``"auto"`` (NVENC for H.264/H.265 when the model runs on a CUDA GPU that can
        encode, else software), ``"software"`` or ``"hardware"`` (NVENC or an error).
    device_yuv: convert colours (decoded YUV 4:2:0 -> RGB, RGB -> YUV 4:2:0 for H.264/H.265/VP9
        outputs) on the model's device instead of in libswscale on the CPU. Default: on for CUDA;
        on the CPU's fused path the kernel writes the composite and alpha as 4:2:0 (False: not).
    backend: ``"auto"`` (default: the fastest measured path for the device and ratio, see
        :func:`~rvmatte.inference.session.auto_backend`), or one of
        :data:`~rvmatte.inference.session.BACKENDS`.
    encode_workers: segments of each video output encoded at a time, each by its own encoder
        (``"auto"``: several on 8+ cores, or on 2+ when the model runs on a GPU, else one;
        see :func:`rvmatte.io.segments.plan_encoding`).
    encoder_threads: threads per encoder (default: the encoder's choice with one encoder per
        output, else the cores divided among the encoders).
    encode_processes: with several encode workers, run each segment's encoder in a child
        process instead of a thread (:mod:`rvmatte.io.encoder_process`): no contention for the
        interpreter lock, at the cost of one more copy of each frame. Off by default: it
        helped x264 ``ultrafast`` on a 16-vCPU GPU machine and cost ``veryfast``
        (docs/SPEED.md).
    """
    t_start = time.perf_counter()
    _tune_malloc()
    ratio_value = parse_downsample_ratio(downsample_ratio)  # validates early
    rng = parse_range(start, end)
    requested = [(k, p) for k, p in (("composite", output), ("alpha", alpha),
                                     ("foreground", foreground)) if p is not None]
    if not requested:
        raise InputError("no output requested: give an output path (-o), --alpha or --foreground")
    if seq_chunk is not None and (not isinstance(seq_chunk, int) or seq_chunk < 1):
        raise InputError(f"invalid seq_chunk {seq_chunk!r}: must be a positive integer")
    if segment_frames is not None and (not isinstance(segment_frames, int) or segment_frames < 1):
        raise InputError(f"invalid segment_frames {segment_frames!r}: must be a positive integer")
    preset = check_preset(preset)
    check_encoder_choice(encoder)
    check_count(encode_workers, "number of encode workers")
    check_count(encoder_threads, "number of encoder threads")

    in_path = Path(input)
    info = probe(in_path)
    still = info.kind == "image"
    bg = parse_background(background)

    specs: list[OutputSpec] = []
    for kind, p in requested:
        transparent = None
        if kind == "composite":
            transparent = True if bg == "transparent" else (None if bg is None else False)
        try:
            spec = plan_output(kind, p, codec=codec, transparent=transparent, quality=quality,
                               alpha_bits=alpha_bits, still=still)
        except OutputError:
            if kind != "composite" and codec is not None:
                # --codec targets the composite; side outputs keep their format's default
                spec = plan_output(kind, p, codec=None, transparent=transparent,
                                   quality=quality, alpha_bits=alpha_bits, still=still)
            else:
                raise
        specs.append(dataclasses.replace(spec, preset=preset))
    paths = [s.path.resolve() for s in specs]
    if len(set(paths)) != len(paths):
        raise OutputError("two outputs have the same path")
    inputs = [in_path] + ([Path(str(background))] if isinstance(bg, Background)
                          and Path(str(background)).exists() else [])
    for s in specs:
        check_output_target(s, overwrite=overwrite, inputs=inputs)
    comp_bg: Optional[Background] = None
    for s in specs:
        if s.kind == "composite" and not s.rgba:
            comp_bg = bg if isinstance(bg, Background) else ColorBackground(DEFAULT_BACKGROUND)

    ratio = (ratio_value if ratio_value is not None
             else auto_downsample_ratio(info.height, info.width))
    # The CPU's fused path (backend "fused", rvmatte.kernels): uint8 frames in, each output
    # made as uint8 in one pass -- for H.264/H.265/VP9 the composite and the alpha directly as
    # the encoder's 4:2:0 planes (unless device_yuv=False). It covers 8-bit outputs over a
    # colour or no background.
    fused_names = {"rgb:composite": "composite", "rgba:composite": "rgba",
                   "rgba:foreground": "rgba", "rgb:foreground": "foreground", "gray:alpha": "alpha",
                   "yuv:composite": "composite_yuv", "yuv:alpha": "alpha_yuv"}
    fused_able = (all(f"{s.channels}:{s.kind}" in fused_names for s in specs)
                  and (alpha_bits == 8 or all(s.kind != "alpha" for s in specs))
                  and (comp_bg is None or isinstance(comp_bg, ColorBackground)))
    fused = matter = None
    if (fused_able and ratio < 1 and device_yuv is not True
            and _torch_free_fused(model, variant, weights, refiner, device, dtype, backend)):
        from .fused import FusedRunner  # what Matter would pick, built without PyTorch

        fused = FusedRunner(variant=variant, weights=weights, refiner=refiner, device="cpu")
        device_type, dtype_label = "cpu", "torch.float32"
    else:
        matter = _make_matter(model, variant=variant, weights=weights, refiner=refiner,
                              device=device, dtype=dtype, downsample_ratio=downsample_ratio,
                              backend=backend)
        device_type, dtype_label = matter.device.type, str(matter.dtype)
    if seq_chunk is None:
        seq_chunk = _default_seq_chunk(device_type, info.height, info.width)
    gpu = device_type == "cuda"
    notes: list[str] = []
    for i, s in enumerate(specs):
        if s.mode == "video":
            enc, note = pick_encoder(s.codec, encoder, gpu=gpu)
            specs[i] = dataclasses.replace(s, encoder=enc)
            if note and note not in notes:
                notes.append(note)
    # Colour conversion on the model's device (default on CUDA): decoded 4:2:0 planes go up,
    # 4:2:0 planes come back for the outputs that are encoded as 4:2:0.
    use_yuv = gpu if device_yuv is None else bool(device_yuv)
    yuv_in = use_yuv and info.yuv420_ok
    even = info.width % 2 == 0 and info.height % 2 == 0
    yuv_able = {s.kind for s in specs if s.mode == "video" and not s.rgba and even
                and pix_fmt_for(s, info.width, info.height) == "yuv420p"}
    in_matrix, in_full = matrix_for(info.colorspace), is_full_range(info.color_range)
    if matter is not None and not yuv_in and fused_able:
        fused = matter.fused_runner(ratio)
    if fused is not None:
        yuv_out = (set() if device_yuv is False
                   else {k for k in yuv_able if k in ("composite", "alpha")})
    else:
        yuv_out = yuv_able if use_yuv else set()
    # what the model thread makes for each output: "<channels>:<kind>" ("yuv" = 4:2:0 planes)
    keys = {s.kind: ("yuv" if s.kind in yuv_out else s.channels) + ":" + s.kind for s in specs}
    video_specs = [s for s in specs if s.mode == "video"]
    plane_bytes = {"yuv": 1.5, "rgb": 3, "rgba": 4, "gray": 1}
    frame_bytes = {s.kind: int(plane_bytes[keys[s.kind].split(":")[0]] * info.width * info.height)
                   for s in video_specs}  # one frame of each video output, as encoded
    plan = plan_encoding(len(video_specs), rate=float(info.rate), workers=encode_workers,
                         threads=encoder_threads, gpu=gpu, segment_frames=segment_frames,
                         processes=bool(encode_processes),
                         hardware=any(s.encoder_name in HARDWARE_ENCODERS.values()
                                      for s in video_specs),
                         frame_bytes=sum(frame_bytes.values()))
    if segment_frames is None:
        segment_frames = seq_chunk * max(1, int(round(plan.segment_seconds * float(info.rate)
                                                      / seq_chunk)))
    else:
        segment_frames = max(1, -(-int(segment_frames) // seq_chunk)) * seq_chunk
    if fused is not None:
        fused_bg = (tuple(c / 255.0 for c in comp_bg.rgb) if comp_bg is not None
                    else (0.0, 0.0, 0.0))
        fused_outputs = sorted({fused_names[k] for k in keys.values()})

    for s in specs:  # frames/%06d.png: the folder is created (its parent exists, checked above)
        if s.mode == "images" and "%" in s.path.name and str(s.path.parent):
            s.path.parent.mkdir(exist_ok=True)

    # ---- checkpoint folder --------------------------------------------------------------
    job_dir = Path(str(specs[0].path).replace("%", "_") + ".rvmatte-resume")
    st = in_path.stat() if in_path.exists() else None
    fp = _fingerprint({
        "v": CHECKPOINT_VERSION, "input": str(in_path.resolve()),
        "size": st.st_size if st else None, "mtime": st.st_mtime_ns if st else None,
        "outputs": [(s.kind, str(s.path.resolve()), s.mode, s.codec, s.rgba, s.alpha_bits,
                     s.quality, s.preset, s.encoder, s.kind in yuv_out) for s in specs],
        "yuv_in": yuv_in,
        "background": getattr(comp_bg, "name", None), "ratio": ratio, "variant": variant,
        "weights": str(weights) if model is None else f"model:{type(model).__name__}",
        "refiner": refiner, "dtype": dtype_label, "backend": backend,
        "seq_chunk": seq_chunk, "segment": segment_frames, "range": [rng.start, rng.end, rng.unit],
    })
    ckpt, saved_state = None, None
    if job_dir.exists():
        meta_path = job_dir / "job.json"
        if resume and meta_path.is_file() and (job_dir / "state.npz").is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("fingerprint") == fp:
                    with np.load(job_dir / "state.npz") as z:
                        saved_state = [z[f"arr_{i}"] for i in range(len(z.files))]
                    ckpt = meta
            except Exception:  # noqa: BLE001 - an unreadable checkpoint: start over
                ckpt = None
        if ckpt is None:
            shutil.rmtree(job_dir, ignore_errors=True)  # stale or different job: start over
    try:
        job_dir.mkdir(exist_ok=True)
        (job_dir / "segments").mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {job_dir}: {e.strerror or e}") from None

    state = None
    resume_index, last_pts, range_offset = 0, None, None
    segments: dict[str, list] = {s.kind: [] for s in specs}
    if ckpt is not None:
        resume_index = int(ckpt["done"])
        last_pts = ckpt["last_pts"]
        range_offset = ckpt["range_offset"]
        segments = {k: [(job_dir / "segments" / name, pts) for name, pts in v]
                    for k, v in ckpt["segments"].items()}
        if not saved_state:
            state = None
        elif fused is not None:  # takes numpy arrays
            state = tuple(saved_state)
        else:
            import torch

            state = tuple(torch.from_numpy(a).to(matter.device, matter.dtype) for a in saved_state)
        # drop anything written after the checkpoint
        keep = {p.name for v in segments.values() for p, _ in v}
        for f in (job_dir / "segments").iterdir():
            if f.name not in keep:
                f.unlink()

    total = _expected_frames(info, rng)
    reporter: Optional[Callable] = None
    bar = None
    if progress is True:
        bar = _Tqdm(total, resume_index)
        reporter = bar
    elif callable(progress):
        reporter = progress

    source = Source(info, rng)
    job = _Job()
    stages = _Stages()
    q_in: queue.Queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
    q_out: queue.Queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
    time_base, rate = info.time_base, info.rate
    width, height = info.width, info.height
    image_dirs = {s.kind: job_dir / f"{s.kind}_frames" for s in specs if s.mode == "images"}
    for d in image_dirs.values():
        d.mkdir(exist_ok=True)
    shared = {"range_offset": range_offset, "done_written": resume_index, "last_pts": last_pts}

    # ---- decode thread ------------------------------------------------------------------
    halt = threading.Event()  # cancel: stop decoding, let the encoder finish what it has

    def decode() -> None:
        # 4:2:0 planes are written straight into the chunk (one copy from the decoder); RGB
        # frames are stacked (with one frame per chunk, the CPU default, the frame is the chunk)
        filling: Optional[np.ndarray] = None  # the 4:2:0 chunk the frames are written into

        def slot() -> np.ndarray:
            nonlocal filling
            if filling is None:
                filling = np.empty((seq_chunk, height * 3 // 2, width), np.uint8)
            return filling[len(buf)]

        def chunk_of(frames: list) -> np.ndarray:
            nonlocal filling
            if yuv_in:
                chunk, filling = filling[:len(frames)], None  # the next frame starts a new one
                return chunk
            return frames[0][None] if len(frames) == 1 else np.stack(frames)

        try:
            buf, idx, pts = [], [], []
            resume_pts = None if last_pts is None else last_pts + 1
            t = time.perf_counter()
            for fr in source.frames(resume_index, resume_pts, yuv=yuv_in,
                                    into=slot if yuv_in else None):
                if job.stop.is_set() or halt.is_set():
                    return
                buf.append(fr.image)
                idx.append(fr.index)
                pts.append(fr.pts)
                if len(buf) == seq_chunk:
                    chunk = chunk_of(buf)
                    t = stages.add("decode_s", t)
                    if not _put(q_in, (idx, pts, chunk), job, halt):
                        return
                    t = stages.add("decode_blocked_s", t)
                    buf, idx, pts = [], [], []
            if buf:
                _put(q_in, (idx, pts, chunk_of(buf)), job, halt)
            _put(q_in, None, job, halt)
        except BaseException as e:  # noqa: BLE001 - handed to the caller thread
            job.fail(e)

    # ---- encode thread ------------------------------------------------------------------
    spec_of = {s.kind: s for s in video_specs}

    def writer_args(kind: str, index: int, start_pts: int) -> dict:
        s = spec_of[kind]
        return dict(spec=s, path=job_dir / "segments" / f"{kind}_{index:09d}"
                    f"{SEGMENT_FORMAT[s.codec][1]}", width=width, height=height,
                    time_base=time_base, rate=rate, start_pts=start_pts, yuv=kind in yuv_out,
                    threads=plan.threads)

    # Video outputs are encoded segment by segment (rvmatte.io.segments): in this thread on
    # 1-3 cores, where the model needs them; else each output on its own worker thread; on 8+
    # cores (2+ with the model on a GPU) several segments of each output at a time, on worker
    # threads, or with encode_processes in encoder processes (rvmatte.io.encoder_process;
    # threads if those cannot start). The producer runs up to `workers` segments ahead, so a
    # segment's frames may all be queued.
    outs = SegmentedOutputs(list(spec_of), lambda *a: SegmentWriter(**writer_args(*a)),
                            workers=plan.workers, threaded=plan.threaded, stop=job.stop,
                            bound=segment_frames + 1 if plan.workers > 1 else 2 * seq_chunk,
                            writer_args=writer_args if plan.processes else None,
                            frame_bytes=max(frame_bytes.values(), default=0))
    if plan.processes and not outs.processes:
        notes.append("encoder processes could not start: encoding on threads")

    def save_checkpoint(done: int, last: int, state_cpu) -> None:
        buf = io.BytesIO()
        np.savez(buf, *(state_cpu or []))
        meta = {"fingerprint": fp, "done": done, "last_pts": last,
                "range_offset": shared["range_offset"], "input": str(in_path),
                "segments": {k: [(p.name, s) for p, s in v] for k, v in segments.items()}}
        try:
            _atomic_write(job_dir / "state.npz", buf.getvalue())
            _atomic_write(job_dir / "job.json", json.dumps(meta).encode())
        except OSError as e:
            raise OutputError(f"disk full while writing the checkpoint in {job_dir}"
                              if e.errno == 28 else f"cannot write checkpoint in {job_dir}: "
                              f"{e.strerror or e}") from None

    def commit(block: bool = False) -> None:
        """Record the segments that are encoded; write the checkpoints they complete."""
        for closed, checkpoint in outs.completed(block):
            for kind, record in closed.items():
                segments[kind].append(record)
            if checkpoint is not None:
                save_checkpoint(*checkpoint)
                shared["done_written"] = checkpoint[0]

    def encode() -> None:
        clean = False
        try:
            while True:
                t = time.perf_counter()
                item = _get(q_out, job)
                t = stages.add("encode_waited_for_input_s", t)
                if item is None or job.stop.is_set():
                    return
                if item[0] in ("end", "cancel"):
                    if item[0] == "end":
                        outs.boundary()
                    else:
                        outs.abort_open()  # the unfinished segment is not kept
                    commit(block=True)  # waits for the encoders to finish
                    stages.add("encode_s", t)
                    clean = not job.stop.is_set()
                    return
                if item[0] == "checkpoint":
                    outs.boundary(item[1:])  # (done, last pts, recurrent state)
                else:
                    write_chunk(*item[1:])
                commit()
                stages.add("encode_s", t)
        except BaseException as e:  # noqa: BLE001 - handed to the caller thread
            job.fail(e)
        finally:
            outs.shutdown(abort=not clean)

    def write_chunk(idx, pts, arrays) -> None:
        for s in specs:
            frames = arrays[keys[s.kind]]
            for j, (i, p) in enumerate(zip(idx, pts)):
                if s.mode == "video":
                    outs.write(s.kind, i, p - shared["range_offset"], frames[j])
                elif s.mode == "images":
                    write_png(image_dirs[s.kind] / image_name(s, i), frames[j], bits=s.alpha_bits)
                else:
                    write_png(job_dir / f"{s.kind}{s.path.suffix.lower()}", frames[j],
                              bits=s.alpha_bits)

    def outputs_for(src: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, first: int) -> dict:
        import torch

        out = {}
        for key in keys.values():
            ch, kind = key.split(":")
            if ch == "yuv":  # converted here, on the device; 4:2:0 planes come back
                if kind == "alpha":
                    y = gray_to_yuv420(pha[:, 0])
                elif kind == "foreground":
                    y = rgb_to_yuv420(fgr)
                else:
                    y = rgb_to_yuv420(composite(fgr, pha, comp_bg.get(src, first)))
                out[key] = y.cpu().numpy()
            elif kind == "alpha":
                if alpha_bits == 16:
                    a = pha[:, 0].float().mul(65535.0).add_(0.5).clamp_(0, 65535).to(torch.int32)
                    out[key] = a.cpu().numpy().astype(np.uint16)
                else:
                    out[key] = to_uint8(pha[:, 0]).cpu().numpy()
            elif kind == "foreground":
                x = torch.cat([fgr, pha], 1) if ch == "rgba" else fgr
                out[key] = to_uint8(x, inplace=ch == "rgba").permute(0, 2, 3, 1).contiguous().cpu().numpy()
            else:
                if ch == "rgba":
                    x = torch.cat([fgr, pha], 1)
                else:
                    x = composite(fgr, pha, comp_bg.get(src, first))
                out[key] = to_uint8(x, inplace=True).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return out

    threads = [threading.Thread(target=decode, name="rvmatte-decode", daemon=True),
               threading.Thread(target=encode, name="rvmatte-encode", daemon=True)]
    for t in threads:
        t.start()
    done = resume_index
    t_run = time.perf_counter()
    cancelled = False
    try:
        while True:
            if cancel is not None and cancel.is_set():
                cancelled = True
                halt.set()
                _put(q_out, ("cancel",), job)
                break
            t = time.perf_counter()
            item = _get(q_in, job)
            t = stages.add("model_waited_for_input_s", t)
            if item is None:
                if job.stop.is_set():
                    break
                _put(q_out, ("end",), job)
                break
            idx, pts, frames = item
            if shared["range_offset"] is None:
                shared["range_offset"] = pts[0] if not rng.empty and rng.start else 0
            try:
                if fused is not None:
                    made, state = fused.matte_uint8(frames, state, ratio, outputs=fused_outputs,
                                                    background=fused_bg)
                    arrays = {key: made[fused_names[key]] for key in keys.values()}
                else:
                    src = (matter.yuv_to_tensor(frames, height, width, matrix=in_matrix,
                                                full_range=in_full) if yuv_in
                           else matter.to_tensor(frames))
                    fgr, pha, state = matter.step(src, state, ratio)
                    arrays = outputs_for(src, fgr, pha, idx[0])
            except Exception as e:
                if not _is_cuda_oom(e):
                    raise
                raise RvmatteError(
                    f"out of GPU memory at {len(idx)} frame(s) of {width}x{height} per call; "
                    "use --seq-chunk 1, a smaller --downsample, or --device cpu") from None
            t = stages.add("model_s", t)
            if not _put(q_out, ("frames", idx, pts, arrays), job):
                break
            t = stages.add("model_blocked_s", t)
            done = idx[-1] + 1
            shared["last_pts"] = pts[-1]
            if done % segment_frames == 0:
                state_cpu = _state_arrays(state)
                t = stages.add("model_s", t)
                if not _put(q_out, ("checkpoint", done, pts[-1], state_cpu), job):
                    break
                stages.add("model_blocked_s", t)
            if reporter is not None:
                el = time.perf_counter() - t_run
                fps = (done - resume_index) / el if el > 0 else 0.0
                eta = (total - done) / fps if (total and fps > 0 and total >= done) else None
                reporter(ProgressInfo(done, total, fps, eta))
    except BaseException as e:  # noqa: BLE001 - includes KeyboardInterrupt: stop the threads
        job.fail(e)
    finally:
        if job.error is not None:
            job.stop.set()
        threads[1].join()   # the encoder first: it drains what was matted (cancel)
        job.stop.set() if cancelled else None
        threads[0].join()
        if bar is not None:
            bar.close()
        if matter is None:  # the fused runner is this conversion's own: stop its threads
            fused.close()
        if (job.error is not None or cancelled) and comp_bg is not None:
            comp_bg.close()
    if cancelled:
        raise Cancelled(f"conversion of {in_path} cancelled at frame {shared['done_written']} "
                        "(run again with resume to continue)")
    if job.error is not None:
        e = job.error
        if isinstance(e, RvmatteError):
            raise e
        if isinstance(e, OSError) and e.errno in (28, 27):
            raise OutputError(f"disk full while writing outputs ({e.strerror})") from None
        raise e
    if comp_bg is not None:
        comp_bg.close()
    if done == 0:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise InputError(f"{in_path}: the selected range contains no frames")

    # ---- finalize: assemble + atomic rename ---------------------------------------------
    audio_mode = None
    audio_plan = None
    if info.audio is not None and info.kind == "video":
        off = float(shared["range_offset"] * time_base) if shared["range_offset"] else 0.0
        a_start = a_end = None
        if not rng.empty:
            if rng.unit == "s":
                a_start = (info.start_pts * time_base) + rng.start if rng.start else None
                a_end = float(info.start_pts * time_base) + rng.end if rng.end is not None else None
                a_start = float(a_start) if a_start is not None else None
            else:
                a_start = off if rng.start else None
                if rng.end is not None and shared["last_pts"] is not None:
                    a_end = float(shared["last_pts"] * time_base) + 1.0 / float(rate)
        audio_plan = AudioPlan(info.path, info.audio["index"], a_start, a_end, off)
    outputs = {}
    for s in specs:
        if s.mode == "video":
            tmp = s.path.with_name(f".{s.path.stem}.rvmatte-tmp{s.path.suffix}")
            try:
                mode = assemble(s, segments[s.kind], tmp, time_base=time_base, rate=rate,
                                audio=audio_plan if s.kind != "alpha" else None)
                if s.kind == "composite":
                    audio_mode = mode
                replace_into_place(tmp, s.path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        elif s.mode == "images":
            move_images(image_dirs[s.kind], s)
        else:
            replace_into_place(job_dir / f"{s.kind}{s.path.suffix.lower()}", s.path)
        outputs[s.kind] = str(s.path)
    shutil.rmtree(job_dir, ignore_errors=True)
    seconds = time.perf_counter() - t_start
    return ConversionResult(frames=done, seconds=seconds,
                            fps=(done - resume_index) / max(time.perf_counter() - t_run, 1e-9),
                            outputs=outputs, audio=audio_mode, resumed_from=resume_index,
                            downsample_ratio=ratio, input=str(in_path),
                            encoders={s.kind: s.encoder_name for s in specs if s.mode == "video"},
                            notes=notes,
                            encoding={"segment_frames": segment_frames, "workers": plan.workers,
                                      "threads": plan.threads, "processes": outs.processes}
                            if video_specs else {},
                            stages=stages.report())


# ---- batch ------------------------------------------------------------------------------

@dataclass
class BatchResult:
    results: dict = field(default_factory=dict)   # input path -> ConversionResult
    failed: dict = field(default_factory=dict)    # input path -> error message

    @property
    def ok(self) -> bool:
        return not self.failed


_BATCH_SUFFIX = {"composite": "", "alpha": "_alpha", "foreground": "_fgr"}


def batch_target(template, kind: str, stem: str) -> Optional[str]:
    """``out/`` -> ``out/<stem>.mp4`` (``_alpha``/``_fgr`` for side outputs);
    ``out/{stem}.webm`` -> ``out/<stem>.webm``."""
    if template is None:
        return None
    t = str(template)
    if "{stem}" in t:
        return t.replace("{stem}", stem)
    return str(Path(t) / f"{stem}{_BATCH_SUFFIX[kind]}.mp4")


def convert_folder(folder, output=None, *, alpha=None, foreground=None,
                   on_error: Optional[Callable[[Path, str], None]] = None,
                   on_done: Optional[Callable[[Path, ConversionResult], None]] = None,
                   **kwargs: Any) -> BatchResult:
    """Batch: convert every video in ``folder``; outputs are folders (created if missing) or
    templates containing ``{stem}``. A failing file is reported and skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    videos = list_videos(folder)
    if not videos:
        raise InputError(f"folder {folder} contains no videos")
    for t in (output, alpha, foreground):
        if t is not None and "{stem}" not in str(t):
            p = Path(t)
            if p.exists() and not p.is_dir():
                raise OutputError(f"batch output {p} must be a folder")
            if not p.parent.is_dir():
                raise OutputError(f"output folder {p.parent} does not exist")
            p.mkdir(exist_ok=True)
    model = kwargs.pop("model", None)
    if model is None:
        model = _make_matter(None, **{k: kwargs.pop(k) for k in list(kwargs)
                                      if k in ("variant", "weights", "refiner", "device", "dtype",
                                               "backend")})
    batch = BatchResult()
    for v in videos:
        try:
            r = convert_video(v, batch_target(output, "composite", v.stem),
                              alpha=batch_target(alpha, "alpha", v.stem),
                              foreground=batch_target(foreground, "foreground", v.stem),
                              model=model, **kwargs)
            batch.results[str(v)] = r
            if on_done:
                on_done(v, r)
        except Cancelled:
            raise
        except RvmatteError as e:
            batch.failed[str(v)] = str(e)
            if on_error:
                on_error(v, str(e))
    return batch
