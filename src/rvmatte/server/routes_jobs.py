"""Routes of jobs: create, list, read, follow (server-sent events), download, delete.

Listing and deleting follow the request's :class:`~rvmatte.server.access.Scope` (the owner
key of the browser that made a job); reading one job needs its id only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import InputError
from . import events, media
from . import store as st
from .access import Scope, job_scope, require_token
from .jobs import OUTPUT_KINDS, is_id, parse_options
from .responses import ApiError, job_json
from .routes_uploads import get_upload_or_404, save_upload

router = APIRouter(dependencies=[Depends(require_token)], tags=["jobs"])
_MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
                ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".gif": "image/gif",
                ".mpg": "video/mpeg", ".ts": "video/mp2t"}
_EVENT_STREAM = {200: {"content": {"text/event-stream": {}}}}


def get_job_or_404(request: Request, job_id: str) -> dict[str, Any]:
    store = request.app.state.store
    job = store.get_job(job_id) if is_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


@router.post("/api/jobs", status_code=201)
async def create_job(
    request: Request,
    scope: Scope = Depends(job_scope),
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
    stabilize: bool = Form(False, description="temporal stabilisation of the matte "
                           "(convert --stabilize)"),
    foreground_estimation: Optional[bool] = Form(
        None, description="re-estimate the foreground colours from the frame and the matte "
        "(convert --foreground-estimation; default: on where the server's network runs on "
        "the CPU)"),
    select: Optional[str] = Form(None, description="keep the person at X,Y (pixels of the "
                                 "video); several: X,Y;X,Y"),
    select_box: Optional[str] = Form(None, description="keep the people mostly inside "
                                     "X0,Y0,X1,Y1"),
    people: Optional[int] = Form(None, ge=1, description="keep the N largest people"),
    select_frame: Optional[int] = Form(None, ge=0, description="the frame the selection "
                                       "refers to (default 0)"),
    select_mask_file: Optional[UploadFile] = File(None, description="a mask image (white: "
                                                  "the people to keep) of the selection "
                                                  "frame (convert --select-mask)"),
    select_mask_upload: Optional[str] = Form(None, description="or an uploaded mask's id"),
    plate_file: Optional[UploadFile] = File(None, description="an image of the empty scene "
                                            "from the same camera "
                                            "(convert --background-plate)"),
    plate_upload: Optional[str] = Form(None, description="or an uploaded plate's id"),
) -> dict:
    """Queue a conversion. Options are those of ``rvmatte convert``. With an
    ``X-Rvmatte-Owner`` header the job belongs to that key (see ``GET /api/jobs``). Each
    image (background, selection mask, plate) is sent as a file or as the id of an upload."""
    if (file is None) == (not upload_id):
        raise ApiError(422, "invalid", "send exactly one of: file (the video) or upload_id")
    images = {"background": (background_file, background_upload),
              "select_mask": (select_mask_file, select_mask_upload),
              "plate": (plate_file, plate_upload)}
    for name, (sent, given) in images.items():
        if sent is not None and given:
            raise ApiError(422, "invalid", f"send {name}_file or {name}_upload, not both")
    post = dict(stabilize=stabilize, foreground_estimation=foreground_estimation,
                select=select, select_box=select_box, people=people,
                select_frame=select_frame)
    # Validate the options before storing anything.
    parse_options(outputs=outputs, background=background, format=format, ratio=ratio, **post,
                  **{f"{n}_upload": "pending" if (f is not None or u) else None
                     for n, (f, u) in images.items()})
    for _, given in images.values():
        if given:
            get_upload_or_404(request, given, "image")
    manager = request.app.state.manager
    manager.check_queue()  # a full queue answers before the upload is received
    made = []  # the uploads this request made: a job refused after them takes them back
    try:
        if upload_id:
            up = get_upload_or_404(request, upload_id, "video")
        else:
            up = await save_upload(request, file, "video", owner=scope.owner)
            made.append(up)
        ids = {}
        for name, (sent, given) in images.items():
            if sent is not None:
                made.append(await save_upload(request, sent, "image", owner=scope.owner))
                given = made[-1]["id"]
            ids[f"{name}_upload"] = given
        opts = parse_options(outputs=outputs, background=background, format=format,
                             ratio=ratio, **post, **ids)
        return job_json(await run_in_threadpool(manager.submit, up, opts, owner=scope.owner))
    except BaseException as e:
        for u in made:
            manager.delete_upload(u, f"its job was refused ({type(e).__name__}: {e})")
        raise


@router.get("/api/jobs")
def list_jobs(request: Request, scope: Scope = Depends(job_scope),
              limit: int = Query(100, ge=1, le=1000)) -> dict:
    """Jobs, newest first: those of the request's ``X-Rvmatte-Owner`` key; without a key,
    those made without one (every job, when the server has a token)."""
    jobs = request.app.state.store.list_jobs(limit, owner=scope.listing)
    return {"jobs": [job_json(j) for j in jobs]}


@router.get("/api/events", response_class=StreamingResponse, responses=_EVENT_STREAM)
def follow_jobs(request: Request, scope: Scope = Depends(job_scope),
                limit: int = Query(100, ge=1, le=1000)) -> StreamingResponse:
    """Server-sent events of the jobs ``GET /api/jobs`` lists: a ``snapshot``
    (``{"jobs": [...]}``), then ``job`` (a job that appeared or changed) and ``deleted``
    (``{"id": ...}``)."""
    state = request.app.state
    stream = events.list_events(state.store, scope.listing, limit, closing=state.closing)
    return StreamingResponse(stream, media_type="text/event-stream", headers=events.HEADERS)


@router.get("/api/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict:
    """State, progress, fps, ETA and error of a job."""
    return job_json(get_job_or_404(request, job_id))


@router.get("/api/jobs/{job_id}/events", response_class=StreamingResponse,
            responses=_EVENT_STREAM)
def follow_job(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: ``job`` (the job, as ``GET /api/jobs/{id}``) each time it
    changes; the stream ends once the job has finished (``deleted`` if it is deleted)."""
    get_job_or_404(request, job_id)
    state = request.app.state
    stream = events.job_events(state.store, job_id, closing=state.closing)
    return StreamingResponse(stream, media_type="text/event-stream", headers=events.HEADERS)


