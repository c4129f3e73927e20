"""Jobs belong to the browser (owner key) that made them; progress as server-sent events;
thumbnails and the source video of a job; the OpenAPI 3.0 copy for the bundled Swagger UI."""

from __future__ import annotations

import io
import json
import sqlite3
import threading

import pytest

from server_helpers import CopyRunner, wait_state

ALICE = {"X-Rvmatte-Owner": "alice-browser-key-0123456789"}
BOB = {"X-Rvmatte-Owner": "bob-browser-key-9876543210ab"}


def submit(client, clip, headers=None, **data):
    return client.post("/api/jobs", files={"file": ("clip.mp4", clip.read_bytes())},
                       data=data, headers=headers or {})


def ids(client, headers=None):
    r = client.get("/api/jobs", headers=headers or {})
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["jobs"]]


def read_events(lines, stop):
    """(event, data) pairs from an SSE line iterator until ``stop(event, data)``."""
    out, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
            if stop(*out[-1]):
                return out
    return out


def test_jobs_belong_to_their_owner_key(make_client, clip):
    c = make_client(CopyRunner())
    a = submit(c, clip, ALICE).json()
    b = submit(c, clip, BOB).json()
    anon = submit(c, clip).json()
    for j in (a, b, anon):
        wait_state(c, j["id"])
    assert ids(c, ALICE) == [a["id"]]
    assert ids(c, BOB) == [b["id"]]
    assert ids(c) == [anon["id"]]  # API clients without a key: the jobs made without one
    assert "owner" not in a
    # reading one job (and its result) needs only its id: what <video src> can send
    assert c.get(f"/api/jobs/{a['id']}", headers=BOB).status_code == 200
    assert c.get(f"/api/jobs/{a['id']}/result").status_code == 200
    # deleting needs the owner key: to others the job does not exist
    for headers in (BOB, {}):
        r = c.delete(f"/api/jobs/{a['id']}", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.delete(f"/api/jobs/{anon['id']}", headers=ALICE).status_code == 404
    assert c.delete(f"/api/jobs/{a['id']}", headers=ALICE).status_code == 200
    assert ids(c, ALICE) == [] and ids(c, BOB) == [b["id"]]
    assert c.delete(f"/api/jobs/{anon['id']}").status_code == 200


def test_bad_owner_key(make_client, clip):
    c = make_client(CopyRunner())
    for key in ("short", "x" * 129, "has space in it 0123", "slash/key/0123456789",
                "\u00fcmlaut-key-0123456789".encode().decode("latin-1")):
        r = c.get("/api/jobs", headers={"X-Rvmatte-Owner": key.encode("latin-1")})
        assert r.status_code == 422 and "X-Rvmatte-Owner" in r.json()["error"]["message"]
    assert c.get("/api/jobs").json()["jobs"] == []


def test_server_token_administers_every_job(make_client, clip):
    c = make_client(CopyRunner(), host="0.0.0.0", token="s3cret")
    ok = {"Authorization": "Bearer s3cret"}
    a = submit(c, clip, ok | ALICE).json()
    anon = submit(c, clip, ok).json()
    wait_state(c, a["id"], headers=ok)
    wait_state(c, anon["id"], headers=ok)
    assert c.get("/api/jobs", headers=ALICE).status_code == 401  # the token is still needed
    assert ids(c, ok | ALICE) == [a["id"]]                    # the browser's own view
    assert set(ids(c, ok)) == {a["id"], anon["id"]}           # the token's view: everything
    assert ids(c, ok | BOB) == []
    assert c.delete(f"/api/jobs/{a['id']}", headers=ok).status_code == 200
    assert ids(c, ok | ALICE) == []


OLD_JOBS_TABLE = """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, upload_id TEXT NOT NULL, filename TEXT NOT NULL,
    options TEXT NOT NULL, outputs TEXT NOT NULL, done_frames INTEGER NOT NULL DEFAULT 0,
    total_frames INTEGER, fps REAL, eta_seconds REAL, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, resumed_from INTEGER, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL);
INSERT INTO jobs (id, state, upload_id, filename, options, outputs, created_at)
    VALUES ('a', 'done', 'u', 'f.mp4', '{}', '{}', 1);"""


def test_store_from_before_owners_is_migrated(tmp_path):
    """A database written before jobs had owners gains the column; its jobs are API jobs."""
    from rvmatte.server import store as st

    db = tmp_path / "jobs.sqlite3"
    con = sqlite3.connect(db)
    con.executescript(OLD_JOBS_TABLE)
    con.close()
    s = st.JobStore(db)
    try:
        assert s.get_job("a")["owner"] is None
        assert [j["id"] for j in s.list_jobs(owner=None)] == ["a"]
        s.add_job(id="b", upload_id="u", filename="g.mp4", options={}, owner="h")
        assert [j["id"] for j in s.list_jobs(owner="h")] == ["b"]
        assert {j["id"] for j in s.list_jobs()} == {"a", "b"}
    finally:
        s.close()


def test_job_events_stream_until_done(make_client, clip):
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate))
    job = submit(c, clip).json()
    with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = read_events(lines, lambda e, d: d["state"] == "running")
        assert first[0][0] == "job" and first[0][1]["id"] == job["id"]
        gate.set()
        rest = read_events(lines, lambda e, d: False)  # the stream ends by itself
    events = first + rest
    assert {e for e, _ in events} == {"job"}
    assert events[-1][1]["state"] == "done" and events[-1][1]["progress"]["fraction"] == 1.0
    assert events[-1][1]["results"]["composite"].endswith("/result/composite")
    # a finished job: one event, then the end
    with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert [e for e, _ in read_events(r.iter_lines(), lambda e, d: False)] == ["job"]
    assert c.get(f"/api/jobs/{'0' * 32}/events").status_code == 404


