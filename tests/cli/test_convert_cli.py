"""``rvmatte convert`` / ``rvmatte demo``: thin CLI over the API; user errors are one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from rvm_clips import make_clip, truncated_faststart_mp4, video_frames  # noqa: E402

from rvmatte.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rvmatte", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("case", ["missing", "notvideo", "ratio", "same", "ext"])
def test_bad_input_is_one_line_no_traceback(tmp_path, case):
    clip = make_clip(tmp_path / "in.mp4", n=2, audio=False)
    (tmp_path / "notes.txt").write_text("not a video")
    args = {"missing": [tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4"],
            "notvideo": [tmp_path / "notes.txt", "-o", tmp_path / "o.mp4"],
            "ratio": [clip, "-o", tmp_path / "o.mp4", "--downsample", "7"],
            "same": [clip, "-o", clip, "--overwrite"],
            "ext": [clip, "-o", tmp_path / "o.flv"]}[case]
    before = clip.read_bytes()
    r = _cli("convert", *args, "--weights", "none")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rvmatte: error: "), r.stderr
    assert clip.read_bytes() == before
    assert not (tmp_path / "o.mp4").exists()


def test_alpha_format_option(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=2, audio=False)
    r = _cli("convert", clip, "--alpha", tmp_path / "a.mp4", "--alpha-format", "gray",
             "--weights", "none", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.mp4").stat().st_size > 0
    r = _cli("convert", clip, "--alpha", tmp_path / "b.mp4", "--alpha-format", "grey",
             "--weights", "none")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--alpha-format" in r.stderr and not (tmp_path / "b.mp4").exists()


def test_convert_json_summary(tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", n=4)
    rc = main(["convert", str(clip), "-o", str(tmp_path / "o.webm"), "--alpha",
               str(tmp_path / "a.mp4"), "--weights", "none", "--json", "--seq-chunk", "2",
               "--downsample", "0.5"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 4 and summary["audio"] == "opus"
    assert summary["downsample_ratio"] == 0.5
    assert set(summary["outputs"]) == {"composite", "alpha"}
    assert len(video_frames(tmp_path / "o.webm")[0]) == 4


def test_batch_exit_code_reports_failures(tmp_path, capsys):
    src = tmp_path / "clips"
    src.mkdir()
    make_clip(src / "good.mp4", n=2, audio=False)
    (src / "bad.mp4").write_bytes(b"\x00" * 100)
    rc = main(["convert", str(src), "-o", str(tmp_path / "out"), "--weights", "none", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.mp4" in err and "Traceback" not in err
    assert (tmp_path / "out" / "good.mp4").exists()
    assert not (tmp_path / "out" / "bad.mp4").exists()


def test_no_output_requested(tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", n=2, audio=False)
    assert main(["convert", str(clip)]) == 2
    assert "no output requested" in capsys.readouterr().err


@pytest.mark.slow
def test_make_demo_outputs_exist_and_decode(tmp_path):
    """`make demo` = `rvmatte demo --output-dir demo_output` (bundled weights, sample clip)."""
    pytest.importorskip("rvmatte.weights")
    from rvmatte.weights import bundled_path

    try:
        bundled_path()
    except Exception:  # noqa: BLE001 - weights not bundled in this checkout
        pytest.skip("bundled weights missing")
    r = _cli("demo", "--output-dir", tmp_path / "demo", "-q", cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("composite.mp4", "alpha.mp4", "transparent.webm"):
        assert str(tmp_path / "demo" / name) in r.stdout
        pts, frames = video_frames(tmp_path / "demo" / name)
        assert len(pts) == 90 and frames.shape[1:3] == (360, 640)
    with __import__("av").open(str(tmp_path / "demo" / "composite.mp4")) as c:
        assert c.streams.audio, "the sample's audio is carried over"


def test_sigterm_stops_cleanly_and_the_job_resumes(tmp_path):
    """``kill`` / ``docker stop`` (SIGTERM) mid-conversion: one line, exit 143, no output file
    nor temporary left, the job folder kept once it holds a checkpoint; ``--resume`` then
    finishes it, counting only the frames of that run."""
    import os
    import re
    import signal
    import time
    from fractions import Fraction

    # 50 s of video at 2 fps: checkpoints every ~10 s of video (20 frames), many before the end
    clip = make_clip(tmp_path / "in.mp4", w=640, h=360, n=100, rate=Fraction(2))
    out, alpha = tmp_path / "c.mp4", tmp_path / "a.mp4"
    cmd = [sys.executable, "-m", "rvmatte", "convert", str(clip), "-o", str(out), "--alpha",
           str(alpha), "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "c.mp4.rvmatte-resume" / "job.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not checkpoint.exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the conversion ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-1500:]
    assert err.strip().splitlines()[-1] == "rvmatte: terminated (a conversion continues with --resume)"
    assert "Traceback" not in err
    assert not out.exists() and not alpha.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4.rvmatte-resume", "in.mp4"]
    done = subprocess.run(cmd[:-1] + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    m = re.search(r"^resumed at frame (\d+): (\d+) frames", done.stderr, re.M)
    assert m and int(m.group(1)) > 0 and int(m.group(1)) + int(m.group(2)) == 100, done.stderr
    assert len(video_frames(out)[0]) == len(video_frames(alpha)[0]) == 100
    assert not os.path.exists(str(out) + ".rvmatte-resume")


def test_sigterm_shuts_the_server_down_gracefully(tmp_path):
    import signal
    import socket
    import time
    import urllib.request

    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rvmatte", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, up = time.monotonic() + 120, False
    while time.monotonic() < deadline and proc.poll() is None and not up:
        try:
            up = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        except OSError:
            time.sleep(0.2)
    assert up, proc.stdout.read() if proc.poll() is not None else "server did not answer"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out[-1500:]
    assert "Application shutdown complete" in out and "Traceback" not in out
    assert out.strip().splitlines()[-1] == "rvmatte: terminated"


def test_truncated_input_warns_even_when_quiet_and_fails_with_strict(tmp_path, capsys):
    cut = truncated_faststart_mp4(tmp_path)
    out = tmp_path / "o.mp4"
    assert main(["convert", str(cut), "-o", str(out), "--weights", "none", "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvmatte: warning: only "), err  # no progress
    assert "of 60 frames declared" in err[0]
    strict = tmp_path / "s.mp4"
    assert main(["convert", str(cut), "-o", str(strict), "--weights", "none", "-q",
                 "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rvmatte: error: ") and "60" in err[0], err
    assert not strict.exists()
    assert not any(p.name.startswith("s.mp4") for p in tmp_path.iterdir())  # no resume folder


def test_resume_summary_counts_only_this_runs_frames(tmp_path, capsys):
    """After --resume the summary says where it resumed and counts (and times) only the
    frames converted in this run."""
    import re
    import threading
    from fractions import Fraction

    import torch

    from rvmatte.errors import Cancelled
    from rvmatte.inference.convert import convert_video
    from rvmatte.spec import ModelSpec

    clip = make_clip(tmp_path / "in.mp4", n=30, rate=Fraction(2), audio=False)  # 15 s
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(ModelSpec(weights=None, device="cpu").load_model().state_dict(), weights)
    out = tmp_path / "o.mp4"
    model = ["--weights", str(weights), "--device", "cpu", "--backend", "torch"]
    stop = threading.Event()

    def progress(info):
        if info.done >= 25:
            stop.set()

    with pytest.raises(Cancelled):  # the same request as the CLI's, stopped after a segment
        convert_video(clip, out, spec=ModelSpec(weights=str(weights), device="cpu",
                                                backend="torch"),
                      progress=progress, cancel=stop)
    assert main(["convert", str(clip), "-o", str(out), *model, "--resume"]) == 0
    err = capsys.readouterr().err
    m = re.search(r"^resumed at frame (\d+): (\d+) frames in [\d.]+ s \(([\d.]+) fps", err, re.M)
    assert m, err
    start, done = int(m.group(1)), int(m.group(2))
    assert 0 < start < 30 and start + done == 30
    assert len(video_frames(out)[0]) == 30
