"""The SQLite job store: claiming order, restart re-queueing, progress, retention queries."""

from __future__ import annotations

import pytest

from rvmatte.server import store as st


@pytest.fixture
def store(tmp_path):
    s = st.JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def _job(store, i, upload="u"):
    return store.add_job(id=f"{i:032x}", upload_id=upload, filename=f"{i}.mp4",
                         options={"outputs": ["composite"], "background_upload": None})


def test_claim_in_order_and_requeue_after_crash(store, tmp_path):
    for i in range(3):
        _job(store, i)
    a = store.claim_next()
    assert a["id"] == f"{0:032x}" and a["state"] == st.RUNNING and a["attempts"] == 1
    store.update_progress(a["id"], done=4, total=12, fps=8.0, eta=1.0)
    store.close()  # the server dies with job 0 running

    again = st.JobStore(tmp_path / "jobs.sqlite3")
    assert again.requeue_interrupted() == [a["id"]]
    job = again.get_job(a["id"])
    assert job["state"] == st.QUEUED and job["done_frames"] == 4
    b = again.claim_next()
    assert b["id"] == a["id"] and b["attempts"] == 2  # resumed first: it is the oldest
    again.finish(b["id"], st.DONE, outputs={"composite": "x.mp4"}, resumed_from=4)
    done = again.get_job(b["id"])
    assert done["state"] == st.DONE and done["done_frames"] == 12 and done["resumed_from"] == 4
    assert done["outputs"] == {"composite": "x.mp4"}
    assert again.count(st.QUEUED) == 2
    again.close()


def test_retention_queries(store):
    store.add_upload(id="a" * 32, kind="video", path="uploads/a.mp4", filename="a.mp4",
                     size=1, info={})
    store.add_upload(id="b" * 32, kind="image", path="uploads/b.png", filename="b.png",
                     size=1, info={})
    job = store.add_job(id="c" * 32, upload_id="a" * 32, filename="a.mp4",
                        options={"background_upload": "b" * 32})
    import time

    later = time.time() + 10
    assert store.unreferenced_uploads(later) == []  # both used by the job
    assert store.expired_jobs(later) == []          # not finished
    store.finish(job["id"], st.FAILED, error="x")
    assert [j["id"] for j in store.expired_jobs(later)] == [job["id"]]
    store.delete_job(job["id"])
    assert {u["id"] for u in store.unreferenced_uploads(later)} == {"a" * 32, "b" * 32}


def test_job_that_keeps_killing_the_server_gives_up(store):
    job = _job(store, 7)
    for attempt in range(1, 4):  # started, and the server died, three times
        assert store.claim_next()["attempts"] == attempt
        assert store.requeue_interrupted() == ([job["id"]] if attempt < 3 else [])
    failed = store.get_job(job["id"])
    assert failed["state"] == st.FAILED and "3 times" in failed["error"]
