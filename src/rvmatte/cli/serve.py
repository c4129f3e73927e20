"""``rvmatte serve``: the HTTP API, job queue and web UI."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import RvmatteError
from .options import add_model_options, add_task_resources, spec_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the web UI and HTTP API",
                       description="Serve the web UI and the HTTP API (OpenAPI docs at /docs). "
                                   "Jobs are kept in DATA_DIR and resumed after a restart.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (others than loopback need a token)")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--data-dir", type=Path, default=Path("rvmatte-server"),
                   help="uploads, results and the job database")
    # not default=$RVMATTE_TOKEN: --help would print the secret
    p.add_argument("--token", default=None,
                   help="access token clients must send (default: $RVMATTE_TOKEN; made up "
                        "and printed when binding to a non-loopback address without one)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once")
    p.add_argument("--max-upload-mb", type=float, default=1024,
                   help="upload limit (MB)")
    p.add_argument("--max-queued", type=int, default=100,
                   help="jobs allowed to wait")
    p.add_argument("--retention-hours", type=float, default=24,
                   help="delete results and uploads this long after a job ends (0: keep)")
    p.add_argument("--min-free-mb", type=float, default=256,
                   help="free disk the server keeps: uploads are refused (507) and jobs wait "
                        "below it, and /api/health says so")
    p.add_argument("--max-storage-mb", type=float, default=0,
                   help="most uploads and results the server keeps (MB): above it uploads "
                        "are refused (507) and /api/health says so (0: no limit but "
                        "--min-free-mb)")
    p.add_argument("--checkpoint-frames", type=int, default=None,
                   help="frames between resume checkpoints (default: about 10 s of video)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="convert each job as a task of a Ray cluster instead of in this "
                        "process: auto, ray://HOST:PORT, HOST:PORT or local (pip install "
                        "'rvmatte[cluster]'; DATA_DIR must be on storage every node sees; "
                        "--workers jobs are sent at a time; docs/CLUSTER.md)")
    add_task_resources(p)
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="server log level")
    # The model every job and preview runs (--downsample: for jobs that ask for auto).
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise RvmatteError(f"bad --port {args.port}: use 1-65535")
    if args.workers < 1:
        raise RvmatteError("--workers must be at least 1")
    if args.checkpoint_frames is not None and args.checkpoint_frames < 1:
        raise RvmatteError("--checkpoint-frames must be at least 1")
    if args.max_upload_mb <= 0:
        raise RvmatteError("--max-upload-mb must be positive")
    if args.max_queued < 1:
        raise RvmatteError("--max-queued must be at least 1")
    if args.min_free_mb < 0:
        raise RvmatteError("--min-free-mb must be 0 or more")
    if args.max_storage_mb < 0:
        raise RvmatteError("--max-storage-mb must be 0 (no limit) or more")
    spec = spec_from_args(args)
    try:
        from ..server.app import ServerConfig
        from ..server.run import serve
    except ImportError as e:
        raise RvmatteError(f"the server needs its extra ({e.name} is missing): "
                           "pip install 'rvmatte[server]'") from None
    token = args.token or os.environ.get("RVMATTE_TOKEN") or None
    runner = _cluster_runner(args, spec)
    config = ServerConfig(data_dir=args.data_dir, host=args.host, token=token,
                          workers=args.workers,
                          max_upload_bytes=int(args.max_upload_mb * 1e6),
                          max_queued=args.max_queued,
                          retention_s=args.retention_hours * 3600,
                          checkpoint_frames=args.checkpoint_frames, preload_model=True,
                          min_free_bytes=int(args.min_free_mb * 2**20),
                          max_storage_bytes=int(args.max_storage_mb * 2**20),
                          runner=runner)
    try:
        serve(config, spec=spec, port=args.port, log_level=args.log_level)
    finally:
        if runner is not None:
            runner.close()
    return 0


def _cluster_runner(args: argparse.Namespace, spec):
    """``--cluster``: the jobs' runner sends each job to the cluster (the server keeps its
    queue, job records and API; previews still run here). Connected before the server starts,
    so a wrong address is one line, not a failed first job."""
    if args.cluster is None:
        return None
    from ..cluster import ClusterRunner

    runner = ClusterRunner(spec, cluster=args.cluster, cpus_per_task=args.cpus_per_task,
                           gpus_per_task=args.gpus_per_task, actors=args.actors,
                           checkpoint_frames=args.checkpoint_frames)
    runner.connect()
    return runner
