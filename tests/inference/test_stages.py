"""The per-stage timings of a conversion (ConversionResult.stages / bottleneck) and the CLI's
line naming the stage that set the pace."""

import subprocess
import sys

from rvm_clips import make_clip
from rvmatte.inference.convert import convert_video
from rvmatte.inference.session import Matter


def test_a_conversion_reports_where_its_time_went(tmp_path, model):
    clip = make_clip(tmp_path / "in.mp4", w=64, h=48, n=12)
    r = convert_video(clip, tmp_path / "c.mp4", alpha=tmp_path / "a.mp4",
                      model=Matter(model, backend="torch"), preset="ultrafast")
    st = r.stages
    assert set(st) == {"decode_s", "decode_blocked_s", "model_s", "model_waited_for_input_s",
                       "model_blocked_s", "encode_s", "encode_waited_for_input_s"}
    assert all(v >= 0 for v in st.values())
    assert st["model_s"] > 0 and st["decode_s"] > 0 and st["encode_s"] > 0
    # no stage is busy for longer than the run itself
    assert max(st["decode_s"], st["model_s"], st["encode_s"]) <= r.seconds
    busy = {k: st[f"{k}_s"] for k in ("decode", "model", "encode")}
    assert r.bottleneck == max(busy, key=busy.get)
    assert r.as_dict()["bottleneck"] == r.bottleneck and r.as_dict()["stages"]["model_s"] > 0


def test_the_cli_names_the_stage_that_set_the_pace(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", w=64, h=48, n=6)
    p = subprocess.run([sys.executable, "-m", "rvmatte", "convert", str(clip), "-o",
                        str(tmp_path / "c.mp4"), "--preset", "ultrafast"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stderr.splitlines() if x.strip().startswith("busy:")]
    assert len(line) == 1 and "stage set the pace" in line[0]
    assert any(f"the {k} stage" in line[0] for k in ("decode", "model", "encode"))
