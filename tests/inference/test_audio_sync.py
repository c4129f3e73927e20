"""Audio stays with its picture: a click at a known moment of the input (the moment the one
marker frame is shown) lands, in the output, within one audio frame of the output frame that
shows the marker -- after a cut by time and by frame, after a cancel and a resume, and when
the video is encoded in segments, one encoder or several."""

import threading

import pytest

from rvm_clips import audio_frame_seconds, click_time, make_click_clip, marker_time, standin_model
from rvmatte.errors import Cancelled
from rvmatte.inference.convert import convert_video

RATE, CLICK_FRAME = 25, 12  # the click at 0.48 s, frame 12 of 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_click_clip(tmp_path_factory.mktemp("click") / "click.mp4", n=20, rate=RATE,
                           click_frame=CLICK_FRAME)


@pytest.fixture(scope="module")
def model():
    return standin_model()  # alpha 1 on the marker frame: the composite shows it


def assert_in_sync(path, marker_at: float) -> None:
    """The marker frame is shown at ``marker_at`` s and the click plays with it (within one
    audio frame)."""
    shown, heard = marker_time(path), click_time(path)
    assert shown == pytest.approx(marker_at, abs=1e-6)
    tol = audio_frame_seconds(path)
    assert abs(heard - shown) <= tol, (
        f"click at {heard:.4f} s, marker frame at {shown:.4f} s: off by "
        f"{(heard - shown) * 1000:.1f} ms (one audio frame is {tol * 1000:.1f} ms)")


def test_the_clip_itself_is_in_sync(clip):
    assert_in_sync(clip, CLICK_FRAME / RATE)


@pytest.mark.parametrize("start,end,first", [
    (0.16, 0.72, 4),        # by time
    ("5f", "18f", 5),       # by frame
    (0.2, None, 5),         # only a start
    (None, "15f", 0),       # only an end: nothing to shift
])
def test_click_stays_with_its_frame_after_a_cut(tmp_path, clip, model, start, end, first):
    out = tmp_path / "cut.mp4"
    r = convert_video(clip, out, start=start, end=end, model=model, seq_chunk=2,
                      segment_frames=4)
    assert r.audio == "copy"
    assert_in_sync(out, (CLICK_FRAME - first) / RATE)


def test_click_stays_with_its_frame_after_cancel_and_resume(tmp_path, clip, model):
    ev = threading.Event()
    out = tmp_path / "o.mp4"
    kw = dict(start="2f", model=model, seq_chunk=2, segment_frames=4)
    with pytest.raises(Cancelled):
        convert_video(clip, out, progress=lambda p: p.done >= 6 and ev.set(), cancel=ev, **kw)
    r = convert_video(clip, out, resume=True, **kw)
    assert r.resumed_from == 4 and r.frames == 18
    assert_in_sync(out, (CLICK_FRAME - 2) / RATE)


@pytest.mark.parametrize("workers", [1, 2])
def test_click_stays_with_its_frame_in_segmented_encodes(tmp_path, clip, model, workers):
    """Segments of 3 frames (the marker in the middle of one), one encoder or two at a time."""
    out = tmp_path / "seg.mp4"
    convert_video(clip, out, start="1f", model=model, seq_chunk=1, segment_frames=3,
                  encode_workers=workers)
    assert_in_sync(out, (CLICK_FRAME - 1) / RATE)
