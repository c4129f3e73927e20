"""The plan stage of a conversion: what is read, what is written, and how -- before any frame.

A conversion starts as a :class:`ConvertRequest` (the caller's options, checked, as one
frozen value with the :class:`~rvmatte.spec.ModelSpec` inside) and is planned in two steps,
with the model's session made in between (its device decides the rest)::

    request = ConvertRequest.make(input, output, alpha=..., spec=spec)
    targets = plan_targets(request)          # probe the input, output specs, ratio; no files
    plan = plan_outputs(request, targets, device_type="cpu", uint8_path=matter.uint8_path)

:class:`OutputPlan` then holds everything the later stages need: the output specs with their
encoders, which outputs are made as 4:2:0 planes, the encode plan, the checkpoint segment
length and the frames the container declares. Nothing here imports PyTorch or writes a file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..downsample import resolve_downsample_ratio, working_size
from ..errors import InputError, OutputError
from ..io.compose import Background, ColorBackground, NAMED, parse_background
from ..io.readers import FrameRange, SourceInfo, parse_range, probe
from ..io.segments import EncodePlan, check_count, plan_encoding
from ..io.writers import (HARDWARE_ENCODERS, OutputSpec, check_alpha_format,
                          check_encoder_choice, check_output_target, check_preset, pick_encoder,
                          pix_fmt_for, plan_output)
from ..io.yuv import is_full_range, matrix_for
from ..spec import ModelSpec

DEFAULT_BACKGROUND = NAMED["green"]
# The network's coarsest features are 1/16 of its working image: below 16 px on the short
# side that map is less than one cell and the matte is noise (the runners accept sizes down
# to 1 px and fail at 0). A ratio that shrinks frames below this is refused up front.
MIN_WORKING_SIDE = 16
KINDS = ("composite", "alpha", "foreground")
# What the uint8 (fused) path makes for each "<channels>:<kind>" the outputs need
# (Matter.matte_uint8's names; "yuv" = the encoder's 4:2:0 planes).
UINT8_NAMES = {"rgb:composite": "composite", "rgba:composite": "rgba",
               "rgba:foreground": "rgba", "rgb:foreground": "foreground", "gray:alpha": "alpha",
               "yuv:composite": "composite_yuv", "yuv:alpha": "alpha_yuv"}
_PLANE_BYTES = {"yuv": 1.5, "rgb": 3, "rgba": 4, "gray": 1}  # per pixel, as encoded
# Image suffixes that keep a 16-bit alpha (PIL writes mode I;16 to these).
_ALPHA16_SUFFIXES = (".png", ".tif", ".tiff")


def _positive_int(value: Any, what: str) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"invalid {what} {value!r}: must be a positive integer")
    return value


@dataclass(frozen=True)
class ConvertRequest:
    """One conversion as asked for, checked (no file is opened here).

    input: the video / image folder / ``%06d.png`` pattern / image.
    outputs: ``((kind, path), ...)``, kinds in :data:`KINDS` order, at least one.
    range: the ``start`` / ``end`` of the frames to convert.
    encode_workers / encoder_threads: ``None`` for auto.
    segment_frames / seq_chunk: ``None`` for the planned default.
    strict: fewer frames decoded than the container declares is an error, not a warning.
    spec: the model's identity and placement (its ``downsample`` is the conversion's ratio).
    selection / plate: guidance (:mod:`rvmatte.post.people` ``Selection``; a background
        plate's path), None when not used.
    stabilize / refine_foreground: the post stage's quality options
        (:class:`rvmatte.post.PostOptions`); ``refine_foreground=None``: automatic, decided
        by :meth:`for_device` once the network's device is known.
    """

    input: Path
    outputs: tuple
    spec: ModelSpec = field(default_factory=ModelSpec)
    background: Any = None
    range: FrameRange = field(default_factory=FrameRange)
    codec: Optional[str] = None
    quality: Optional[int] = None
    preset: Optional[str] = None
    encoder: str = "auto"
    device_yuv: Optional[bool] = None
    encode_workers: Optional[int] = None
    encoder_threads: Optional[int] = None
    encode_processes: bool = False
    seq_chunk: Optional[int] = None
    segment_frames: Optional[int] = None
    alpha_bits: int = 8
    alpha_format: Optional[str] = None  # an H.264/H.265 alpha stream: yuv420 (default) | gray
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    selection: Any = None
    plate: Optional[Path] = None
    stabilize: bool = False
    refine_foreground: Optional[bool] = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise the frozen fields once, in the old check order
        set_(self, "input", Path(self.input))
        outputs = tuple((k, Path(p)) for k, p in self.outputs if p is not None)
        if not outputs:
            raise InputError("no output requested: give an output path (-o), --alpha or "
                             "--foreground")
        set_(self, "outputs", outputs)
        _positive_int(self.seq_chunk, "seq_chunk")
        _positive_int(self.segment_frames, "segment_frames")
        set_(self, "preset", check_preset(self.preset))
        set_(self, "alpha_format", check_alpha_format(self.alpha_format))
        check_encoder_choice(self.encoder)
        set_(self, "encode_workers", check_count(self.encode_workers, "number of encode workers"))
        set_(self, "encoder_threads", check_count(self.encoder_threads,
                                                  "number of encoder threads"))

    @classmethod
    def make(cls, input: Any, output: Any = None, *, alpha: Any = None, foreground: Any = None,
             start: Any = None, end: Any = None, **fields: Any) -> "ConvertRequest":
        """From ``convert_video``'s arguments: the three output paths and ``start`` / ``end``
        (seconds, ``"1:02"`` or ``"150f"``)."""
        rng = parse_range(start, end)
        outputs = (("composite", output), ("alpha", alpha), ("foreground", foreground))
        return cls(input=input, outputs=outputs, range=rng, **fields)

    def identity(self) -> dict:
        """What of this request decides the outputs' bytes (for a checkpoint's fingerprint):
        not ``resume``/``overwrite``/``strict``, nor how many encoders run."""
        return {"outputs": [(k, str(p.resolve())) for k, p in self.outputs],
                "range": [self.range.start, self.range.end, self.range.unit],
                "codec": self.codec, "quality": self.quality, "preset": self.preset,
                "encoder": self.encoder, "device_yuv": self.device_yuv,
                "alpha_bits": self.alpha_bits, "alpha_format": self.alpha_format,
                "seq_chunk": self.seq_chunk, "segment_frames": self.segment_frames, "spec": self.spec.fingerprint(),
                **self._guidance_identity(), **self.post_options.identity()}

    def for_device(self, device_type: str) -> "ConvertRequest":
        """The request with its automatic choices made for a network on ``device_type``:
        foreground estimation (``refine_foreground=None``) is on where the network runs on
        the CPU and an output shows the foreground (composite or foreground), without a
        background plate (which gives the foreground colours itself). On the CPU it wins on
        the post benchmark for +12 % CPU per 1080p frame (docs/BENCHMARKS.md); its GPU cost
        is not measured yet, so a GPU conversion keeps the network's foreground."""
        if self.refine_foreground is not None:
            return self
        on = (device_type == "cpu" and self.plate is None
              and any(kind != "alpha" for kind, _ in self.outputs))
        return dataclasses.replace(self, refine_foreground=on)

    @property
    def post_options(self):
        """The quality options as a :class:`rvmatte.post.PostOptions`."""
        from ..post import PostOptions

        return PostOptions(stabilize=bool(self.stabilize),
                           refine_foreground=bool(self.refine_foreground))

    def _guidance_identity(self) -> dict:
        """The guidance's part of :meth:`identity` (nothing when there is none, so other
        jobs' fingerprints are unchanged): the selection and the plate file's identity."""
        if self.selection is None and self.plate is None:
            return {}
        plate = None
        if self.plate is not None:
            p = Path(self.plate)
            st = p.stat() if p.is_file() else None
            plate = [str(p.resolve()), st.st_size if st else None,
                     st.st_mtime_ns if st else None]
        sel = None if self.selection is None else self.selection.identity()
        return {"guidance": {"selection": sel, "plate": plate}}


