"""Live matting (``rvmatte live``): camera, file or stream in; window, virtual camera or file out.

One :class:`~rvmatte.inference.session.Matter`, built from a :class:`~rvmatte.spec.ModelSpec`,
carries the recurrent state from frame to frame, on the fused CPU path (uint8 frames in, the
composite or the encoder's 4:2:0 planes out) where the session offers it, else through
``Matter.process`` and the one compositor, :mod:`rvmatte.io.compose`. Capture, model and output
run on their own threads (:mod:`rvmatte.live.pipeline`).

Where there is a real-time constraint (a camera or stream source, a window or virtual camera
output) the ratio adapts by default: :class:`RatioController` lowers it when the *model* cannot
keep up with the source's rate (and raises it again when there is headroom); the state is
reset at such a change, because its size follows the working resolution. File to file nothing
is dropped and the ratio stays as asked. Files get ``convert``'s colour tags and keep a file
source's audio.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

from ..errors import InputError
from ..hardware import set_threads
from ..io.compose import load_background
from ..spec import UNSET, ModelSpec
from .stats import RATIO_STEP, LiveStats, RatioController, status_line

__all__ = ["run_live", "LiveStats", "RatioController", "RATIO_STEP", "status_line",
           "print_status"]


def run_live(source: str, output: Any, *, spec: Optional[ModelSpec] = None,
             background: Optional[str] = None, target_fps: Optional[float] = None,
             adapt: Optional[bool] = None, min_ratio: float = 0.1,
             max_frames: Optional[int] = None, model: Any = None, overwrite: bool = False,
             status: Optional[Callable[[str], None]] = None, downsample_ratio: Any = UNSET,
             variant: Any = UNSET, weights: Any = UNSET, device: Any = UNSET,
             dtype: Any = UNSET, stabilize: bool = False,
             refine_foreground: bool = False, select: Any = None) -> LiveStats:
    """Matte ``source`` frame by frame into ``output`` until it ends, ``max_frames`` is
    reached, the window is closed or Ctrl-C.

    ``source``: camera index (``"0"``), video file or URL. ``output``: ``"window"``,
    ``"virtualcam"``, a file path (.mp4/.mkv/.mov/.webm) or a
    :class:`~rvmatte.live.sinks.Sink`. ``spec``: the model, used for the one
    :class:`~rvmatte.inference.session.Matter` of the stream (``spec.downsample`` is the
    starting ratio; default: the :class:`~rvmatte.spec.ModelSpec` defaults, backend ``auto``);
    ``model``: an already loaded network for it. ``background`` as in convert (default green;
    ``transparent`` only into .webm). ``adapt``: lower the ratio when the model cannot keep up
    with ``target_fps`` (default: the source's rate); ``None`` (default): only where there is
    a real-time constraint (a camera or stream source, a window or virtual camera output).
    ``status``: called about once a second with a line like
    ``"24.3 fps  ratio 0.25  capture 4 ms, model 30 ms, output 9 ms"`` (frames written per
    second of wall time, and each stage's time per frame). ``downsample_ratio``, ``variant``,
    ``weights``, ``device``, ``dtype``: the older keywords, folded into ``spec``.
    ``stabilize``, ``refine_foreground``: the post stage of ``convert_video`` (temporal
    stabilisation, foreground estimation), frame by frame on the model's thread. ``select``:
    who is matted, as in ``convert_video`` (a :class:`~rvmatte.post.people.Selection` or
    ``(x, y)``); from its frame on (everyone before it: a stream cannot look ahead).
    Returns :class:`LiveStats`.
    """
    from .pipeline import LivePipeline
    from .sinks import FileSink, make_sink
    from .sources import LiveSource, parse_source

    # Cheap checks first: a bad option fails before a model (or torch) is loaded.
    spec = ModelSpec.of(spec, downsample_ratio=downsample_ratio, variant=variant,
                        weights=weights, device=device, dtype=dtype)
    if max_frames is not None and max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if not 0 < min_ratio <= 1:
        raise InputError(f"bad minimum ratio {min_ratio}: must be in (0, 1]")
    where = parse_source(source)
    sink = make_sink(output, overwrite=overwrite)
    bg = load_background(background)
    if bg is None and not sink.alpha_ok:
        raise InputError("a transparent background needs an output that keeps alpha "
                         "(a .webm file); use a colour, an image or blur here")
    if adapt is None:
        adapt = where.live or sink.realtime
    if spec.threads is not None:
        set_threads(spec.threads)

    from ..inference.session import Matter

    t0 = time.perf_counter()
    src = LiveSource(where).open()  # an unreadable source fails before the model loads
    matter = pipe = None
    try:
        # One session for the whole stream, on the spec's path (backend "auto": CUDA graphs
        # on NVIDIA GPUs, ONNX Runtime + the fused kernel on CPUs); a ratio change only
        # restarts its state.
        matter = Matter(spec, model=model)
        audio = _audio(src) if isinstance(sink, FileSink) else None
        pipe = LivePipeline(matter, src, sink, bg, ratio=spec.downsample, adapt=adapt,
                            post=_post(stabilize, refine_foreground),
                            select=_selection(select),
                            target_fps=target_fps, min_ratio=min_ratio, max_frames=max_frames,
                            status=status, realtime_in=where.live,
                            realtime_out=where.live or sink.realtime, audio=audio)
        if src.size is not None:
            pipe.prepare(*src.size)
        startup = time.perf_counter() - t0
        stats = pipe.run()  # closes the source
    except BaseException:
        if pipe is None or not pipe.started:  # else the pipeline closed it (if it could)
            src.close()
        raise
    finally:
        if matter is not None:
            matter.close()
    if stats.frames == 0 and not stats.stopped_by_user:
        raise InputError(f"no frames could be read from {source}")
    stats.startup_s = startup
    return stats


def _selection(select: Any):
    """``select`` as a Selection (None: everyone; post.people is imported only when used)."""
    if select is None:
        return None
    from ..post.people import Selection

    return Selection.of(select)


def _post(stabilize: bool, refine_foreground: bool) -> dict:
    """The quality processors ({} when both are off)."""
    if not (stabilize or refine_foreground):
        return {}
    from ..hardware import default_threads
    from ..post import PostOptions, quality_processors

    return quality_processors(PostOptions(stabilize=stabilize,
                                          refine_foreground=refine_foreground),
                              threads=default_threads())





def _audio(src: Any):
    """The audio of a file source to carry into a file (an AudioPlan), or None."""
    if src.info is None or src.info.audio is None:
        return None
    from ..inference.finalize import audio_plan
    from ..io.readers import FrameRange

    return audio_plan(src.info, FrameRange(), range_offset=0, last_pts=None)


def print_status(line: str) -> None:
    print(f"\rlive: {line}   ", end="", file=sys.stderr, flush=True)
