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


def test_unusable_data_dir(tmp_path):
    """--data-dir at a file, under a file, or in a folder that cannot be written: one line
    and exit 2, before the server starts (nothing listens, nothing is created)."""
    import os

    from server_helpers import free_port

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    cases = [(a_file, "is a file"), (a_file / "data", "Not a directory")]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked, "Permission denied"))
        cases.append((locked / "data", "Permission denied"))
    for path, needle in cases:
        r = serve("--data-dir", str(path), "--port", str(free_port()), cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"rvmatte: error: --data-dir {path}") and needle in lines[0]
        assert "Traceback" not in r.stderr and "web UI at" not in r.stderr
    assert a_file.read_text() == "not a folder"