# ---- step 1: the input and the targets ------------------------------------------------------

@dataclass(frozen=True)
class Targets:
    """The probed input and the outputs to write (encoders not chosen yet).

    background: what the composite is laid over (None: no composite, or a transparent one).
    parsed_background: what ``request.background`` parsed to (closed by the caller).
    ratio: the downsample ratio for this input's size.
    """

    info: SourceInfo
    specs: tuple
    background: Optional[Background]
    parsed_background: Any
    ratio: float


def plan_targets(request: ConvertRequest) -> Targets:
    """Probe the input, plan each output, check that they can be written and the ratio.
    Raises :class:`~rvmatte.errors.InputError` / :class:`~rvmatte.errors.OutputError`."""
    info = probe(request.input)
    bg = parse_background(request.background)
    specs = tuple(_output_spec(request, kind, path, bg, still=info.kind == "image")
                  for kind, path in request.outputs)
    paths = [s.path.resolve() for s in specs]
    if len(set(paths)) != len(paths):
        raise OutputError("two outputs have the same path")
    inputs = [request.input] + ([Path(str(request.background))]
                                if isinstance(bg, Background)
                                and Path(str(request.background)).exists() else [])
    for s in specs:
        check_output_target(s, overwrite=request.overwrite, inputs=inputs)
    _check_alpha_bits(request.alpha_bits, specs)
    ratio = resolve_downsample_ratio(request.spec.downsample, info.height, info.width)
    check_working_size(ratio, info.height, info.width)
    composite_bg = None
    if any(s.kind == "composite" and not s.rgba for s in specs):
        composite_bg = bg if isinstance(bg, Background) else ColorBackground(DEFAULT_BACKGROUND)
    return Targets(info, specs, composite_bg, bg, ratio)


