"""``convert_video``: matte a video (or image sequence / image) into any combination of outputs.

A conversion is five small stages, each in its own module and testable alone::

    request   ConvertRequest: the options, checked; the ModelSpec inside      (plan.py)
    plan      probe the input, output specs, ratio; then encoders, 4:2:0 and
              encode plans once the model's device is known                    (plan.py)
    resume    the checkpoint folder, fingerprinted from request + plan + input (checkpoint.py)
    run       decode / model / encode threads over bounded queues              (pipeline.py)
    finish    frames-declared check, audio, segments assembled, atomic rename  (finalize.py)

The network runs through a :class:`~rvmatte.inference.session.Matter` only. On the CPU, a
conversion that the fused path can make (bundled weights, float32, a ratio below 1, 8-bit
outputs over a colour) runs without importing PyTorch: ``Matter`` builds that path torch-free
and takes and returns uint8 frames (``Matter.matte_uint8``).
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Cancelled, InputError, OutputError, RvmatteError
from ..io.compose import Background
from ..io.readers import list_videos
from ..spec import UNSET, ModelSpec
from .checkpoint import CHECKPOINT_VERSION, CheckpointDir, fingerprint, job_dir_for
from .finalize import ConversionResult, assemble_outputs, audio_plan, check_frames
from .pipeline import Pipeline, ProgressInfo, RunResult
from .plan import DEFAULT_BACKGROUND, ConvertRequest, OutputPlan, plan_outputs, plan_targets
from .session import Matter

__all__ = ["convert_video", "convert_folder", "batch_target", "ConversionResult",
           "BatchResult", "ProgressInfo", "CHECKPOINT_VERSION", "DEFAULT_BACKGROUND"]

MODEL_FIELDS = ("variant", "weights", "refiner", "device", "dtype", "backend",
                "downsample_ratio")


def convert_video(input, output=None, *, alpha=None, foreground=None, background=None,
                  spec: Optional[ModelSpec] = None, model=None, variant=UNSET, weights=UNSET,
                  refiner=UNSET, device=UNSET, dtype=UNSET, backend=UNSET,
                  downsample_ratio=UNSET, seq_chunk=None, start=None, end=None, codec=None,
                  quality=None, overwrite=False, resume=False, progress=None, cancel=None,
                  alpha_bits: int = 8, segment_frames: Optional[int] = None,
                  preset: Optional[str] = None, encoder: str = "auto",
                  device_yuv: Optional[bool] = None, encode_workers="auto",
                  encoder_threads=None, encode_processes: bool = False,
                  strict: bool = False, select: Any = None,
                  background_plate: Any = None, stabilize: bool = False,
                  refine_foreground: Optional[bool] = None,
                  alpha_format: Optional[str] = None) -> ConversionResult:
    """Matte ``input`` into ``output`` (composite), ``alpha`` and/or ``foreground``.

    input: a video file, an image folder, a ``%06d.png`` pattern or a single image.
    output / alpha / foreground: the extension picks the format (``.mp4``/``.mkv`` H.264,
        ``.mov`` ProRes 4444, ``.webm`` VP9, a folder or ``%06d.png`` pattern for PNG).
    background: colour (name or ``#rrggbb``), image, video, ``blur[:SIGMA]`` or
        ``transparent``. Default: transparent where the format stores alpha, else green.
    spec: the model (:class:`~rvmatte.spec.ModelSpec`); ``variant`` .. ``downsample_ratio``
        replace its fields (``downsample_ratio``: ``"auto"``, longest side at most 512 px, or
        a ratio in (0, 1] leaving at least 16 px on the short side).
    model: a loaded network, or a :class:`~rvmatte.inference.session.Matter` (its own
        network and placement; its spec is the default one).
    start / end: seconds (``12.5``, ``"1:02"``) or frames (``"150f"``).
    codec / quality / preset: ``h264``/``h265``/``vp9``/``prores``/``ffv1``/``qtrle``/``png``;
        CRF-like; x264/x265 speed, ``ultrafast`` .. ``veryslow`` (default ``veryfast``).
    resume: continue a killed job from ``<output>.rvmatte-resume/``. A failed job keeps that
        folder only when it can be resumed from it.
    progress: None/False, True (tqdm on stderr) or a callable receiving :class:`ProgressInfo`.
    cancel: a ``threading.Event``; when set the job stops with
        :class:`~rvmatte.errors.Cancelled` and keeps its checkpoint.
    alpha_bits: 8, or 16 for PNG alpha (video codecs store 8-bit alpha: refused).
    alpha_format: an H.264/H.265 alpha video's stream: ``"yuv420"`` (default; plays
        everywhere) or ``"gray"`` (one plane, 4:0:0: smaller and faster to encode, but some
        players and editors do not open it); other codecs and PNG keep their form.
    segment_frames: frames per checkpoint segment (default about 10 s of video, 2 s when
        several segments are encoded at a time).
    encoder: ``"auto"`` (NVENC for H.264/H.265 when the model runs on a CUDA GPU that can
        encode), ``"software"`` or ``"hardware"``.
    device_yuv: colour conversion (4:2:0 <-> RGB) on the model's device. Default: on for
        CUDA; on the CPU's fused path the composite and alpha come out as 4:2:0 (False: not).
    encode_workers / encoder_threads / encode_processes: segments of each video output
        encoded at a time (``"auto"``: :func:`rvmatte.io.segments.plan_encoding`), threads per
        encoder, and encoders in child processes instead of threads.
    strict: fewer frames decoded than the container declares (a truncated file) is an
        :class:`~rvmatte.errors.InputError`; without it, a line in ``result.warnings``.
    select: who is matted: a :class:`rvmatte.post.people.Selection` (points, box, mask or
        the N largest people, on its ``frame``), or ``(x, y)``: the person at that pixel of
        the first frame. The others get alpha 0; the chosen ones are tracked.
    background_plate: an image (or a short video, averaged) of the empty scene from the same
        camera: foreground colours from ``I = aF + (1-a)B``, regions matching the plate
        (people in posters, screens) removed, small camera motion followed
        (:mod:`rvmatte.post.plate`).
    stabilize: temporal stabilisation of alpha and foreground where the image is still
        (:mod:`rvmatte.post.stabilize`; streaming, exact on resume).
    refine_foreground: the foreground colours estimated from the frame and the alpha
        (:mod:`rvmatte.post.foreground`) and mixed with the network's, for every output.
        ``None`` (default): on where the network runs on the CPU and an output shows the
        foreground, without a background plate
        (:meth:`~rvmatte.inference.plan.ConvertRequest.for_device`); ``False``: the
        network's foreground as it is.
    """
    t_start = time.perf_counter()
    _tune_malloc()
    spec = _model_spec(spec, model, variant=variant, weights=weights, refiner=refiner,
                       device=device, dtype=dtype, backend=backend,
                       downsample_ratio=downsample_ratio)
    request = ConvertRequest.make(
        input, output, alpha=alpha, foreground=foreground, start=start, end=end, spec=spec,
        background=background, codec=codec, quality=quality, preset=preset, encoder=encoder,
        device_yuv=device_yuv, encode_workers=encode_workers, encoder_threads=encoder_threads,
        encode_processes=encode_processes, seq_chunk=seq_chunk, segment_frames=segment_frames,
        alpha_bits=alpha_bits, alpha_format=alpha_format, resume=resume, overwrite=overwrite, strict=strict,
        selection=_selection(select), plate=background_plate, stabilize=stabilize,
        refine_foreground=refine_foreground)
    targets = plan_targets(request)
    matter = None
    try:
        matter = model if isinstance(model, Matter) else Matter(spec, model=model)
        request = request.for_device(matter.device_type)
        plan = plan_outputs(request, targets, device_type=matter.device_type,
                            uint8_path=matter.uint8_path)
        if matter is not model and one_model_thread(spec, plan.uint8):
            matter.runner_threads = 1
        return _convert(request, plan, matter, model_label=_model_label(model),
                        progress=progress, cancel=cancel, t_start=t_start)
    finally:
        if matter is not None and matter is not model:
            matter.close()  # this conversion's own session: stop its runners' threads
        if isinstance(targets.parsed_background, Background):
            targets.parsed_background.close()


def one_model_thread(spec: ModelSpec, uint8: bool) -> bool:
    """Whether a conversion's own session gives the network one CPU thread: on the uint8 path
    (the CPU's fused / int8 backends) of a machine with at most 2 cores, where the threads
    were not chosen. There the decode, finish and encode threads keep the other core busy, and
    a second intra-op thread for the network costs more than it brings (1080p / 0.25, 300
    frames, 2-core EPYC: 21.8 s against 25.0 s, 40 s of CPU against 47; docs/SPEED.md)."""
    from ..hardware import physical_cores, threads_chosen

    return uint8 and spec.threads is None and not threads_chosen() and physical_cores() <= 2


def _selection(select: Any):
    """``convert_video``'s ``select`` as a Selection (None: everyone)."""
    if select is None:
        return None
    from ..post.people import Selection

    return Selection.of(select)


def _post_processors(request: ConvertRequest, plan: OutputPlan, matter: Matter,
                     resumed: Any) -> dict:
    """The post stage's processors, in order: the plate (clean-up first, so a person on a
    poster is never a person to select), then the person selection. Bad guidance input is
    refused here, before any output is written."""
    post: dict = {}
    w, h = plan.info.width, plan.info.height
    if request.plate is not None:
        from ..post.plate import PlateFilter

        post["plate"] = PlateFilter(request.plate, w, h)
    if request.selection is not None:
        from ..post.people import PeopleFilter

        sel, resolved = request.selection, None
        if sel.frame > 0:  # tracked from frame 0: find who is at the pixel on frame N first
            resolved = () if resumed is not None else _resolve_later_selection(
                request, plan, matter, post.get("plate"))
        post["people"] = PeopleFilter(sel, w, h, resolved=resolved)
    return {**post, **_quality_processors(request, plan)}


def _quality_processors(request: ConvertRequest, plan: OutputPlan) -> dict:
    """Foreground estimation and stabilisation (after the guidance), on either path."""
    if not request.post_options.enabled:
        return {}
    from ..hardware import default_threads
    from ..post import quality_processors

    return quality_processors(request.post_options, threads=default_threads())


def _resolve_later_selection(request: ConvertRequest, plan: OutputPlan, matter: Matter,
                             plate: Any) -> tuple:
    """A first pass over frames 0..N (network, plate clean-up, tracking of everyone) that
    finds the track ids of the people selected on frame N (costs N+1 frames of matting)."""
    from ..io.readers import Source
    from ..post.people import resolve_selection

    sel, state = request.selection, None
    if plate is not None:
        plate.load_state([])

    def alphas():
        nonlocal state
        for fr in Source(plan.info, plan.range).frames():
            if fr.index > sel.frame:
                return
            src = matter.to_tensor(fr.image[None])
            fgr, pha, state = matter.step(src, state, plan.ratio)
            if plate is not None:
                fgr, pha = plate.tensors(src, fgr, pha)
            yield fr.image, pha[0, 0].float().cpu().numpy()

    ids = resolve_selection(sel, alphas(), plan.info.width, plan.info.height)
    if plate is not None:
        plate.load_state([])  # the real pass starts from the first frame again
        plate.warnings.clear()
    return tuple(ids)


def _model_spec(spec: Optional[ModelSpec], model: Any, **fields: Any) -> ModelSpec:
    """The conversion's model spec: ``spec`` (or a given Matter's) with ``fields`` replaced.
    A given Matter runs its own network and placement: only the ratio is the conversion's."""
    if isinstance(model, Matter):
        asked = ModelSpec.of(spec if spec is not None else model.spec, **fields)
        return model.spec.replace(downsample=asked.downsample)
    return ModelSpec.of(spec, **fields)


def _model_label(model: Any) -> Optional[str]:
    """A given network's part of the checkpoint fingerprint (the spec cannot name its
    weights): its class, and a loaded network's dtype."""
    if model is None:
        return None
    if isinstance(model, Matter):
        return "model:Matter"  # its spec is the request's
    return f"model:{type(model).__name__}:{next(model.parameters()).dtype}"


def _convert(request: ConvertRequest, plan: OutputPlan, matter: Matter, *,
             model_label: Optional[str], progress: Any, cancel: Any,
             t_start: float) -> ConversionResult:
    """Checkpoint, pipeline, finalisation. A failure leaves the checkpoint folder only when
    it holds a checkpoint to resume from (a strict frame-count failure leaves none)."""
    ckpts = CheckpointDir(job_dir_for(plan.specs[0].path),
                          fingerprint(request, plan, model=model_label),
                          input=str(request.input))
    resumed, note = ckpts.open(resume=request.resume)
    try:
        post = _post_processors(request, plan, matter, resumed)
        run = Pipeline(plan, matter, ckpts, resumed, progress=progress, cancel=cancel,
                       post=post).run()
    except BaseException:
        ckpts.discard_unless_saved()
        raise
    try:
        warnings = check_frames(plan, run.done, first_pts=run.range_offset,
                                last_pts=run.last_pts, strict=request.strict) + run.warnings
    except InputError:
        ckpts.discard()
        raise
    try:
        outputs, audio = assemble_outputs(
            plan.specs, run.segments, ckpts.path, info=plan.info,
            audio=audio_plan(plan.info, plan.range, range_offset=run.range_offset,
                             last_pts=run.last_pts))
    except BaseException:
        ckpts.discard_unless_saved()
        raise
    ckpts.discard()
    notes = ([note] if note else []) + list(plan.notes) + run.notes
    return _result(request, plan, run, outputs=outputs, audio=audio, notes=notes,
                   warnings=warnings, t_start=t_start)


def _result(request: ConvertRequest, plan: OutputPlan, run: RunResult, *, outputs: dict,
            audio: Optional[str], notes: list, warnings: list,
            t_start: float) -> ConversionResult:
    now = time.perf_counter()
    video = plan.video_specs
    encoding = ({"segment_frames": plan.segment_frames, "workers": plan.encode.workers,
                 "threads": plan.encode.threads, "processes": run.processes} if video else {})
    return ConversionResult(
        frames=run.done, seconds=now - t_start,
        fps=(run.done - run.resumed_from) / max(now - run.started, 1e-9), outputs=outputs,
        audio=audio, resumed_from=run.resumed_from, downsample_ratio=plan.ratio,
        input=str(request.input), encoders={s.kind: s.encoder_name for s in video},
        notes=notes, encoding=encoding, stages=run.stages,
        frames_declared=plan.expected_frames, warnings=warnings)


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


def _batch_folders(output, alpha, foreground) -> None:
    """Output folders of a batch (templates with ``{stem}`` excepted): created if missing."""
    for t in (output, alpha, foreground):
        if t is not None and "{stem}" not in str(t):
            p = Path(t)
            if p.exists() and not p.is_dir():
                raise OutputError(f"batch output {p} must be a folder")
            if not p.parent.is_dir():
                raise OutputError(f"output folder {p.parent} does not exist")
            p.mkdir(exist_ok=True)


def convert_folder(folder, output=None, *, alpha=None, foreground=None,
                   on_error: Optional[Callable[[Path, str], None]] = None,
                   on_done: Optional[Callable[[Path, ConversionResult], None]] = None,
                   **kwargs: Any) -> BatchResult:
    """Batch: convert every video in ``folder`` with one model; outputs are folders
    (created if missing) or templates containing ``{stem}``. ``kwargs``: those of
    :func:`convert_video`. A failing file is reported and skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    videos = list_videos(folder)
    if not videos:
        raise InputError(f"folder {folder} contains no videos")
    _batch_folders(output, alpha, foreground)
    model = kwargs.pop("model", None)
    own = model is None
    if own:  # one session for every video (the ratio may still differ per size)
        spec = ModelSpec.of(kwargs.pop("spec", None),
                            **{k: kwargs.pop(k) for k in MODEL_FIELDS if k in kwargs})
        model, kwargs["spec"] = Matter(spec), spec
    batch = BatchResult()
    try:
        for v in videos:
            try:
                r = convert_video(v, batch_target(output, "composite", v.stem),
                                  alpha=batch_target(alpha, "alpha", v.stem),
                                  foreground=batch_target(foreground, "foreground", v.stem),
                                  model=model, **kwargs)
            except Cancelled:
                raise
            except RvmatteError as e:
                batch.failed[str(v)] = str(e)
                if on_error:
                    on_error(v, str(e))
                continue
            batch.results[str(v)] = r
            if on_done:
                on_done(v, r)
    finally:
        if own:
            model.close()
    return batch
