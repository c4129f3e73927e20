"""Launcher of a real server process for the restart and fault tests and the load benchmark:
``python slow_server.py DATA_DIR PORT [options]``.

By default it runs the real :func:`convert_video` (checkpoints every 4 frames) with a progress
hook that sleeps a little per chunk, so a test can stop or kill it mid-job. ``--copy`` runs
:class:`server_helpers.CopyRunner` instead (real decoding, outputs copied; ``--delay`` seconds
per frame). Test hooks, each honoured by this process only:

* ``--hold-upload {receive,probe} --hold-file F``: an upload stops (forever) once its bytes
  are in ``*.part`` (``receive``) or once it is renamed and being checked (``probe``); ``F``
  is created then, so a test knows when to kill the process.
* ``--fake-full-disk F``: while the file ``F`` exists the data directory's disk behaves as
  full (no free bytes; file and database writes fail with ENOSPC) -- the fault suite's
  stand-in where a small tmpfs cannot be mounted.
"""

import argparse
import errno
import sqlite3
import sys
import time
from pathlib import Path

from rvmatte.server import jobs, routes_uploads, store
from rvmatte.server.app import ServerConfig
from rvmatte.server.jobs import ConvertRunner
from rvmatte.server.run import serve
from rvmatte.spec import ModelSpec


class SlowRunner(ConvertRunner):
    def __call__(self, job, *, progress, cancel, resume):
        def slow(info):
            progress(info)
            time.sleep(0.3)

        return super().__call__(job, progress=slow, cancel=cancel, resume=resume)


def _hold_uploads(where: str, marker: Path) -> None:
    def hold():
        marker.touch()
        while True:
            time.sleep(1)

    if where == "receive":
        receive = routes_uploads._receive

        def held_receive(*args, **kw):
            out = receive(*args, **kw)
            hold()
            return out

        routes_uploads._receive = held_receive
    else:
        def held_probe(path):
            hold()

        routes_uploads.media.probe_video = held_probe


def _fake_full_disk(marker: Path):
    """Install the fake full disk; returns the ENOSPC error maker for the runner."""
    def full() -> bool:
        return marker.exists()

    def enospc():
        return OSError(errno.ENOSPC, "No space left on device")

    free_bytes, receive = jobs.JobManager.free_bytes, routes_uploads._receive
    jobs.JobManager.free_bytes = lambda self: 0 if full() else free_bytes(self)

    def receive_or_fail(*args, **kw):
        if full():
            raise enospc()
        return receive(*args, **kw)

    routes_uploads._receive = receive_or_fail
    execute = store.JobStore._exec

    def exec_or_fail(self, sql, args=()):
        if full() and not sql.lstrip().upper().startswith("SELECT"):
            raise sqlite3.OperationalError("database or disk is full")
        return execute(self, sql, args)

    store.JobStore._exec = exec_or_fail
    finish = store.JobStore.finish

    def finish_or_fail(self, *args, **kw):
        if full():
            raise sqlite3.OperationalError("database or disk is full")
        return finish(self, *args, **kw)

    store.JobStore.finish = finish_or_fail
    return enospc


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", type=Path)
    p.add_argument("port", type=int)
    p.add_argument("--no-preload", action="store_true")
    p.add_argument("--copy", action="store_true", help="CopyRunner instead of convert_video")
    p.add_argument("--delay", type=float, default=0.0, help="--copy: seconds per frame")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-queued", type=int, default=100)
    p.add_argument("--min-free-mb", type=float, default=0)
    p.add_argument("--retry-after", type=int, default=30)
    p.add_argument("--hold-upload", choices=("receive", "probe"))
    p.add_argument("--hold-file", type=Path)
    p.add_argument("--fake-full-disk", type=Path)
    args = p.parse_args(argv)
    spec = ModelSpec(weights=None)
    if args.copy:
        sys.path.insert(0, str(Path(__file__).parent))
        from server_helpers import CopyRunner

        runner = CopyRunner(delay=args.delay)
    else:
        runner = SlowRunner(spec, checkpoint_frames=4)
    if args.hold_upload:
        _hold_uploads(args.hold_upload, args.hold_file)
    if args.fake_full_disk:
        enospc = _fake_full_disk(args.fake_full_disk)
        inner = runner

        def runner(job, **kw):
            out = inner(job, **kw)
            if args.fake_full_disk.exists():
                raise enospc()
            return out

    config = ServerConfig(data_dir=args.data_dir, spec=spec, checkpoint_frames=4,
                          runner=runner, preload_model=not (args.no_preload or args.copy),
                          workers=args.workers, max_queued=args.max_queued,
                          min_free_bytes=int(args.min_free_mb * 2**20),
                          retry_after_s=args.retry_after)
    serve(config, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
