"""Who may do what: the server's access token, and the owner of each job.

* The **server token** (``--token``): when set, every request but ``/api/health`` must carry
  it (``Authorization: Bearer TOKEN``, ``X-Rvmatte-Token``, ``?token=`` or the cookie the page
  sets from ``/?token=``).
* The **owner key**: the web page makes a random key once per browser (kept in
  ``localStorage``) and sends it as ``X-Rvmatte-Owner``. Jobs remember a hash of the key that
  made them; a request with a key lists and deletes only that key's jobs. A request without
  one sees the jobs made without one (API clients), or every job when the server has a token
  (whoever holds it administers the server). Reading one job, its events and its files needs
  only its id (32 random hex digits; what a ``<video src>`` can send).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Optional

from fastapi import Request

from . import store as st
from .responses import ApiError

TOKEN_COOKIE = "rvmatte_token"
OWNER_HEADER = "X-Rvmatte-Owner"
_OWNER_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")


def require_token(request: Request) -> None:
    """Dependency of every protected route: the server token, when the server has one."""
    token = request.app.state.config.token
    if not token:
        return
    given = request.headers.get("authorization", "")
    given = given[7:] if given.lower().startswith("bearer ") else ""
    given = (given or request.headers.get("x-rvmatte-token")
             or request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong access token "
                       "(send 'Authorization: Bearer TOKEN' or open /?token=TOKEN)")


@dataclass(frozen=True)
class Scope:
    """The jobs one request may list and delete. ``owner``: the hash of its owner key
    (None without one); ``admin``: it holds the server token."""

    owner: Optional[str]
    admin: bool

    @property
    def listing(self) -> Any:
        """The ``owner`` argument of :meth:`JobStore.list_jobs` for this request."""
        if self.owner is None and self.admin:
            return st.ANY_OWNER
        return self.owner

    def may_delete(self, job: dict[str, Any]) -> bool:
        return self.admin or job.get("owner") == self.owner


def owner_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def job_scope(request: Request) -> Scope:
    """Dependency: the request's :class:`Scope` (a malformed owner key is a 422)."""
    key = request.headers.get(OWNER_HEADER)
    if key is not None and not _OWNER_KEY.fullmatch(key):
        raise ApiError(422, "invalid", f"{OWNER_HEADER} must be 16 to 128 characters of "
                       "A-Z, a-z, 0-9, '-' and '_'")
    return Scope(owner=None if key is None else owner_hash(key),
                 admin=bool(request.app.state.config.token))
