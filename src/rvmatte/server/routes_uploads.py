"""Routes of uploads: ``POST /api/uploads``, ``GET`` and ``DELETE /api/uploads/{id}`` and the
one-frame preview ``GET /api/uploads/{id}/preview``. Uploads are checked by content, never by
name. :func:`save_upload` is the one place that stores an upload (a job's video, a background
image): it does its file and database work in a thread, never on the event loop."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Optional

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile

from ..errors import InputError
from . import media
from .access import Scope, job_scope, require_token
from .jobs import JobManager, convert_job, is_id, new_id, parse_options
from .responses import ApiError, upload_json

router = APIRouter(dependencies=[Depends(require_token)], tags=["uploads"])
_CHUNK = 1 << 20
_WANT = {"video": "a video (mp4, mov, mkv, webm, avi, gif)",
         "image": "an image (png, jpeg, webp)"}


def _receive(file: BinaryIO, part: Path, limit: int) -> tuple[int, bytes]:
    """Copy ``file`` into ``part``; return its size and its first 512 bytes."""
    size = 0
    head = b""
    with open(part, "xb") as out:
        while chunk := file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", "upload too large: the limit is "
                               f"{limit / 1e6:.1f} MB")
            if len(head) < 512:
                head += chunk[:512 - len(head)]
            out.write(chunk)
    return size, head


def _checked(part: Path, head: bytes, kind: str, filename: Optional[str]) -> tuple[Path, dict]:
    """Rename ``part`` after the type its bytes show, probe it; return (path, info)."""
    ext = (media.sniff_video if kind == "video" else media.sniff_image)(head)
    if ext is None:
        raise ApiError(415, "unsupported_type", f"{media.display_name(filename)} is not "
                       f"{_WANT[kind]} (checked by content, not by name)")
    final = part.with_name(part.stem + ext)
    os.replace(part, final)
    try:
        info = (media.probe_video if kind == "video" else media.probe_image)(final)
    except InputError as e:
        final.unlink(missing_ok=True)
        raise ApiError(415, "unsupported_type",
                       f"{media.display_name(filename)}: {e}") from None
    return final, info


async def save_upload(request: Request, file: Any, kind: str,
                      owner: Optional[str] = None) -> dict[str, Any]:
    """Store ``file`` (a received form field) as an upload of ``kind`` (``video`` or
    ``image``) owned by ``owner``; return its record. Refused with 507 when the disk or the
    storage limit cannot take this request's declared size."""
    if file is None or not isinstance(file, StarletteUploadFile):
        raise ApiError(422, "invalid", f"missing {kind} file")
    state = request.app.state
    try:
        incoming = int(request.headers.get("content-length") or 0)
        await run_in_threadpool(state.manager.check_space, incoming)
        return await run_in_threadpool(store_upload, state.manager, file.file, file.filename,
                                       kind, owner, state.config.max_upload_bytes)
    finally:
        await file.close()


def store_upload(manager: JobManager, file: BinaryIO, filename: Optional[str], kind: str,
                 owner: Optional[str], limit: int) -> dict[str, Any]:
    """Copy ``file`` to a server-chosen name, check its type by content, record it
    (blocking: call it in a thread). Nothing is left behind when it fails."""
    uid = new_id()
    part = manager.uploads_dir / f"{uid}.part"
    final = None
    try:
        size, head = _receive(file, part, limit)
        if size == 0:
            raise ApiError(422, "empty_file", f"the uploaded {kind} file is empty")
        final, info = _checked(part, head, kind, filename)
        return manager.store.add_upload(
            id=uid, kind=kind, path=str(final.relative_to(manager.data_dir)),
            filename=media.display_name(filename, kind), size=size, info=info, owner=owner)
    except BaseException:
        part.unlink(missing_ok=True)
        if final is not None:
            final.unlink(missing_ok=True)
        raise


def get_upload_or_404(request: Request, upload_id: str, kind: str) -> dict[str, Any]:
    store = request.app.state.store
    up = store.get_upload(upload_id) if is_id(upload_id) else None
    if up is None or up["kind"] != kind:
        raise ApiError(404, "not_found", f"no {kind} upload {upload_id!r}")
    return up


