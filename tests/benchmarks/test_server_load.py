"""benchmarks/server_load.py: the smallest run against a real server process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")


def test_server_load_prints_the_table_and_cleans_up(tmp_path, capsys, load_benchmark):
    """Every job is done, every upload stored, each phase timed, the server's RSS and fds
    sampled; the temporary data directory is removed."""
    bench = load_benchmark("server_load")
    out = tmp_path / "r.json"
    assert bench.main(["--clients", "2", "--jobs", "3", "--uploads", "2", "--upload-mb", "0.1",
                       "--idle-s", "0.3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["jobs"]["jobs"] == 3 and r["jobs"]["states"] == {"done": 3}
    assert r["uploads"]["ok"] == 2
    assert {(row["phase"], row["request"]) for row in r["latency"]} == {
        (p, q) for p in ("idle", "jobs", "uploads") for q in ("health", "list")}
    assert all(row["n"] >= 1 and row["p99_ms"] >= row["p50_ms"] > 0 for row in r["latency"])
    assert r["resources"]["fds"][1] > 0 and r["resources"]["rss_mb"][1] > 0
    text = capsys.readouterr().out
    assert "jobs/s" in text and "p99 ms" in text
    assert not Path(r["work_dir"]).exists()
