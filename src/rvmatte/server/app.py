"""The FastAPI application: HTTP API, upload checks, previews and the web UI.

``create_app(ServerConfig(...))`` builds an app whose life span starts and stops the
:class:`~rvmatte.server.jobs.JobManager`; the routes live on routers by area
(:mod:`.routes_jobs`, :mod:`.routes_uploads`, :mod:`.routes_web`) and find the config, the
store and the manager in ``request.app.state``. Errors are JSON:
``{"error": {"code": "...", "message": "..."}}`` with a fitting HTTP status
(:mod:`.responses`); who may do what is :mod:`.access`.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import InitVar, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI

from .. import __version__
from ..errors import RvmatteError
from ..spec import UNSET, ModelSpec
from . import routes_jobs, routes_uploads, routes_web
from . import store as st
from .access import TOKEN_COOKIE
from .jobs import ConvertRunner, JobManager
from .responses import ApiError, BodyLimit, install_error_handlers
from .routes_web import STATIC_DIR, local_swagger_ui, mount_web

log = logging.getLogger("rvmatte.server")


@dataclass
class ServerConfig:
    """Settings of one server. ``spec``: the model every job and preview runs (the job's own
    ratio wins over ``spec.downsample`` unless it is ``auto``). ``runner`` replaces the
    conversion of jobs (tests, other back ends). ``variant``, ``weights``, ``device``: the
    older keywords, folded into ``spec``."""

    data_dir: Path
    host: str = "127.0.0.1"
    token: Optional[str] = None
    workers: int = 1
    max_upload_bytes: int = 1 << 30
    max_queued: int = 100
    retention_s: float = 24 * 3600.0
    sweep_interval_s: float = 60.0
    spec: ModelSpec = field(default_factory=ModelSpec)
    runner: Any = None
    checkpoint_frames: Optional[int] = None  # frames between resume checkpoints
    preload_model: bool = False  # build the model at start-up, before the first job
    min_free_bytes: int = 256 << 20  # uploads and jobs wait for this much free disk
    max_storage_bytes: int = 0  # uploads + results the server keeps; 0: no limit
    retry_after_s: int = 30  # the Retry-After of a queue-full 503
    variant: InitVar[Any] = UNSET
    weights: InitVar[Any] = UNSET
    device: InitVar[Any] = UNSET

    def __post_init__(self, variant: Any, weights: Any, device: Any) -> None:
        self.spec = ModelSpec.of(self.spec, variant=variant, weights=weights, device=device)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _preload(spec: ModelSpec) -> None:
    """Build the model once, on one small frame, before the workers take jobs: the weights
    are checked and an export is cached at start-up, not in the first job. A failure is
    reported again, to the client, by the first job."""
    try:
        import numpy as np

        from ..inference.session import Matter

        # wider than 512 px: an auto ratio below 1, the path most jobs take
        Matter(spec).process(np.zeros((288, 768, 3), np.uint8))
    except RvmatteError as e:
        log.error("cannot load the model: %s", e)
    except Exception:  # a bug: logged; the jobs still run (and report it)
        log.exception("preloading the model failed")


def _manager(config: ServerConfig, store: st.JobStore, data_dir: Path) -> JobManager:
    runner = config.runner or ConvertRunner(config.spec,
                                            checkpoint_frames=config.checkpoint_frames)
    return JobManager(store, data_dir, runner, workers=config.workers,
                      max_queued=config.max_queued, retention_s=config.retention_s,
                      sweep_interval_s=config.sweep_interval_s,
                      min_free_bytes=config.min_free_bytes,
                      max_storage_bytes=config.max_storage_bytes)


def _import_request_modules() -> None:
    """Import what requests use lazily (the option parser, PyAV, Pillow) before the first
    one: an import on the event loop holds every other request, the longer while the model
    preload imports in another thread."""
    import av  # noqa: F401
    from PIL import Image  # noqa: F401

    from ..downsample import parse_downsample_ratio  # noqa: F401
    from ..post.people import Selection  # noqa: F401


def create_app(config: ServerConfig, *, spec: Optional[ModelSpec] = None) -> FastAPI:
    """The app of ``config``; ``spec`` (when given) replaces ``config.spec``: the model every
    job and every preview runs. The data directory is checked (one line if it cannot be
    used) and created here, before anything starts."""
    if spec is not None:
        config = replace(config, spec=spec)
    if not is_loopback(config.host) and not config.token:
        raise RvmatteError(f"binding to {config.host} (not loopback) needs an access token: "
                           "pass --token or set RVMATTE_TOKEN")
    data_dir = st.open_data_dir(config.data_dir)
    if config.spec.threads is not None:
        from ..hardware import set_threads

        set_threads(config.spec.threads)
    store = st.JobStore(data_dir / "jobs.sqlite3")
    manager = _manager(config, store, data_dir)

    closing = threading.Event()  # set when the server stops: event streams end

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _import_request_modules()
        manager.start(warmup=partial(_preload, config.spec) if config.preload_model else None)
        try:
            yield
        finally:
            closing.set()
            manager.stop()
            store.close()

    swagger_dir = local_swagger_ui()
    app = FastAPI(title="rvmatte", version=__version__, lifespan=lifespan,
                  docs_url=None if swagger_dir else "/docs",
                  description="Robust human video matting: upload a video, get the matte, "
                              "the foreground and composites over new backgrounds.")
    app.state.config, app.state.manager, app.state.store = config, manager, store
    app.state.closing = closing
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    install_error_handlers(app)
    for router in (routes_web.router, routes_uploads.router, routes_jobs.router):
        app.include_router(router)
    mount_web(app, swagger_dir)
    return app


def generate_token() -> str:
    return secrets.token_urlsafe(24)


__all__ = ["ServerConfig", "create_app", "is_loopback", "generate_token", "ApiError",
           "BodyLimit", "STATIC_DIR", "TOKEN_COOKIE"]
