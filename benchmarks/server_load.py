#!/usr/bin/env python
"""Load on ``rvmatte serve`` over loopback: job throughput, API latency, memory and files.

Starts a real server process on 127.0.0.1 (``tests/server/slow_server.py --copy``: the real
server whose jobs decode the upload with PyAV and copy it, so the numbers are the server's, not
the model's; ``--runner convert``: ``rvmatte serve`` converting with the bundled model), and
measures, side by side in one run:

* ``idle``: ``GET /api/health`` and ``GET /api/jobs`` latency with nothing else going on;
* ``jobs``: ``--clients`` clients submit ``--jobs`` jobs (each uploads a tiny clip; a 503 is
  retried after its ``Retry-After``) while a prober times the same two requests; jobs/s from
  the first submission to the last job done;
* ``uploads``: ``--uploads`` concurrent uploads of a ~``--upload-mb`` MB clip, probed alike;

and samples the server's RSS and open file descriptors every 0.25 s. Prints a table; ``--json``
writes the numbers. Loopback only; the default run takes well under two minutes.

    python benchmarks/server_load.py                           # 20 clients, 200 jobs, 20 uploads
    python benchmarks/server_load.py --clients 20 --jobs 200 --uploads 40 --upload-mb 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "tests" / "server" / "slow_server.py"
sys.path.insert(0, str(LAUNCHER.parent))
from server_helpers import free_port, make_clip, start_server  # noqa: E402  (the tests' helpers)


def noise_clip(path: Path, frames: int, size: int = 128) -> Path:
    """An H.264 clip of random pixels at lossless quality: an upload of a given weight."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=12, options={"preset": "ultrafast", "crf": "0"})
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for _ in range(frames):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


def heavy_clip(path: Path, megabytes: float) -> Path:
    """A valid clip of about ``megabytes`` MB (noise encodes near-losslessly large)."""
    return noise_clip(path, max(1, round(megabytes * 1e6 / (128 * 128 * 3 * 0.62))))


def start(runner: str, data: Path, port: int, log: Path, max_queued: int) -> subprocess.Popen:
    if runner == "copy":
        return start_server(data, port, log, "--copy", "--max-queued", str(max_queued),
                            "--retry-after", "1")
    return start_server(data, port, log, timeout=180, cmd=[
        sys.executable, "-m", "rvmatte", "serve", "--data-dir", str(data), "--port", str(port),
        "--max-queued", str(max_queued), "--min-free-mb", "0", "--log-level", "warning"])


class Sampler(threading.Thread):
    """RSS (MB) and open fds of process ``pid`` every ``every`` seconds (Linux /proc)."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.stop = pid, every, threading.Event()
        self.samples: list[tuple[float, float, int]] = []  # (t, rss_mb, fds)

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(self.every):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                rss = next(int(x.split()[1]) for x in status.splitlines()
                           if x.startswith("VmRSS:")) / 1024
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.monotonic() - t0, rss, fds))


class Prober(threading.Thread):
    """Times ``GET /api/health`` and ``GET /api/jobs`` one after the other until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.ms: dict[str, list[float]] = {"health": [], "list": []}

    def run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                for name, path in (("health", "/api/health"), ("list", "/api/jobs")):
                    t = time.perf_counter()
                    c.get(self.url + path)
                    self.ms[name].append((time.perf_counter() - t) * 1000)
                time.sleep(0.01)


def probe(url: str, body, *args) -> tuple[dict, object]:
    """Run ``body(*args)`` with a :class:`Prober` alongside; return its timings and result."""
    prober = Prober(url)
    prober.start()
    try:
        out = body(*args)
    finally:
        prober.stop.set()
        prober.join()
    return prober.ms, out


def in_threads(fn, n: int) -> None:
    """``fn()`` in ``n`` threads at once; returns when all have ended."""
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def submit_jobs(url: str, clip: bytes, clients: int, jobs: int) -> dict:
    """``jobs`` jobs from ``clients`` threads (503: retried after Retry-After); waits until
    all are finished. Returns counts and the seconds from the first submission to the end."""
    todo = list(range(jobs))
    lock = threading.Lock()
    ids: list[str] = []
    refused = [0]

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                while True:
                    r = c.post(f"{url}/api/jobs", files={"file": ("clip.mp4", clip)})
                    if r.status_code == 201:
                        with lock:
                            ids.append(r.json()["id"])
                        break
                    if r.status_code != 503:
                        raise SystemExit(f"POST /api/jobs: {r.status_code} {r.text}")
                    with lock:
                        refused[0] += 1
                    time.sleep(float(r.headers.get("Retry-After", 1)))

    t0 = time.monotonic()
    in_threads(client, clients)
    states = {}
    with httpx.Client(timeout=30) as c:
        for job_id in ids:
            while (state := c.get(f"{url}/api/jobs/{job_id}").json()["state"]) in (
                    "queued", "running"):
                time.sleep(0.05)
            states[state] = states.get(state, 0) + 1
    seconds = time.monotonic() - t0
    return {"jobs": len(ids), "states": states, "refused_503": refused[0],
            "seconds": seconds, "jobs_per_s": len(ids) / seconds}