def _output_spec(request: ConvertRequest, kind: str, path: Path, bg: Any, *,
                 still: bool) -> OutputSpec:
    transparent = None
    if kind == "composite":
        transparent = True if bg == "transparent" else (None if bg is None else False)
    kw = dict(transparent=transparent, quality=request.quality, alpha_bits=request.alpha_bits,
              still=still, alpha_format=request.alpha_format)
    try:
        spec = plan_output(kind, path, codec=request.codec, **kw)
    except OutputError:
        if kind == "composite" or request.codec is None:
            raise
        spec = plan_output(kind, path, codec=None, **kw)  # --codec is the composite's
    return dataclasses.replace(spec, preset=request.preset)


def _check_alpha_bits(bits: int, specs) -> None:
    """16-bit alpha is written to PNG (and TIFF) only: every video codec here stores the
    alpha output as 8-bit planes."""
    if bits != 16:
        return
    for s in specs:
        if s.kind == "alpha" and (s.mode == "video" or (
                s.mode == "image" and s.path.suffix.lower() not in _ALPHA16_SUFFIXES)):
            raise InputError(f"--alpha-bits 16 needs PNG alpha output (a folder, a %06d.png "
                             f"pattern or a .png image); {s.path} would store 8-bit alpha")


def check_working_size(ratio: float, height: int, width: int) -> None:
    """Refuse a ratio that makes the network's working image smaller than
    :data:`MIN_WORKING_SIDE` on its short side (a ratio of 1 is always allowed: frames are
    used as they are)."""
    if ratio >= 1:
        return
    h, w = working_size(height, width, ratio)
    if min(h, w) >= MIN_WORKING_SIDE:
        return
    short = min(height, width)
    if short <= MIN_WORKING_SIDE:
        hint = "use 1 (no downsampling) for frames this small"
    else:
        least = -(-MIN_WORKING_SIDE * 1000 // short) / 1000  # rounded up to 3 decimals
        hint = f"use at least {least:g}, or 'auto'"
    raise InputError(f"downsample ratio {ratio:g} makes the network's working image {w}x{h} "
                     f"from {width}x{height} frames, below {MIN_WORKING_SIDE} px on the short "
                     f"side: {hint}")


# ---- step 2: the plan, once the model's device is known -------------------------------------

@dataclass(frozen=True)
class OutputPlan:
    """How one conversion runs (everything the pipeline and finalisation need).

    specs: the outputs, encoders chosen. background: the composite's (None: none needed).
    keys: output kind -> ``"<channels>:<kind>"`` the model stage makes for it (channels
        ``rgb``/``rgba``/``gray``, or ``yuv`` for 4:2:0 planes as the encoder takes them).
    yuv_in: frames are decoded to 4:2:0 planes and converted on the model's device.
    uint8: the model stage uses ``Matter.matte_uint8`` (uint8 in, uint8 out; the fused CPU
        path) with ``uint8_outputs`` over ``uint8_background`` (r, g, b in [0, 1]).
    frame_bytes: output kind -> bytes of one encoded frame (video outputs).
    expected_frames: frames in the range as the container declares (None: unknown).
    """

    info: SourceInfo
    range: FrameRange
    specs: tuple
    background: Optional[Background]
    ratio: float
    seq_chunk: int
    segment_frames: int
    keys: dict
    yuv_in: bool
    uint8: bool
    uint8_outputs: tuple
    uint8_background: tuple
    encode: EncodePlan
    frame_bytes: dict
    expected_frames: Optional[int]
    alpha_bits: int = 8
    notes: tuple = ()

    @property
    def video_specs(self) -> list:
        return [s for s in self.specs if s.mode == "video"]

    @property
    def yuv_matrix(self) -> tuple:
        """``(matrix, full_range)`` of the decoded 4:2:0 frames."""
        return matrix_for(self.info.colorspace), is_full_range(self.info.color_range)

    def identity(self) -> dict:
        """What of this plan decides the outputs' bytes beyond the request (it depends on
        the machine too: the encoders, 4:2:0 on the device, the segment length)."""
        return {"ratio": self.ratio, "seq_chunk": self.seq_chunk,
                "segment_frames": self.segment_frames, "yuv_in": self.yuv_in,
                "uint8": self.uint8,
                "background": self.background.name if self.background is not None else None,
                # the preset each stream is encoded with (an H.264 alpha stream is encoded
                # faster than --preset): segments of two settings must never be joined
                "outputs": [(s.kind, s.mode, s.codec, s.rgba, s.alpha_bits, s.encoder,
                             s.encode_preset, s.alpha_format,
                             self.keys[s.kind]) for s in self.specs]}


def plan_outputs(request: ConvertRequest, targets: Targets, *, device_type: str,
                 uint8_path: Callable[[float], bool]) -> OutputPlan:
    """The plan for a model on ``device_type`` (``"cpu"``/``"cuda"``/``"mps"``);
    ``uint8_path(ratio)``: whether its backend takes uint8 frames (``Matter.uint8_path``),
    asked only when the outputs allow that path."""
    info, ratio = targets.info, targets.ratio
    gpu = device_type == "cuda"
    specs, notes = _choose_encoders(targets.specs, request.encoder, gpu=gpu)
    use_yuv = gpu if request.device_yuv is None else bool(request.device_yuv)
    yuv_in = use_yuv and info.yuv420_ok
    uint8 = (_uint8_able(specs, targets.background, request.alpha_bits) and not yuv_in
             and uint8_path(ratio))
    yuv_out = _yuv_outputs(specs, info, uint8=uint8, use_yuv=use_yuv,
                           device_yuv=request.device_yuv)
    keys = {s.kind: ("yuv" if s.kind in yuv_out else s.channels) + ":" + s.kind for s in specs}
    frame_bytes = {s.kind: int(_PLANE_BYTES[keys[s.kind].split(":")[0]] * info.width
                               * info.height) for s in specs if s.mode == "video"}
    seq_chunk = request.seq_chunk or default_seq_chunk(device_type, info.height, info.width)
    encode = plan_encoding(len(frame_bytes), rate=float(info.rate),
                           workers=request.encode_workers, threads=request.encoder_threads,
                           gpu=gpu, segment_frames=request.segment_frames,
                           processes=bool(request.encode_processes),
                           hardware=any(s.encoder_name in HARDWARE_ENCODERS.values()
                                        for s in specs if s.mode == "video"),
                           frame_bytes=sum(frame_bytes.values()))
    bg = targets.background
    return OutputPlan(
        info=info, range=request.range, specs=specs, background=bg, ratio=ratio,
        seq_chunk=seq_chunk, segment_frames=segment_length(request.segment_frames, seq_chunk,
                                                           encode, float(info.rate)),
        keys=keys, yuv_in=yuv_in, uint8=uint8,
        uint8_outputs=tuple(sorted({UINT8_NAMES[k] for k in keys.values()})) if uint8 else (),
        uint8_background=(tuple(c / 255.0 for c in bg.rgb) if isinstance(bg, ColorBackground)
                          else (0.0, 0.0, 0.0)),
        encode=encode, frame_bytes=frame_bytes,
        expected_frames=expected_frames(info, request.range), alpha_bits=request.alpha_bits,
        notes=tuple(notes))


def _choose_encoders(specs, choice: str, *, gpu: bool) -> tuple[tuple, list]:
    """The specs with each video output's encoder; notes on why hardware encoding was not
    used (once each)."""
    out, notes = [], []
    for s in specs:
        if s.mode == "video":
            enc, note = pick_encoder(s.codec, choice, gpu=gpu)
            s = dataclasses.replace(s, encoder=enc)
            if note and note not in notes:
                notes.append(note)
        out.append(s)
    return tuple(out), notes


def _uint8_able(specs, background: Optional[Background], alpha_bits: int) -> bool:
    """The uint8 path can make these outputs: each one's form is one it writes, 8-bit alpha,
    over a colour or no background."""
    return (all(f"{s.channels}:{s.kind}" in UINT8_NAMES for s in specs)
            and (alpha_bits == 8 or all(s.kind != "alpha" for s in specs))
            and (background is None or isinstance(background, ColorBackground)))


def _yuv_outputs(specs, info: SourceInfo, *, uint8: bool, use_yuv: bool,
                 device_yuv: Optional[bool]) -> set:
    """The outputs the model stage makes as 4:2:0 planes: opaque video outputs the encoder
    takes as yuv420p (even sizes); on the uint8 path the composite and alpha unless
    ``device_yuv`` is False, else all of them when colours are converted on the device."""
    even = info.width % 2 == 0 and info.height % 2 == 0
    able = {s.kind for s in specs if s.mode == "video" and not s.rgba and even
            and pix_fmt_for(s, info.width, info.height) == "yuv420p"}
    if uint8:
        return set() if device_yuv is False else {k for k in able if k in ("composite", "alpha")}
    return able if use_yuv else set()


def default_seq_chunk(device_type: str, height: int = 1080, width: int = 1920) -> int:
    """Frames per model call. GPUs gain from batching frames: 12 per call at 1080p, fewer for
    larger frames so that a chunk's memory stays that of 12 1080p frames (about 2.3 GB with
    CUDA graphs in fp16; 4K gets 3). On the CPU one frame per call lets decode, model and
    encode interleave best: 90 frames of 1080p (composite + alpha, ratio 0.25) took 14.3 s
    with 1 frame per call against 16.8 s with 4 (docs/SPEED.md)."""
    if device_type not in ("cuda", "mps"):
        return 1
    return max(1, min(12, round(12 * 1920 * 1080 / max(1, height * width))))


def segment_length(requested: Optional[int], seq_chunk: int, encode: EncodePlan,
                   rate: float) -> int:
    """Frames per checkpoint segment: a multiple of ``seq_chunk`` (a segment ends where a
    model call ends), ``requested`` rounded up, else about the encode plan's segment
    seconds."""
    if requested is None:
        return seq_chunk * max(1, int(round(encode.segment_seconds * rate / seq_chunk)))
    return max(1, -(-int(requested) // seq_chunk)) * seq_chunk


def expected_frames(info: SourceInfo, rng: FrameRange) -> Optional[int]:
    """Frames in ``rng`` as the container declares them (None when it does not say)."""
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
