"""benchmarks/live_speed.py reads the closing line ``rvmatte live`` prints (no model runs)."""

from __future__ import annotations

from rvmatte.live import LiveStats


def test_benchmark_reads_the_summary_line(load_benchmark, tmp_path):
    bench = load_benchmark("live_speed")
    stats = LiveStats(frames=300, seconds=12.5, fps=24.0, ratio=0.25, frames_read=300,
                      frames_matted=300, capture_s=1.2, model_s=9.0, output_s=3.0)
    log = tmp_path / "run.log"
    log.write_text("live: 20.1 fps  ratio 0.25 ...\r" + f"\rlive: {stats.summary()}\n")
    assert bench.parse_summary(log) == {"frames": 300, "tool_seconds": 12.5, "tool_fps": 24.0,
                                        "capture_ms": 4, "model_ms": 30, "output_ms": 10}
    old = tmp_path / "old.log"  # the sequential loop's line: no stage times
    old.write_text("\rlive: 282 frames in 87.0 s (3.2 fps), ratio 0.25\n")
    assert bench.parse_summary(old) == {"frames": 282, "tool_seconds": 87.0, "tool_fps": 3.2}
