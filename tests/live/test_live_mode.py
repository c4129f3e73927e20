"""``rvmatte live`` with a video file as the source and a file (or no display) as output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from rvmatte.errors import InputError, OutputError, WeightsError
from rvmatte.live import RatioController, run_live
from rvmatte.spec import ModelSpec


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_file_to_file_keeps_every_frame(clip, model, tmp_path):
    out = tmp_path / "live.mp4"
    lines: list[str] = []
    stats = run_live(str(clip), str(out), background="#ff0000", downsample_ratio=0.5,
                     model=model, adapt=False, status=lines.append)
    assert stats.frames == 12 and stats.fps > 0 and stats.ratio == 0.5
    assert stats.ratio_changes == [] and stats.state_resets == 1  # one state all along
    frames = frames_of(out)
    assert len(frames) == 12 and frames[0].shape == (64, 96, 3)
    assert not list(tmp_path.glob(".*partial*"))  # temp file renamed into place


@pytest.mark.parametrize("path", ["fused", "tensor"])
def test_post_stage_in_live(tmp_path, path):
    """--stabilize / --foreground-estimation work live too, on the fused CPU path and the
    tensor path: every frame written, and the frames differ from the plain run's."""
    # the bundled model on the sample clip (a person to matte)
    src = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"
    kw = dict(spec=ModelSpec(backend="auto" if path == "fused" else "torch", device="cpu"),
              downsample_ratio=0.25)
    outs = {}
    for post in (False, True):
        out = tmp_path / f"live_{post}.mp4"
        stats = run_live(str(src), str(out), background="#ff0000", adapt=False, max_frames=12,
                         stabilize=post, refine_foreground=post, **kw)
        assert stats.frames == 12 and stats.fused == (path == "fused")
        outs[post] = np.stack(frames_of(out)).astype(int)
    assert outs[True].shape == outs[False].shape
    assert (np.abs(outs[True] - outs[False]) > 4).sum() > 100


