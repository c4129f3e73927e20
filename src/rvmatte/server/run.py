"""Run the server with uvicorn (what ``rvmatte serve`` calls)."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Optional

from ..errors import RvmatteError
from ..spec import ModelSpec
from .app import ServerConfig, create_app, generate_token, is_loopback


def _check_port(host: str, port: int) -> None:
    """Fail with one line, before loading anything, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise RvmatteError(f"cannot listen on {host}:{port}: "
                               f"{e.strerror or e}") from None


def _uvicorn_server(uvicorn, app, **options):
    """uvicorn's server for ``app``, which on Ctrl-C (or SIGTERM) first tells the app's event
    streams to end (``app.state.closing``): pages following their jobs do not hold it up."""

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.closing.set()
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, **options))


def serve(config: ServerConfig, *, spec: Optional[ModelSpec] = None, port: int = 8000,
          log_level: str = "info") -> None:
    """Serve until interrupted. ``spec`` (when given) replaces ``config.spec``: the model
    every job and preview runs. Binding to a non-loopback address without a token makes one
    up and prints it. An unusable port or data directory is one line
    (:class:`~rvmatte.errors.RvmatteError`) before uvicorn starts."""
    try:
        import uvicorn
    except ImportError:
        raise RvmatteError("the server needs its extra: pip install 'rvmatte[server]'") from None
    if not is_loopback(config.host) and not config.token:
        config.token = generate_token()
        print(f"rvmatte: access token for this server: {config.token}", file=sys.stderr)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _check_port(config.host, port)
    app = create_app(config, spec=spec)
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}/" + (f"?token={config.token}" if config.token else "")
    print(f"rvmatte: web UI at {url}  (API docs at /docs)", file=sys.stderr, flush=True)
    server = _uvicorn_server(uvicorn, app, host=config.host, port=port, log_level=log_level,
                             timeout_graceful_shutdown=5)
    try:
        server.run()
    except OSError as e:  # e.g. the port is taken
        raise RvmatteError(f"cannot listen on {config.host}:{port}: {e.strerror or e}") from None
