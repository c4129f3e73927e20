"""HTTP API, job queue and web UI (``rvmatte serve``; needs the ``server`` extra).

``create_app(ServerConfig(data_dir=...), spec=ModelSpec(...))`` returns the FastAPI app;
``serve(config, spec=..., port=...)`` runs it with uvicorn. Every job and every preview runs
the spec's model through :func:`rvmatte.inference.convert.convert_video`. See docs/SERVER.md.
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
