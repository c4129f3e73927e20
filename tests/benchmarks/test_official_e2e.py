"""benchmarks/official_e2e.py: argument checks and the clip it generates (no model runs)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("official_e2e")


def test_official_repo_is_required(bench, capsys, tmp_path):
    assert bench.main(["--rounds", "1"]) == 2
    assert "--official-repo PATH is required" in capsys.readouterr().err
    assert bench.main(["--official-repo", str(tmp_path)]) == 2
    assert "not a RobustVideoMatting checkout" in capsys.readouterr().err


def test_variants(bench):
    assert bench.parse_variant("12-passive") == {"name": "official sc12 passive", "seq_chunk": 12,
                                                 "passive": True, "jit": False}
    assert bench.parse_variant("1")["seq_chunk"] == 1
    with pytest.raises(SystemExit):
        bench.parse_variant("1-fast")


def test_generated_clip_has_exact_metadata_and_audio(bench, tmp_path):
    clip = tmp_path / "clip.mp4"
    bench.make_clip(bench.DEFAULT_SOURCE, clip, 7, size=(64, 36))
    info = bench.probe(clip)
    assert info["frames"] == info["meta_frames"] == 7
    assert info["size"] == "64x36" and info["codec"] == "h264" and info["audio"]
    assert bench.probe(tmp_path / "missing.mp4").get("error")


def test_rvmatte_against_a_baseline_command(bench, tmp_path, capsys):
    """``--rvmatte-baseline-cmd`` times a second rvmatte (here the same one) in the same rounds
    and prints the ratio; both runs' outputs are checked like the others."""
    import json
    import sys

    clip = tmp_path / "clip.mp4"
    bench.make_clip(bench.DEFAULT_SOURCE, clip, 6, size=(128, 72))
    rc = bench.main(["--skip-official", "--clip", str(clip), "--rounds", "1", "--idle-wait", "0",
                     "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json"),
                     "--rvmatte-baseline-cmd", f"{sys.executable} -m rvmatte"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "rvmatte baseline" in out and "rvmatte auto vs rvmatte baseline:" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["info"]["speedup_vs_baseline"] > 0
