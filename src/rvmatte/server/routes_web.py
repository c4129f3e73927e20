"""The web page, its static files, the API docs page and the health check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import openapi30
from . import store as st
from .access import TOKEN_COOKIE

STATIC_DIR = Path(__file__).with_name("static")
OPENAPI_30_URL = "/openapi-3.0.json"
router = APIRouter()


@router.get("/api/health", tags=["server"])
def health(request: Request):
    """Liveness and queue size (no token needed): ``status`` "ok", or "degraded" with
    ``problems`` (a stopped worker, low disk, results not yet recorded) and HTTP 503."""
    state = request.app.state
    problems = state.manager.health()
    body: dict[str, Any] = {"status": "degraded" if problems else "ok", "version": __version__,
                            "workers": state.manager.workers,
                            "token_required": bool(state.config.token), "problems": problems}
    try:
        body.update(queued=state.store.count(st.QUEUED), running=state.store.count(st.RUNNING))
    except Exception as e:  # the database itself
        body.update(status="degraded", problems=[*problems, f"database: {e}"])
    return JSONResponse(body, status_code=503 if body["status"] != "ok" else 200)


@router.get("/", include_in_schema=False)
def index(token: Optional[str] = None):
    if token is not None:  # /?token=...: remember it in a cookie, drop it from the URL
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(OPENAPI_30_URL, include_in_schema=False)
def openapi_30(request: Request) -> JSONResponse:
    """The API's OpenAPI document written as 3.0, for the bundled Swagger UI 4."""
    state = request.app.state
    if getattr(state, "openapi_30", None) is None:
        state.openapi_30 = openapi30.downgrade(request.app.openapi())
    return JSONResponse(state.openapi_30)


def local_swagger_ui() -> Optional[Path]:
    """Swagger UI's static files from the ``swagger-ui-bundle`` package, if installed."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _swagger_page():
    from fastapi.openapi.docs import get_swagger_ui_html

    # Swagger UI 4 reads OpenAPI 3.0 only: it gets the 3.0 copy of the document.
    return get_swagger_ui_html(openapi_url=OPENAPI_30_URL, title="rvmatte API",
                               swagger_js_url="/_swagger/swagger-ui-bundle.js",
                               swagger_css_url="/_swagger/swagger-ui.css",
                               swagger_favicon_url="/_swagger/favicon-32x32.png")


def mount_web(app: FastAPI, swagger_dir: Optional[Path]) -> None:
    """The page's static files and, when ``swagger_dir`` holds Swagger UI, ``/docs`` served
    from it (FastAPI's default page loads it from a CDN: blank without internet access)."""
    if swagger_dir is not None:
        app.mount("/_swagger", StaticFiles(directory=str(swagger_dir)), name="swagger")
        app.add_api_route("/docs", _swagger_page, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