def _send_result(request: Request, job_id: str, kind: Optional[str]) -> FileResponse:
    job = get_job_or_404(request, job_id)
    if kind is not None and kind not in OUTPUT_KINDS:
        raise ApiError(404, "not_found", f"unknown output {kind!r}; outputs are "
                       f"{', '.join(OUTPUT_KINDS)}")
    if job["state"] != st.DONE:
        raise ApiError(409, "not_ready", f"job {job_id} is {job['state']}, not done")
    if kind is None:
        kind = next((k for k in OUTPUT_KINDS if k in job["outputs"]), None)
    path = request.app.state.manager.output_path(job, kind) if kind else None
    if path is None:
        raise ApiError(404, "not_found", f"job {job_id} has no {kind} output")
    stem = Path(job["filename"]).stem or "video"
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix,
                                                          "application/octet-stream"),
                        filename=f"{stem}_{kind}{path.suffix}")


@router.get("/api/jobs/{job_id}/result", response_class=FileResponse)
def result(request: Request, job_id: str):
    """The main result: the composite if requested, else the first output."""
    return _send_result(request, job_id, None)


@router.get("/api/jobs/{job_id}/result/{kind}", response_class=FileResponse)
def result_kind(request: Request, job_id: str, kind: str):
    """One output: composite, alpha or foreground."""
    return _send_result(request, job_id, kind)


@router.get("/api/jobs/{job_id}/source", response_class=FileResponse)
def source(request: Request, job_id: str):
    """The uploaded video of a job (the "before" of the page's before/after view)."""
    job = get_job_or_404(request, job_id)
    path = request.app.state.manager.source_path(job)
    if path is None:
        raise ApiError(404, "not_found", f"the uploaded video of job {job_id} is gone")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix,
                                                          "application/octet-stream"),
                        content_disposition_type="inline", filename=job["filename"])


@router.get("/api/jobs/{job_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(request: Request, job_id: str,
              width: int = Query(160, ge=16, le=640)) -> Response:
    """A JPEG of the first frame of the job's video, ``width`` pixels wide."""
    job = get_job_or_404(request, job_id)
    path = request.app.state.manager.source_path(job)
    try:
        if path is None:
            raise InputError("gone")
        jpeg = media.thumbnail(path, width)
    except InputError:
        raise ApiError(404, "not_found", f"no thumbnail for job {job_id}") from None
    return Response(jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/api/jobs/{job_id}")
def delete_job(request: Request, job_id: str, scope: Scope = Depends(job_scope)) -> dict:
    """Cancel a job if it is running, and delete it with its files. Only the owner key that
    made the job (or the server token) may; to others the job does not exist (404)."""
    job = get_job_or_404(request, job_id)
    if not scope.may_delete(job):
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    request.app.state.manager.delete(job_id)
    return {"id": job_id, "deleted": True}
