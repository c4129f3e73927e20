"""Every bad-input path: one clear error (RvmatteError), input untouched, nothing that looks complete."""

import os
import subprocess

import av
import pytest

from rvm_clips import make_clip, sha256, tiny_model
from rvmatte.errors import InputError, OutputError, RvmatteError
from rvmatte.inference.convert import convert_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("bad") / "in.mp4", n=4)


def _fails(exc, match, *args, tmp_path=None, **kw):
    kw.setdefault("model", tiny_model())
    before = {p: sha256(p) for p in args if isinstance(p, os.PathLike) and os.path.isfile(p)}
    with pytest.raises(exc, match=match) as ei:
        convert_video(*args, **kw)
    assert "\n" not in str(ei.value)
    for p, h in before.items():
        assert sha256(p) == h  # the input is never modified
    if tmp_path is not None:
        inputs = {os.fspath(a) for a in args if isinstance(a, os.PathLike)}
        leftovers = [p.name for p in tmp_path.iterdir()
                     if p.suffix in (".mp4", ".mov", ".webm", ".mkv") and os.fspath(p) not in inputs]
        assert leftovers == []
    return ei.value


def test_missing_file(tmp_path):
    _fails(InputError, "not found", tmp_path / "nope.mp4", tmp_path / "o.mp4")


def test_directory_without_media(tmp_path):
    (tmp_path / "d").mkdir()
    _fails(InputError, "contains no images", tmp_path / "d", tmp_path / "o.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _fails(InputError, "empty", tmp_path / "empty.mp4", tmp_path / "o.mp4", tmp_path=tmp_path)


def test_non_video_file(tmp_path):
    (tmp_path / "notes.mp4").write_text("hello, this is not a video\n" * 20)
    _fails(InputError, "cannot read", tmp_path / "notes.mp4", tmp_path / "o.mp4", tmp_path=tmp_path)


def test_truncated_file(tmp_path, clip):
    data = clip.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    _fails(InputError, "cannot (read|decode)|no video frames", tmp_path / "trunc.mp4",
           tmp_path / "o.mp4", tmp_path=tmp_path)


def test_audio_only(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=44100)
        import numpy as np

        for k in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, k * 1024
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    _fails(InputError, "no video stream", path, tmp_path / "o.mp4")


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()  # header with a video stream, then no frames
        for p in v.encode():
            c.mux(p)
    _fails(InputError, "no video frames|cannot", path, tmp_path / "o.mp4")


def test_unsupported_pixel_format(tmp_path, clip, monkeypatch):
    calls = []

    def refuse(frame, *a, **k):
        calls.append(frame.format.name)
        raise ValueError("conversion from this pixel format is not implemented")

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", refuse)
    e = _fails(InputError, "unsupported pixel format", clip, tmp_path / "o.mp4")
    assert "yuv420p" in str(e)
    assert calls and calls[0] == "yuv420p"  # the refusal came from the decoder's frame


def test_output_equal_to_input(tmp_path, clip):
    _fails(OutputError, "is the input", clip, clip, overwrite=True)
    _fails(OutputError, "is the input", clip, None, alpha=clip, overwrite=True)


def test_existing_output_needs_overwrite(tmp_path, clip):
    (tmp_path / "o.mp4").write_bytes(b"precious")
    _fails(OutputError, "exists.*--overwrite", clip, tmp_path / "o.mp4")
    assert (tmp_path / "o.mp4").read_bytes() == b"precious"


def test_missing_and_unwritable_output_folder(tmp_path, clip):
    _fails(OutputError, "does not exist", clip, tmp_path / "no" / "such" / "o.mp4")
    (tmp_path / "file").write_text("x")
    _fails(OutputError, "is not a folder|does not exist", clip, tmp_path / "file" / "o.mp4")
    if os.geteuid() == 0:
        ro = _readonly_mount(tmp_path / "ro")
        if ro is None:
            pytest.skip("cannot mount a read-only tmpfs")
        try:
            _fails(OutputError, "not writable|cannot", clip, ro / "o.mp4")
        finally:
            subprocess.run(["umount", str(ro)], check=False)
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        _fails(OutputError, "not writable", clip, ro / "o.mp4")


def _readonly_mount(path):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                       capture_output=True)
    return path if r.returncode == 0 else None


def test_full_disk(tmp_path, clip):
    """A tiny tmpfs fills up: a one-line OutputError, no output file, input untouched."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs (needs root)")
    try:
        big = make_clip(tmp_path / "noisy.mp4", w=160, h=120, n=8, audio=False)
        _fails(OutputError, "disk full|cannot write|No space", big, mnt / "o.mov",
               alpha=mnt / "a.mov", seq_chunk=2, segment_frames=2)
        assert not (mnt / "o.mov").exists() and not (mnt / "a.mov").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("out,kw,match", [
    ("o.avi", {}, "unknown output extension"),
    ("o.xyz", {}, "unknown output extension"),
    ("o.mp4", {"codec": "divx"}, "unknown codec"),
    ("o.webm", {"codec": "h264"}, "cannot be written to .webm"),
    ("o.mp4", {"background": "transparent"}, "cannot store transparency"),
    ("o.mp4", {"background": "#12345"}, "not a colour|no such file"),
    ("o.mp4", {"background": "notacolour"}, "not a colour name"),
    ("o.mp4", {"background": "missing/bg.png"}, "no such file"),
    ("o.mp4", {"background": "blur:-3"}, "blur strength"),
    ("o.mp4", {"downsample_ratio": 0}, "downsample ratio"),
    ("o.mp4", {"downsample_ratio": "1.5"}, "downsample ratio"),
    ("o.mp4", {"start": "abc"}, "invalid position"),
    ("o.mp4", {"segment_frames": 0}, "invalid segment_frames"),
    ("o.mp4", {"segment_frames": "abc"}, "invalid segment_frames"),
    ("o.mp4", {"seq_chunk": 2.5}, "invalid seq_chunk"),
    ("o.mp4", {"start": 2, "end": 1}, "must be after"),
    ("o.mp4", {"start": 5.0}, "contains no frames"),
    ("frames/%06d.jpg", {}, "must end in .png"),
    ("o.png", {}, "input is a video"),
])
def test_bad_options(tmp_path, clip, out, kw, match):
    _fails(RvmatteError, match, clip, tmp_path / out, tmp_path=tmp_path, **kw)


def test_background_is_a_directory(tmp_path, clip):
    (tmp_path / "bgdir").mkdir()
    _fails(InputError, "is a directory", clip, tmp_path / "o.mp4", background=str(tmp_path / "bgdir"))


def test_no_output_requested(clip):
    _fails(InputError, "no output requested", clip)
