"""benchmarks/encode_speed.py: a CPU smoke run on a tiny generated clip."""

from __future__ import annotations

import json
from pathlib import Path


def test_encode_speed_prints_ratios_and_cleans_up(tmp_path, capsys, load_benchmark):
    """Both configurations encode every frame; the ratios are printed; the generated clip
    and the segments are removed."""
    bench = load_benchmark("encode_speed")
    out = tmp_path / "r.json"
    assert bench.main(["--frames", "12", "--size", "96x64", "--presets", "ultrafast",
                       "--configs", "1:auto,3:1", "--segment-frames", "4", "--rounds", "1",
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["workers"], r["threads"], r["frames"]) for r in rows] == [(1, None, 12), (3, 1, 12)]
    assert rows[0]["x_base"] == 1.0 and rows[1]["x_base"] > 0 and rows[1]["bytes"] > 0
    assert rows[1]["threaded"] and rows[1]["segment_frames"] == 4
    text = capsys.readouterr().out
    assert "x workers=1" in text and "ultrafast" in text
    assert not Path(json.loads(out.read_text())["clip"]).parent.exists()
