"""``rvmatte serve``: the HTTP API, job queue and web UI."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import RvmatteError


def _weights(value: str):
    return None if value.lower() in ("none", "random") else value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the web UI and HTTP API",
                       description="Serve the web UI and the HTTP API (OpenAPI docs at /docs). "
                                   "Jobs are kept in DATA_DIR and resumed after a restart.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data-dir", type=Path, default=Path("rvmatte-server"),
                   help="uploads, results and the job database (default ./rvmatte-server)")
    p.add_argument("--token", default=os.environ.get("RVMATTE_TOKEN"),
                   help="access token clients must send (default $RVMATTE_TOKEN; made up "
                        "and printed when binding to a non-loopback address without one)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=1024, help="upload limit (MB)")
    p.add_argument("--max-queued", type=int, default=100, help="jobs allowed to wait")
    p.add_argument("--retention-hours", type=float, default=24,
                   help="delete results and uploads this long after a job ends (0: keep)")
    p.add_argument("--checkpoint-frames", type=int, default=None,
                   help="frames between resume checkpoints (default: about 10 s of video)")
    p.add_argument("--variant", default="mobilenetv3", help="mobilenetv3 | resnet50")
    p.add_argument("--weights", type=_weights, default="default",
                   help="default (bundled), a .pth path, or none (random; testing only)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
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
    try:
        from ..server.app import ServerConfig
        from ..server.run import serve
    except ImportError as e:
        raise RvmatteError(f"the server needs its extra ({e.name} is missing): "
                           "pip install 'rvmatte[server]'") from None
    config = ServerConfig(data_dir=args.data_dir, host=args.host, token=args.token or None,
                          workers=args.workers,
                          max_upload_bytes=int(args.max_upload_mb * 1e6),
                          max_queued=args.max_queued,
                          retention_s=args.retention_hours * 3600, variant=args.variant,
                          weights=args.weights, device=args.device,
                          checkpoint_frames=args.checkpoint_frames, preload_model=True)
    serve(config, port=args.port, log_level=args.log_level)
    return 0
