"""The FastAPI application: HTTP API, upload checks, previews and the web UI.

``create_app(ServerConfig(...))`` builds an app whose life span starts and stops the
:class:`~rvmatte.server.jobs.JobManager`. Errors are JSON:
``{"error": {"code": "...", "message": "..."}}`` with a fitting HTTP status.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import tempfile
from contextlib import asynccontextmanager
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError, RvmatteError
from ..spec import UNSET, ModelSpec
from . import media
from . import store as st
from .jobs import (OUTPUT_KINDS, ConvertRunner, JobManager, QueueFull, convert_job, is_id,
                   new_id, parse_options)

log = logging.getLogger("rvmatte.server")
STATIC_DIR = Path(__file__).with_name("static")
TOKEN_COOKIE = "rvmatte_token"
_CHUNK = 1 << 20


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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


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
            return await _error(413, "too_large", message)(scope, receive, send)
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
            await _error(413, "too_large", message)(scope, receive, send)


def _local_swagger_ui() -> Optional[Path]:
    """Swagger UI's static files from the ``swagger-ui-bundle`` package, if installed."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def create_app(config: ServerConfig, *, spec: Optional[ModelSpec] = None) -> FastAPI:
    """The app of ``config``; ``spec`` (when given) replaces ``config.spec``: the model every
    job and every preview runs. The data directory is checked (one line if it cannot be
    used) and created here, before anything starts."""
    if spec is not None:
        config = replace(config, spec=spec)
    spec = config.spec
    if not is_loopback(config.host) and not config.token:
        raise RvmatteError(f"binding to {config.host} (not loopback) needs an access token: "
                           "pass --token or set RVMATTE_TOKEN")
    data_dir = st.open_data_dir(config.data_dir)
    if spec.threads is not None:
        from ..hardware import set_threads

        set_threads(spec.threads)

    def _preload() -> None:
        """Build the model once, on one small frame, before the workers take jobs: the
        weights are checked and an export is cached at start-up, not in the first job. A
        failure is reported again, to the client, by the first job."""
        try:
            import numpy as np

            from ..inference.session import Matter

            # wider than 512 px: an auto ratio below 1, the path most jobs take
            Matter(spec).process(np.zeros((288, 768, 3), np.uint8))
        except RvmatteError as e:
            log.error("cannot load the model: %s", e)
        except Exception:  # a bug: logged; the jobs still run (and report it)
            log.exception("preloading the model failed")

    store = st.JobStore(data_dir / "jobs.sqlite3")
    runner = config.runner or ConvertRunner(spec, checkpoint_frames=config.checkpoint_frames)
    manager = JobManager(store, data_dir, runner, workers=config.workers,
                         max_queued=config.max_queued, retention_s=config.retention_s,
                         sweep_interval_s=config.sweep_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start(warmup=_preload if config.preload_model else None)
        try:
            yield
        finally:
            manager.stop()
            store.close()

    swagger_dir = _local_swagger_ui()
    app = FastAPI(title="rvmatte", version=__version__, lifespan=lifespan,
                  docs_url=None if swagger_dir else "/docs",
                  description="Robust human video matting: upload a video, get the matte, "
                              "the foreground and composites over new backgrounds.")
    if swagger_dir:
        # Serve Swagger UI's files ourselves: the default page loads them from a CDN, which
        # leaves /docs blank on machines without internet access.
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/_swagger", StaticFiles(directory=str(swagger_dir)), name="swagger")

        @app.get("/docs", include_in_schema=False)
        async def _docs():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="rvmatte API",
                                       swagger_js_url="/_swagger/swagger-ui-bundle.js",
                                       swagger_css_url="/_swagger/swagger-ui.css",
                                       swagger_favicon_url="/_swagger/favicon-32x32.png")
    app.state.config = config
    app.state.manager = manager
    app.state.store = store
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)

    # -- errors ----------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        return _error(503, "queue_full", str(exc))

    @app.exception_handler(RvmatteError)
    async def _user_error(request: Request, exc: RvmatteError):
        return _error(422, "invalid", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _error(422, "invalid", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 400: "bad_request"}
        return _error(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))

    # -- access token ------------------------------------------------------------------
    def require_token(request: Request) -> None:
        if not config.token:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else ""
        given = (given or request.headers.get("x-rvmatte-token")
                 or request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or "")
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong access token "
                           "(send 'Authorization: Bearer TOKEN' or open /?token=TOKEN)")

    auth = [Depends(require_token)]

    # -- helpers -----------------------------------------------------------------------
    def job_json(job: dict[str, Any]) -> dict[str, Any]:
        total = job["total_frames"]
        done = job["done_frames"]
        frac = (min(done / total, 1.0) if total else None)
        if job["state"] == st.DONE:
            frac = 1.0
        base = f"/api/jobs/{job['id']}"
        results = ({k: f"{base}/result/{k}" for k in job["outputs"]}
                   if job["state"] == st.DONE else {})
        return {
            "id": job["id"], "state": job["state"], "filename": job["filename"],
            "options": {k: v for k, v in job["options"].items() if k != "background"}
            | {"background": job["options"]["background"]["spec"]
               or job["options"]["background"]["kind"]},
            "progress": {"done": done, "total": total, "fraction": frac},
            "fps": job["fps"], "eta_seconds": job["eta_seconds"], "error": job["error"],
            "attempts": job["attempts"], "resumed_from": job["resumed_from"],
            "created_at": job["created_at"],
            "started_at": job["started_at"], "finished_at": job["finished_at"],
            "results": results, "url": base,
        }

    def upload_json(up: dict[str, Any]) -> dict[str, Any]:
        return {"id": up["id"], "kind": up["kind"], "filename": up["filename"],
                "size": up["size"], **up["info"],
                "preview_url": (f"/api/uploads/{up['id']}/preview"
                                if up["kind"] == "video" else None)}

    async def save_upload(file: UploadFile, kind: str) -> dict[str, Any]:
        """Stream ``file`` to a server-chosen name, check its type by content, record it."""
        if file is None or not isinstance(file, StarletteUploadFile):
            raise ApiError(422, "invalid", f"missing {kind} file")
        uid = new_id()
        part = manager.uploads_dir / f"{uid}.part"
        size = 0
        head = b""
        try:
            with open(part, "xb") as out:
                while chunk := await file.read(_CHUNK):
                    size += len(chunk)
                    if size > config.max_upload_bytes:
                        raise ApiError(413, "too_large", "upload too large: the limit is "
                                       f"{config.max_upload_bytes / 1e6:.1f} MB")
                    if len(head) < 512:
                        head += chunk[:512 - len(head)]
                    out.write(chunk)
            if size == 0:
                raise ApiError(422, "empty_file", f"the uploaded {kind} file is empty")
            ext = (media.sniff_video if kind == "video" else media.sniff_image)(head)
            if ext is None:
                want = ("a video (mp4, mov, mkv, webm, avi, gif)" if kind == "video"
                        else "an image (png, jpeg, webp)")
                raise ApiError(415, "unsupported_type",
                               f"{media.display_name(file.filename)} is not {want} "
                               "(checked by content, not by name)")
            final = manager.uploads_dir / f"{uid}{ext}"
            os.replace(part, final)
            part = final
            try:
                info = (media.probe_video if kind == "video" else media.probe_image)(final)
            except InputError as e:
                raise ApiError(415, "unsupported_type",
                               f"{media.display_name(file.filename)}: {e}") from None
            return store.add_upload(id=uid, kind=kind,
                                    path=str(final.relative_to(data_dir)),
                                    filename=media.display_name(file.filename, kind),
                                    size=size, info=info)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            await file.close()

    def get_upload_or_404(upload_id: str, kind: str) -> dict[str, Any]:
        up = store.get_upload(upload_id) if is_id(upload_id) else None
        if up is None or up["kind"] != kind:
            raise ApiError(404, "not_found", f"no {kind} upload {upload_id!r}")
        return up

    def get_job_or_404(job_id: str) -> dict[str, Any]:
        job = store.get_job(job_id) if is_id(job_id) else None
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    # -- routes ------------------------------------------------------------------------
    @app.get("/api/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness and queue size (no token needed)."""
        return {"status": "ok", "version": __version__, "workers": manager.workers,
                "queued": store.count(st.QUEUED), "running": store.count(st.RUNNING),
                "token_required": bool(config.token)}

    @app.post("/api/uploads", status_code=201, dependencies=auth, tags=["uploads"])
    async def upload(file: UploadFile = File(..., description="a video, or an image to "
                                             "use as background"),
                     kind: str = Form("video", description="video | image")) -> dict:
        """Upload a video (to preview, then convert) or a background image."""
        if kind not in ("video", "image"):
            raise ApiError(422, "invalid", "kind must be 'video' or 'image'")
        return upload_json(await save_upload(file, kind))

    @app.get("/api/uploads/{upload_id}", dependencies=auth, tags=["uploads"])
    def get_upload(upload_id: str) -> dict:
        up = store.get_upload(upload_id) if is_id(upload_id) else None
        if up is None:
            raise ApiError(404, "not_found", f"no upload {upload_id!r}")
        return upload_json(up)

    @app.get("/api/uploads/{upload_id}/preview", dependencies=auth, tags=["uploads"],
             response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def preview(upload_id: str,
                background: str = Query("green", description="as in POST /api/jobs"),
                background_upload: Optional[str] = Query(None),
                ratio: str = Query("auto"),
                view: str = Query("composite", description="composite | alpha"),
                frame: int = Query(0, ge=0, le=3000, description="frame index")) -> Response:
        """PNG preview of the matte on one frame, before running the whole video: that
        frame converted as the job would convert it (same model, background and ratio; the
        recurrent state starts afresh at the frame), so frame 0 is the job's first frame."""
        up = get_upload_or_404(upload_id, "video")
        if view not in ("composite", "alpha"):
            raise ApiError(422, "invalid", "view must be 'composite' or 'alpha'")
        opts = parse_options(outputs="composite" if view == "composite" else "alpha",
                             background=background, format=None, ratio=ratio,
                             background_upload=background_upload)
        if opts["background"]["kind"] == "image":
            get_upload_or_404(background_upload or "", "image")
        frames = up["info"].get("frames")
        if frames:  # the last frame for an index past the end, as before
            frame = min(frame, frames - 1)
        task = manager.spec_for({"id": "preview", "upload_id": up["id"], "options": opts})
        with tempfile.TemporaryDirectory(prefix="rvmatte-preview-") as tmp:
            out = Path(tmp) / "%06d.png"
            convert_job(replace(task, outputs={view: out}, workdir=Path(tmp)), spec,
                        start=f"{frame}f", end=f"{frame + 1}f")
            made = sorted(Path(tmp).glob("*.png"))
            if not made:
                raise ApiError(422, "invalid", f"frame {frame} could not be decoded")
            png = made[0].read_bytes()
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/jobs", status_code=201, dependencies=auth, tags=["jobs"])
    async def create_job(
        file: Optional[UploadFile] = File(None, description="the video (or give upload_id)"),
        upload_id: Optional[str] = Form(None, description="id from POST /api/uploads"),
        outputs: str = Form("composite", description="comma list of composite, alpha, "
                            "foreground"),
        background: str = Form("green", description="colour name or #rrggbb, blur, "
                               "blur:RADIUS, transparent, or image (with background_file "
                               "or background_upload)"),
        background_file: Optional[UploadFile] = File(None),
        background_upload: Optional[str] = Form(None),
        format: Optional[str] = Form(None, description="mp4 | webm | mov "
                                     "(default mp4; webm when transparent)"),
        ratio: str = Form("auto", description="downsample ratio: auto or (0, 1]"),
    ) -> dict:
        """Queue a conversion. Options are those of ``rvmatte convert``."""
        if (file is None) == (not upload_id):
            raise ApiError(422, "invalid", "send exactly one of: file (the video) or upload_id")
        if background_file is not None and background_upload:
            raise ApiError(422, "invalid", "send background_file or background_upload, "
                           "not both")
        # Validate the options before storing anything.
        parse_options(outputs=outputs, background=background, format=format, ratio=ratio,
                      background_upload="pending" if (background_file is not None
                                                      or background_upload) else None)
        if background_upload:
            get_upload_or_404(background_upload, "image")
        up = (get_upload_or_404(upload_id, "video") if upload_id
              else await save_upload(file, "video"))  # type: ignore[arg-type]
        if background_file is not None:
            background_upload = (await save_upload(background_file, "image"))["id"]
        opts = parse_options(outputs=outputs, background=background, format=format,
                             ratio=ratio, background_upload=background_upload)
        return job_json(manager.submit(up, opts))

    @app.get("/api/jobs", dependencies=auth, tags=["jobs"])
    def list_jobs(limit: int = Query(100, ge=1, le=1000)) -> dict:
        """Jobs, newest first."""
        return {"jobs": [job_json(j) for j in store.list_jobs(limit)]}

    @app.get("/api/jobs/{job_id}", dependencies=auth, tags=["jobs"])
    def get_job(job_id: str) -> dict:
        """State, progress, fps, ETA and error of a job."""
        return job_json(get_job_or_404(job_id))

    def send_result(job_id: str, kind: Optional[str]) -> FileResponse:
        job = get_job_or_404(job_id)
        if kind is not None and kind not in OUTPUT_KINDS:
            raise ApiError(404, "not_found", f"unknown output {kind!r}; outputs are "
                           f"{', '.join(OUTPUT_KINDS)}")
        if job["state"] != st.DONE:
            raise ApiError(409, "not_ready", f"job {job_id} is {job['state']}, not done")
        if kind is None:
            kind = next((k for k in OUTPUT_KINDS if k in job["outputs"]), None)
        path = manager.output_path(job, kind) if kind else None
        if path is None:
            raise ApiError(404, "not_found", f"job {job_id} has no {kind} output")
        stem = Path(job["filename"]).stem or "video"
        media_type = {".mp4": "video/mp4", ".webm": "video/webm",
                      ".mov": "video/quicktime"}.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media_type,
                            filename=f"{stem}_{kind}{path.suffix}")

    @app.get("/api/jobs/{job_id}/result", dependencies=auth, tags=["jobs"],
             response_class=FileResponse)
    def result(job_id: str):
        """The main result: the composite if requested, else the first output."""
        return send_result(job_id, None)

    @app.get("/api/jobs/{job_id}/result/{kind}", dependencies=auth, tags=["jobs"],
             response_class=FileResponse)
    def result_kind(job_id: str, kind: str):
        """One output: composite, alpha or foreground."""
        return send_result(job_id, kind)

    @app.delete("/api/jobs/{job_id}", dependencies=auth, tags=["jobs"])
    def delete_job(job_id: str) -> dict:
        """Cancel a job if it is running, and delete it with its files."""
        get_job_or_404(job_id)
        manager.delete(job_id)
        return {"id": job_id, "deleted": True}

    # -- web UI ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index(request: Request, token: Optional[str] = None):
        if token is not None:  # /?token=...: remember it in a cookie, drop it from the URL
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return resp
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def generate_token() -> str:
    return secrets.token_urlsafe(24)


__all__ = ["ServerConfig", "create_app", "is_loopback", "generate_token"]