def upload_many(url: str, data: bytes, count: int) -> dict:
    """``count`` concurrent ``POST /api/uploads`` of ``data``; the uploads are deleted."""
    codes: list[int] = []
    ids: list[str] = []

    def one() -> None:
        r = httpx.post(f"{url}/api/uploads", files={"file": ("big.mp4", data)}, timeout=120)
        codes.append(r.status_code)
        if r.status_code == 201:
            ids.append(r.json()["id"])

    t0 = time.monotonic()
    in_threads(one, count)
    seconds = time.monotonic() - t0
    for upload_id in ids:
        httpx.delete(f"{url}/api/uploads/{upload_id}", timeout=30)
    return {"uploads": count, "ok": codes.count(201), "seconds": seconds,
            "mb_per_s": count * len(data) / 1e6 / seconds}


def first_upload_ms(url: str, clip: bytes) -> float:
    """Milliseconds of the first ``POST /api/uploads`` after the start (then deleted)."""
    t = time.perf_counter()
    r = httpx.post(f"{url}/api/uploads", files={"file": ("clip.mp4", clip)}, timeout=120)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 201:
        raise SystemExit(f"POST /api/uploads: {r.status_code} {r.text}")
    httpx.delete(f"{url}/api/uploads/{r.json()['id']}", timeout=30)
    return ms


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def _latency_rows(phases: dict[str, dict]) -> list[dict]:
    rows = []
    for phase, ms in phases.items():
        for name, values in ms.items():
            rows.append({"phase": phase, "request": name, "n": len(values),
                         "p50_ms": pct(values, 50), "p99_ms": pct(values, 99)})
    return rows


def run(args: argparse.Namespace, work: Path) -> dict:
    clip = make_clip(work / "clip.mp4", args.frames, w=96, h=96).read_bytes()
    heavy = heavy_clip(work / "heavy.mp4", args.upload_mb).read_bytes()
    port, data, log = free_port(), work / "data", work / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(args.runner, data, port, log, args.max_queued)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        first = first_upload_ms(url, clip)
        idle, _ = probe(url, time.sleep, args.idle_s)
        during_jobs, jobs = probe(url, submit_jobs, url, clip, args.clients, args.jobs)
        during_uploads, uploads = probe(url, upload_many, url, heavy, args.uploads)
    finally:
        sampler.stop.set()
        sampler.join()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    s = sampler.samples
    return {"runner": args.runner, "clients": args.clients, "clip_bytes": len(clip),
            "first_upload_ms": first,
            "upload_bytes": len(heavy), "jobs": jobs, "uploads": uploads,
            "latency": _latency_rows({"idle": idle, "jobs": during_jobs,
                                      "uploads": during_uploads}),
            "resources": {"samples": len(s),
                          "rss_mb": [min(x[1] for x in s), max(x[1] for x in s), s[-1][1]]
                          if s else None,
                          "fds": [min(x[2] for x in s), max(x[2] for x in s), s[-1][2]]
                          if s else None,
                          "series": s[:: max(1, len(s) // 20)]}}


def report(r: dict) -> None:
    j, u, res = r["jobs"], r["uploads"], r["resources"]
    print(f"runner {r['runner']}, {r['clients']} clients, clip {r['clip_bytes'] / 1e3:.0f} kB; "
          f"first upload after the start {r['first_upload_ms']:.0f} ms")
    print(f"jobs:    {j['jobs']} in {j['seconds']:.1f} s = {j['jobs_per_s']:.2f} jobs/s "
          f"({j['states']}, {j['refused_503']} refused with 503 and retried)")
    print(f"uploads: {u['ok']}/{u['uploads']} x {r['upload_bytes'] / 1e6:.1f} MB in "
          f"{u['seconds']:.1f} s = {u['mb_per_s']:.1f} MB/s")
    print(f"\n{'phase':<9}{'request':<9}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}")
    for row in r["latency"]:
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        print(f"{row['phase']:<9}{row['request']:<9}{row['n']:>6}{p50:>9}{p99:>9}")
    if res["rss_mb"]:
        print(f"\nserver RSS MB min/max/end {res['rss_mb'][0]:.0f}/{res['rss_mb'][1]:.0f}/"
              f"{res['rss_mb'][2]:.0f}; open fds min/max/end {res['fds'][0]}/{res['fds'][1]}/"
              f"{res['fds'][2]} ({res['samples']} samples)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runner", choices=("copy", "convert"), default="copy",
                   help="copy: the test launcher's copying runner; convert: rvmatte serve "
                        "with the bundled model")
    p.add_argument("--clients", type=int, default=20, help="clients submitting jobs at once")
    p.add_argument("--jobs", type=int, default=200, help="jobs submitted in all")
    p.add_argument("--frames", type=int, default=12, help="frames of each job's clip (96x96)")
    p.add_argument("--max-queued", type=int, default=20, help="the server's --max-queued")
    p.add_argument("--uploads", type=int, default=20, help="concurrent uploads")
    p.add_argument("--upload-mb", type=float, default=1.0, help="size of each upload (MB)")
    p.add_argument("--idle-s", type=float, default=3.0, help="seconds of the idle phase")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = p.parse_args(argv)
    if min(args.clients, args.jobs, args.uploads, args.frames, args.max_queued) < 1:
        p.error("--clients, --jobs, --uploads, --frames and --max-queued must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="rvmatte-load-"))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["work_dir"] = str(work)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