@router.post("/api/uploads", status_code=201)
async def upload(request: Request, scope: Scope = Depends(job_scope),
                 file: UploadFile = File(..., description="a video, or an image to use as "
                                         "background"),
                 kind: str = Form("video", description="video | image")) -> dict:
    """Upload a video (to preview, then convert) or a background image. With an
    ``X-Rvmatte-Owner`` header the upload belongs to that key (see ``DELETE``)."""
    if kind not in ("video", "image"):
        raise ApiError(422, "invalid", "kind must be 'video' or 'image'")
    return upload_json(await save_upload(request, file, kind, owner=scope.owner))


def _get_upload(request: Request, upload_id: str) -> dict[str, Any]:
    up = request.app.state.store.get_upload(upload_id) if is_id(upload_id) else None
    if up is None:
        raise ApiError(404, "not_found", f"no upload {upload_id!r}")
    return up


@router.get("/api/uploads/{upload_id}")
def get_upload(request: Request, upload_id: str) -> dict:
    return upload_json(_get_upload(request, upload_id))


@router.delete("/api/uploads/{upload_id}")
def delete_upload(request: Request, upload_id: str, scope: Scope = Depends(job_scope)) -> dict:
    """Delete an upload and its file. Only the owner key that made it (or the server token)
    may, to others it is 404; 409 while a queued or running job still uses it."""
    up = _get_upload(request, upload_id)
    if not scope.may_delete(up):
        raise ApiError(404, "not_found", f"no upload {upload_id!r}")
    if not request.app.state.manager.delete_unused_upload(up, "deleted by request"):
        raise ApiError(409, "in_use", f"upload {upload_id} is used by a queued or running "
                       "job; delete the job first")
    return {"id": upload_id, "deleted": True}


@router.get("/api/uploads/{upload_id}/preview", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def preview(request: Request, upload_id: str,
            background: str = Query("green", description="as in POST /api/jobs"),
            background_upload: Optional[str] = Query(None),
            ratio: str = Query("auto"),
            view: str = Query("composite", description="composite | alpha"),
            frame: int = Query(0, ge=0, le=3000, description="frame index"),
            select: Optional[str] = Query(None, description="keep the person at X,Y of this "
                                          "frame (several: X,Y;X,Y), as in POST /api/jobs"),
            select_mask_upload: Optional[str] = Query(None, description="keep the people "
                                                      "of this uploaded mask of this frame"),
            plate_upload: Optional[str] = Query(None, description="an uploaded image of the "
                                                "empty scene, as in POST /api/jobs"),
            ) -> Response:
    """PNG preview of the matte on one frame, before running the whole video: that
    frame converted as the job would convert it (same model, background and ratio; the
    recurrent state starts afresh at the frame), so frame 0 is the job's first frame."""
    up = get_upload_or_404(request, upload_id, "video")
    if view not in ("composite", "alpha"):
        raise ApiError(422, "invalid", "view must be 'composite' or 'alpha'")
    opts = parse_options(outputs="composite" if view == "composite" else "alpha",
                         background=background, format=None, ratio=ratio,
                         background_upload=background_upload, select=select,
                         select_mask_upload=select_mask_upload, plate_upload=plate_upload)
    if opts["background"]["kind"] == "image":
        get_upload_or_404(request, background_upload or "", "image")
    for given in (select_mask_upload, plate_upload):
        if given:
            get_upload_or_404(request, given, "image")
    frames = up["info"].get("frames")
    if frames:  # the last frame for an index past the end, as before
        frame = min(frame, frames - 1)
    png = _preview_png(request, up, opts, view, frame)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _preview_png(request: Request, up: dict[str, Any], opts: dict[str, Any], view: str,
                 frame: int) -> bytes:
    """Frame ``frame`` of upload ``up`` converted by the job's own path."""
    state = request.app.state
    task = state.manager.spec_for({"id": "preview", "upload_id": up["id"], "options": opts})
    with tempfile.TemporaryDirectory(prefix="rvmatte-preview-") as tmp:
        out = Path(tmp) / "%06d.png"
        convert_job(replace(task, outputs={view: out}, workdir=Path(tmp)), state.config.spec,
                    start=f"{frame}f", end=f"{frame + 1}f")
        made = sorted(Path(tmp).glob("*.png"))
        if not made:
            raise ApiError(422, "invalid", f"frame {frame} could not be decoded")
        return made[0].read_bytes()