def test_person_selection_in_live(tmp_path):
    """--select in live mode: the speaker selected keeps the matte; a box on the empty wall
    fails with the one-line reason; a point outside the frame too."""
    from rvmatte.post.people import Selection

    src = Path(__file__).resolve().parents[2] / "examples" / "sample_talking_head_640x360.mp4"
    kw = dict(spec=ModelSpec(device="cpu"), downsample_ratio=0.25, adapt=False, max_frames=6)
    outs = {}
    for name, sel in (("all", None), ("speaker", (320, 220))):
        out = tmp_path / f"{name}.mp4"
        run_live(str(src), str(out), background="#00ff00", select=sel, **kw)
        outs[name] = np.stack(frames_of(out)).astype(int)
    # one person in the clip: keeping the speaker keeps the picture (green elsewhere)
    assert outs["all"].shape == outs["speaker"].shape == (6, 360, 640, 3)
    assert np.abs(outs["all"] - outs["speaker"]).mean() < 1.0
    assert (outs["speaker"][..., 1] > 200).mean() > 0.3  # the green background is there
    with pytest.raises(InputError, match="covers no person"):
        run_live(str(src), str(tmp_path / "box.mp4"), select=Selection(box=(0, 0, 100, 100)),
                 **kw)
    with pytest.raises(InputError, match="5000"):
        run_live(str(src), str(tmp_path / "far.mp4"), select=(5000, 10), **kw)
    assert not (tmp_path / "box.mp4").exists() and not (tmp_path / "far.mp4").exists()
    r = run_cli("--source", str(src), "--output", "cli.mp4", "--select", "320,220",
                "--downsample", "0.25", "--max-frames", "3", "-q", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("--source", str(src), "--output", "bad.mp4", "--select", "5000,1",
                "--downsample", "0.25", "--max-frames", "3", "-q", tmp_path=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "5000" in lines[0], r.stderr


def test_degrades_ratio_when_too_slow(clip, model, tmp_path):
    out = tmp_path / "fast.webm"
    # nobody mattes 100000 fps: the ratio must step down (adapt asked for: file to file does
    # not adapt by default), and every frame is still written
    stats = run_live(str(clip), str(out), background="transparent", downsample_ratio=1.0,
                     target_fps=100000, min_ratio=0.25, model=model, adapt=True)
    assert stats.ratio_changes and stats.ratio_changes[0] == (1.0, 0.75)
    assert stats.ratio < 1.0
    assert stats.state_resets == 1 + len(stats.ratio_changes)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_max_frames_and_overwrite(clip, model, tmp_path):
    out = tmp_path / "short.mp4"
    assert run_live(str(clip), str(out), model=model, max_frames=3).frames == 3
    assert len(frames_of(out)) == 3
    with pytest.raises(OutputError, match="exists"):
        run_live(str(clip), str(out), model=model)
    run_live(str(clip), str(out), model=model, max_frames=2, overwrite=True)
    assert len(frames_of(out)) == 2


def test_spec_is_the_model(clip, tmp_path):
    """The spec builds the stream's model and gives the starting ratio; the older keywords
    fold into it; a bad spec fails before any output is made."""
    spec = ModelSpec(weights=None, backend="torch", downsample=0.5)
    out = tmp_path / "spec.mp4"
    stats = run_live(str(clip), str(out), spec=spec, adapt=False, max_frames=3)
    assert stats.frames == 3 and stats.ratio == 0.5 and len(frames_of(out)) == 3
    stats = run_live(str(clip), str(out), spec=spec, downsample_ratio=0.25, adapt=False,
                     max_frames=2, overwrite=True)
    assert stats.ratio == 0.25
    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsError):
        run_live(str(clip), str(tmp_path / "w.mp4"), spec=spec, weights=str(missing))
    assert not (tmp_path / "w.mp4").exists()


def test_ratio_controller():
    c = RatioController(0.5, target_fps=30, min_ratio=0.2, window=4, cooldown=4)
    for _ in range(4):
        c.update(0.1)  # 10 fps: too slow
    assert c.ratio == 0.375
    for _ in range(16):
        c.update(0.1)
    assert c.ratio == 0.2  # 0.28125, 0.2109, then the floor at min_ratio
    assert [new for _, new in c.changes] == [0.375, 0.2812, 0.2109, 0.2]
    for _ in range(40):
        c.update(0.001)  # plenty of headroom: back up, never above the start
    assert c.ratio == 0.5
    assert RatioController(0.5, None).update(1.0) is None  # no target: fixed


@pytest.mark.parametrize("source, output, kw, error, match", [
    ("missing.mp4", "out.mp4", {}, InputError, "not found"),
    (".", "out.mp4", {}, InputError, "directory"),
    ("CLIP", "out.avi", {}, OutputError, "unknown output"),
    ("CLIP", "nodir/out.mp4", {}, OutputError, "does not exist"),
    ("CLIP", "out.mp4", {"background": "transparent"}, InputError, "alpha"),
    ("CLIP", "out.mp4", {"background": "nosuchcolour"}, InputError, "background"),
    ("CLIP", "out.mp4", {"downsample_ratio": "3"}, InputError, "ratio"),
    ("CLIP", "out.mp4", {"max_frames": 0}, InputError, "max-frames"),
])
def test_bad_input(clip, model, tmp_path, monkeypatch, source, output, kw, error, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match):
        run_live(str(clip) if source == "CLIP" else source, output, model=model, **kw)
    assert not (tmp_path / "out.mp4").exists()


def test_not_a_video_source(model, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    with pytest.raises(InputError, match="cannot read"):
        run_live(str(bad), str(tmp_path / "o.mp4"), model=model)
    assert not (tmp_path / "o.mp4").exists()


def run_cli(*args, env_extra=None, tmp_path=None):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["OMP_NUM_THREADS"] = "1"  # see conftest._one_torch_thread
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rvmatte", "live", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_cli_window_without_display_is_one_line_error(clip, tmp_path):
    r = run_cli("--source", str(clip), "--output", "window", tmp_path=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "rvmatte: error: --output window needs a display, and none is available "
        "(DISPLAY is not set); use --output FILE.mp4 or virtualcam"]


@pytest.mark.slow
def test_cli_file_output(clip, tmp_path):
    r = run_cli("--source", str(clip), "--output", "out.mp4", "--weights", "none",
                "--downsample", "0.5", "--background", "blur", "--max-frames", "6",
                tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stderr.replace("\r", "\n").strip().splitlines()[-1]
    # one honest figure: frames written / wall seconds, then the stages' times per frame
    m = re.fullmatch(r"live: 6 frames in ([\d.]+) s \(([\d.]+) fps\), ratio 0.5; "
                     r"capture \d+ ms, model \d+ ms, output \d+ ms", last)
    assert m, last
    seconds, fps = map(float, m.groups())
    # the seconds are printed to 0.1 s: the fps must fit the interval they stand for
    assert 6 / (seconds + 0.05) * 0.95 <= fps <= 6 / max(seconds - 0.05, 1e-3) * 1.05
    assert len(frames_of(tmp_path / "out.mp4")) == 6
    r = run_cli("--source", str(clip), "--output", "post.mp4", "--weights", "none",
                "--downsample", "0.5", "--stabilize", "--foreground-estimation",
                "--max-frames", "3", "-q", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(frames_of(tmp_path / "post.mp4")) == 3


def test_cli_adapt_flags():
    from rvmatte.cli import build_parser

    p = build_parser()
    base = ["live", "--source", "0"]
    assert p.parse_args(base).adapt is None  # decided by the source and the output
    assert p.parse_args(base + ["--adapt"]).adapt is True
    assert p.parse_args(base + ["--no-adapt"]).adapt is False


def test_stream_url_source(clip, model, tmp_path):
    """A URL source goes through the newest-frame reader thread (frames may be skipped)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # the reader may hang up early
            pass

    handler_cls = type("H", (http.server.SimpleHTTPRequestHandler,),
                       {"log_message": lambda *a: None})
    handler = functools.partial(handler_cls, directory=str(clip.parent))
    httpd = Quiet(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{clip.name}"
        out = tmp_path / "url.mp4"
        stats = run_live(url, str(out), model=model, downsample_ratio=0.5, adapt=False)
        assert 1 <= stats.frames <= 12
        assert len(frames_of(out)) == stats.frames
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def test_virtualcam_without_pyvirtualcam(clip, model, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyvirtualcam(name, *a, **kw):
        if name == "pyvirtualcam":
            raise ImportError("No module named 'pyvirtualcam'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyvirtualcam)
    with pytest.raises(OutputError, match="pip install pyvirtualcam"):
        run_live(str(clip), "virtualcam", model=model)
