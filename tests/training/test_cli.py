"""`rvmatte train` and `rvmatte prepare-greenscreen`."""

import numpy as np
import pytest
import torch
from PIL import Image

from rvmatte.cli import main
from rvmatte.training.greenscreen import Keyer, auto_key_color, prepare_greenscreen

from .conftest import FIXTURES


def test_train_cli_smoke_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "stage1", "--synthetic", str(FIXTURES / "synthetic"),
            "--no-segmentation", "--size", "64", "--seq-length", "2", "--max-steps", "2",
            "--workers", "0", "--out", str(out), "--set", "validate_every=0",
            "--set", "checkpoint_every=1", "--export", str(tmp_path / "w.pth")]
    assert main(args) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    sd = torch.load(tmp_path / "w.pth", weights_only=True)
    assert "refiner.box_filter.weight" in sd
    # continue the same run from its saved config
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "3"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    ([], "give --preset"),
    (["--preset", "nope"], "unknown training preset"),
    (["--preset", "stage1", "--videomatte", "/nonexistent/vm"], "VideoMatte240K: root not found"),
    (["--preset", "stage1", "--set", "bogus=1"], "unknown config key 'bogus'"),
    (["--preset", "stage1", "--set", "noequals"], "--set expects KEY=VALUE"),
    (["--resume"], "--resume needs --out"),
])
def test_train_cli_errors_are_one_line(args, msg, capsys, tmp_path):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_list_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert all(p in out for p in ("stage1", "stage2", "stage3", "stage4", "finetune", "dgf"))


def _greenscreen_frames(n=3, h=40, w=48):
    """A soft-edged disc over a green screen with known alpha."""
    key = np.array([0.1, 0.75, 0.25])
    yy, xx = np.mgrid[:h, :w]
    frames, alphas = [], []
    for t in range(n):
        r = np.hypot(yy - h / 2, xx - w / 2 - 2 * t)
        a = np.clip((12 - r) / 3, 0, 1)
        fg = np.stack([0.8 * np.ones_like(a), 0.45 * np.ones_like(a), 0.35 * np.ones_like(a)], -1)
        frames.append(a[..., None] * fg + (1 - a[..., None]) * key)
        alphas.append(a)
    return key, frames, alphas


def test_keyer_recovers_alpha_and_removes_spill():
    key, frames, alphas = _greenscreen_frames()
    assert np.allclose(auto_key_color(frames[0]), key, atol=0.02)
    keyer = Keyer(auto_key_color(frames[0]))
    fgr, pha = keyer(frames[0])
    assert np.abs(pha - alphas[0]).mean() < 0.03
    inside = alphas[0] > 0.3
    assert (fgr[..., 1][inside] <= np.maximum(fgr[..., 0], fgr[..., 2])[inside] + 1e-6).all()


def test_prepare_greenscreen_writes_videomatte_layout(tmp_path):
    _, frames, _ = _greenscreen_frames()
    clip = tmp_path / "take1"
    clip.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray((f * 255).astype(np.uint8)).save(clip / f"{i:03d}.png")
    out = tmp_path / "set"
    assert main(["prepare-greenscreen", str(clip), "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "fgr" / "take1").iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert len(list((out / "pha" / "take1").iterdir())) == 3
    # the result is readable by the VideoMatte240K reader
    from rvmatte.training import data as D
    bg = D.Backgrounds(D.BackgroundImages(FIXTURES / "backgrounds", 64))
    fgr, pha, _ = D.VideoMatteDataset(out, bg, 64, 2)[0]
    assert 0.05 < float(pha.mean()) < 0.8
    assert main(["prepare-greenscreen", str(clip), "-o", str(out)]) == 2  # exists, no --overwrite
    assert main(["prepare-greenscreen", str(clip), "-o", str(out), "--overwrite"]) == 0


def test_prepare_greenscreen_video_and_errors(tmp_path, capsys):
    import av
    _, frames, _ = _greenscreen_frames(n=4, h=48, w=64)
    video = tmp_path / "shot.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray((f * 255).astype(np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    done = prepare_greenscreen([video], tmp_path / "out", max_frames=3)
    assert done == {"shot": 3}
    assert main(["prepare-greenscreen", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["prepare-greenscreen", str(video), "-o", str(tmp_path / "o2"),
                 "--key-color", "zzz"]) == 2
    assert "key colour must be 6 hex digits" in capsys.readouterr().err