def test_job_events_say_deleted(make_client, clip):
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate))
    job = submit(c, clip).json()
    with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        lines = r.iter_lines()
        read_events(lines, lambda e, d: d["state"] == "running")
        assert c.delete(f"/api/jobs/{job['id']}").status_code == 200
        rest = read_events(lines, lambda e, d: False)
    assert rest[-1] == ("deleted", {"id": job["id"]})
    gate.set()


def test_list_events_follow_the_owners_jobs(make_client, clip):
    c = make_client(CopyRunner())
    old = submit(c, clip, ALICE).json()
    wait_state(c, old["id"])
    submit(c, clip, BOB)
    with c.stream("GET", "/api/events", headers=ALICE) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        snap = read_events(lines, lambda e, d: e == "snapshot")
        assert [j["id"] for j in snap[-1][1]["jobs"]] == [old["id"]]
        new = submit(c, clip, ALICE).json()
        seen = read_events(lines, lambda e, d: e == "job" and d["id"] == new["id"]
                           and d["state"] == "done")
        assert all(d["id"] == new["id"] for e, d in seen)  # Bob's job is not shown
        assert c.delete(f"/api/jobs/{old['id']}", headers=ALICE).status_code == 200
        gone = read_events(lines, lambda e, d: e == "deleted")
        assert gone[-1] == ("deleted", {"id": old["id"]})


def test_thumbnail_and_source(make_client, clip):
    from PIL import Image

    c = make_client(CopyRunner())
    job = wait_state(c, submit(c, clip).json()["id"])
    assert job["thumbnail"] == f"/api/jobs/{job['id']}/thumbnail"
    r = c.get(job["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (160, 107)  # 96x64 scaled to 160 wide
    assert Image.open(io.BytesIO(c.get(job["thumbnail"] + "?width=48").content)).width == 48
    assert c.get(job["thumbnail"] + "?width=5000").status_code == 422
    src = c.get(job["source"])
    assert src.status_code == 200 and src.content == clip.read_bytes()
    assert src.headers["content-type"] == "video/mp4"
    assert src.headers["content-disposition"].startswith("inline")
    for url in (f"/api/jobs/{'0' * 32}/thumbnail", f"/api/jobs/{'0' * 32}/source",
                "/api/jobs/..%2Fjobs.sqlite3/source"):
        assert c.get(url).status_code == 404


def test_openapi_30_for_the_bundled_swagger_ui(make_client):
    c = make_client(CopyRunner())
    full = c.get("/openapi.json").json()
    old = c.get("/openapi-3.0.json").json()
    assert full["openapi"].startswith("3.1") and old["openapi"] == "3.0.3"
    assert old["paths"].keys() == full["paths"].keys()
    for path in ("/api/events", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/thumbnail",
                 "/api/jobs/{job_id}/source"):
        assert path in old["paths"]
    text = json.dumps(old)
    assert '"type": "null"' not in text and "contentMediaType" not in text
    body = old["components"]["schemas"]["Body_create_job_api_jobs_post"]["properties"]
    assert body["file"] == {"type": "string", "format": "binary", "nullable": True,
                            "title": "File", "description": "the video (or give upload_id)"}
    assert body["upload_id"]["type"] == "string" and body["upload_id"]["nullable"] is True
    assert "/openapi-3.0.json" in c.get("/docs").text


@pytest.mark.parametrize("schema, expected", [
    ({"anyOf": [{"$ref": "#/x"}, {"type": "null"}], "title": "T"},
     {"allOf": [{"$ref": "#/x"}], "nullable": True, "title": "T"}),
    ({"type": ["integer", "null"]}, {"type": "integer", "nullable": True}),
    ({"const": "a"}, {"enum": ["a"]}),
    ({"type": "number", "exclusiveMinimum": 0}, {"type": "number", "minimum": 0,
                                                 "exclusiveMinimum": True}),
    ({"type": "string", "examples": ["x", "y"]}, {"type": "string", "example": "x"}),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]},
     {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
])
def test_openapi_downgrade_rules(schema, expected):
    from rvmatte.server.openapi30 import downgrade

    doc = {"openapi": "3.1.0", "components": {"schemas": {
        "S": {"type": "object", "properties": {"const": schema, "type": {"type": "string"}}}}}}
    out = downgrade(doc)
    props = out["components"]["schemas"]["S"]["properties"]
    assert props["const"] == expected
    assert props["type"] == {"type": "string"}  # a property named like a keyword stays
    assert doc["openapi"] == "3.1.0"             # the input is not changed


def test_event_streams_end_when_the_server_stops(make_client, clip):
    """A stopping server ends its event streams (open pages must not hold the stop up)."""
    gate = threading.Event()
    c = make_client(CopyRunner(gate=gate))
    job = submit(c, clip).json()
    for url in ("/api/events", f"/api/jobs/{job['id']}/events"):
        with c.stream("GET", url) as r:
            lines = r.iter_lines()
            read_events(lines, lambda e, d: True)
            c.app.state.closing.set()
            read_events(lines, lambda e, d: False)  # returns: the stream has ended
        c.app.state.closing.clear()
    gate.set()
