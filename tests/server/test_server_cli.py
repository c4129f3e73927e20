"""``rvmatte serve`` option errors: one line, non-zero exit, nothing started."""

from __future__ import annotations

import socket
import subprocess
import sys


def serve(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rvmatte", "serve", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_bad_options(tmp_path):
    for args, needle in ((["--port", "0"], "--port"), (["--workers", "0"], "--workers"),
                         (["--checkpoint-frames", "0"], "--checkpoint-frames")):
        r = serve(*args, cwd=tmp_path)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rvmatte: error:") and needle in lines[0]


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = serve("--port", str(port), "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"rvmatte: error: cannot listen on 127.0.0.1:{port}: Address already in use")
