"""HTTP API, job queue and web UI (``rvmatte serve``; needs the ``server`` extra).

``create_app(ServerConfig(data_dir=...))`` returns the FastAPI app; ``serve(...)`` runs it
with uvicorn. See docs/SERVER.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:  # keep `import rvmatte.server` free of FastAPI
    if name in ("ServerConfig", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)
