"""What the API answers: JSON errors, the body-size limit, and the JSON of jobs and uploads.

Errors are ``{"error": {"code": "...", "message": "..."}}`` with a fitting HTTP status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RvmatteError
from . import store as st
from .jobs import QueueFull, StorageFull


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
               400: "bad_request"}


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app raises answered as the JSON error above."""

    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    async def queue_full(request: Request, exc: QueueFull):
        resp = error_response(503, "queue_full", str(exc))
        resp.headers["Retry-After"] = str(request.app.state.config.retry_after_s)
        return resp

    async def storage_full(request: Request, exc: StorageFull):
        return error_response(507, "insufficient_storage", str(exc))

    async def user_error(request: Request, exc: RvmatteError):
        return error_response(422, "invalid", str(exc))

    async def validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error_response(422, "invalid", "; ".join(parts) or "invalid request")

    async def http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"),
                              str(exc.detail))

    async def unexpected(request: Request, exc: Exception):
        # a bug or the machine (a full disk, a database error): still the JSON error
        import logging

        logging.getLogger("rvmatte.server").exception("%s %s failed", request.method,
                                                      request.url.path)
        if isinstance(exc, OSError) and exc.errno == 28 or "disk is full" in str(exc):
            return error_response(507, "insufficient_storage",
                                  "the server's disk is full; try again later")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}")

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(StorageFull, storage_full)
    app.add_exception_handler(RvmatteError, user_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a 413.

    Checks ``Content-Length`` up front and counts the bytes actually received, so a client
    that lies about (or omits) the length is cut off too.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        message = f"upload too large: the limit is {self.limit / 1e6:.1f} MB"
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await error_response(413, "too_large", message)(scope, receive, send)
        seen = 0
        exceeded = False
        started = False

        async def counted_receive():
            nonlocal seen, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLarge()
            return msg

        async def guarded_send(msg):
            nonlocal started
            if exceeded:
                return  # drop the app's own error response; ours goes out below
            started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            exceeded = True
        if exceeded and not started:
            await error_response(413, "too_large", message)(scope, receive, send)


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (the owner is never shown)."""
    total = job["total_frames"]
    done = job["done_frames"]
    frac = (min(done / total, 1.0) if total else None)
    if job["state"] == st.DONE:
        frac = 1.0
    base = f"/api/jobs/{job['id']}"
    results = ({k: f"{base}/result/{k}" for k in job["outputs"]}
               if job["state"] == st.DONE else {})
    options = dict(job["options"])
    bg = options.pop("background")
    return {
        "id": job["id"], "state": job["state"], "filename": job["filename"],
        "options": options | {"background": bg["spec"] or bg["kind"]},
        "progress": {"done": done, "total": total, "fraction": frac},
        "fps": job["fps"], "eta_seconds": job["eta_seconds"], "error": job["error"],
        "attempts": job["attempts"], "resumed_from": job["resumed_from"],
        "created_at": job["created_at"],
        "started_at": job["started_at"], "finished_at": job["finished_at"],
        "results": results, "url": base,
        "source": f"{base}/source", "thumbnail": f"{base}/thumbnail",
        "events": f"{base}/events",
    }


def upload_json(up: dict[str, Any]) -> dict[str, Any]:
    return {"id": up["id"], "kind": up["kind"], "filename": up["filename"],
            "size": up["size"], **up["info"],
            "preview_url": (f"/api/uploads/{up['id']}/preview"
                            if up["kind"] == "video" else None)}
