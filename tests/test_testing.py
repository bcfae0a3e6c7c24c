"""Test mode: eager ``.delay()`` and ``run_jobs()``, and the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio
import socket

import pytest
from django.db import transaction

from django_redisq import JobFailed, get_queue
from django_redisq.signals import job_failed, job_finished, job_started
from django_redisq.testing import EagerJob, arun_jobs, run_jobs
from tests import jobs_eager as j
from tests.testapp.models import Note


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the socket is: nothing listens there


@pytest.fixture
def eager(settings):  # type: ignore[no-untyped-def]
    """Eager mode with every queue pointing at a closed port: any Redis use would fail."""
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.REDISQ = {**settings.REDISQ, "MODE": "eager",
                       "QUEUES": {n: {"URL": url} for n in settings.REDISQ["QUEUES"]}}


def test_eager_delay_returns_a_finished_handle(eager):
    h = j.double.delay(21)
    assert isinstance(h, EagerJob)
    assert (h.status, h.result, h.get(), h.attempts, h.exc_info) == ("finished", 42, 42, 1, None)
    assert h.refresh() is h and h.cancel() == "finished"
    assert h.queue.name == "default" and len(h.id) == 32


def test_eager_runs_async_jobs_through_delay_and_adelay(eager):
    assert j.async_double.delay(4).get() == 8

    async def main() -> tuple[int, int]:
        a = await j.async_double.adelay(5)
        b = await j.double.adelay(6)  # a sync job from async code
        return await a.aget(), await b.aget()

    assert asyncio.run(main()) == (10, 12)


def test_eager_async_job_delayed_from_running_loop(eager):
    async def main() -> int:
        return j.async_double.delay(7).get()  # sync API inside a running loop

    assert asyncio.run(main()) == 14


def test_eager_rejects_arguments_the_queue_would_reject(eager):
    with pytest.raises(TypeError, match="JSON"):
        j.double.delay(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="double"):
        j.double.delay(1, 2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="priority"):
        j.double.using(priority=1000).delay(1)


def test_eager_passes_arguments_as_a_worker_sees_them(eager):
    assert j.show_args.delay((1, 2), "s", x=1).get() == [["list", "str"], ["x"]]


def test_eager_failure_gives_a_failed_handle(eager):
    h = j.explode.delay("kaput")  # .delay() itself does not raise
    assert h.status == "failed"
    assert "ValueError: kaput" in (h.exc_info or "")
    with pytest.raises(JobFailed, match="kaput"):
        h.get()
    assert h.result is None and len(h.errors) == 1


def test_eager_retries_at_once_within_the_policy(eager):
    h = j.flaky_twice.delay()  # Retry(delay=60): eager does not wait
    assert (h.status, h.get(), h.attempts) == ("finished", 3, 3)
    assert [e["type"] for e in h.errors] == ["ConnectionError", "ConnectionError"]
    h = j.not_retried.delay()  # KeyError is not in Retry(on=...)
    assert (h.status, h.attempts) == ("failed", 1)


def test_eager_unencodable_result_fails_the_job(eager):
    h = j.bad_result.delay()
    assert h.status == "failed"
    with pytest.raises(JobFailed, match="cannot be encoded"):
        h.get()


def test_eager_job_sees_its_context_and_options(eager):
    h = j.whoami.using(meta={"k": 1}, priority=5, delay=60, job_id="me-1").delay()
    assert h.get() == {"id": "me-1", "attempt": 1, "meta": {"k": 1}}


def test_eager_sends_the_worker_signals(eager):
    seen: list[str] = []

    def on(name: str):  # type: ignore[no-untyped-def]
        def receiver(sender, job, **kw):  # type: ignore[no-untyped-def]
            seen.append(f"{name}:{sender}")
        return receiver

    receivers = [(s, on(n)) for s, n in ((job_started, "started"), (job_finished, "finished"),
                                        (job_failed, "failed"))]
    for s, rcv in receivers:
        s.connect(rcv)
    try:
        j.double.delay(1)
        j.explode.delay("x")
    finally:
        for s, rcv in receivers:
            s.disconnect(rcv)
    assert seen == ["started:tests.jobs_eager.double", "finished:tests.jobs_eager.double",
                    "started:tests.jobs_eager.explode", "failed:tests.jobs_eager.explode"]


@pytest.mark.django_db
def test_eager_job_runs_inside_the_callers_transaction(eager):
    with transaction.atomic():
        pk = j.write_note.delay("eager").get()
        assert j.count_notes.delay().get() == 1
    assert Note.objects.get(pk=pk).text == "eager"


def test_plugin_fixture_makes_delay_eager(redisq_eager, r):
    assert j.double.delay(2).get() == 4
    assert r.dbsize() == 0  # nothing reached Redis


# -- run_jobs: real queues, drained in this process ----------------------------------------
@pytest.mark.django_db
def test_run_jobs_drains_real_queues_in_this_thread(r, django_capture_on_commit_callbacks):
    # The test runs inside a transaction that never commits: send the jobs when .delay()'s
    # on-commit hooks are captured, as a commit would.
    with django_capture_on_commit_callbacks(execute=True):
        a = j.double.delay(1)
        b = j.async_double.delay(2)
        c = j.explode.delay("no")
        n = j.write_note.delay("seen by the test's transaction")
    assert a.status == "queued"
    res = run_jobs()
    assert res.as_dict() == {"finished": 3, "failed": 1, "retried": 0, "canceled": 0}
    assert res.total == 4 and set(res.job_ids) == {a.id, b.id, c.id, n.id}
    assert (a.get(timeout=1), b.get(timeout=1)) == (2, 4)
    assert c.status == "failed"
    # The sync job ran on the test's connection: its row is in the test's transaction.
    assert Note.objects.filter(pk=n.get(timeout=1)).exists()
    assert get_queue("default").counts()["queued"] == 0
    assert run_jobs().total == 0  # nothing left


def test_run_jobs_until_empty_runs_jobs_enqueued_by_jobs(r):
    j.spawn.delay(5)
    res = run_jobs(["default"])
    assert res.finished == 2


def test_run_jobs_not_until_empty_runs_only_what_was_queued(r):
    j.spawn.delay(5)
    res = run_jobs(["default"], until_empty=False)
    assert res.finished == 1
    assert get_queue("default").count("queued") == 1  # the spawned one waits
    assert run_jobs(["default"]).finished == 1


def test_run_jobs_serves_only_the_given_queues(r):
    j.double.delay(1)
    h = j.async_double.delay(1)  # on "high"
    assert run_jobs(["default"]).finished == 1
    assert h.status == "queued"
    with pytest.raises(TypeError, match="list of queue names"):
        run_jobs("high")  # type: ignore[arg-type]


def test_run_jobs_counts_retries(r):
    h = j.flaky_twice.delay()  # Retry(delay=60)
    res = run_jobs(["default"])
    # The retry waits 60 s in "scheduled": run_jobs does not wait for it.
    assert (res.retried, res.failed, res.finished) == (1, 0, 0)
    assert h.status == "scheduled"


def test_arun_jobs_from_async_code(r):
    j.async_double.delay(3)

    async def main() -> dict[str, int]:
        return (await arun_jobs(["high"])).as_dict()

    assert asyncio.run(main())["finished"] == 1


def test_plugin_run_jobs_fixture(redisq_run_jobs, r):
    h = j.double.delay(8)
    assert redisq_run_jobs().finished == 1
    assert h.get(timeout=1) == 16


@pytest.mark.django_db(transaction=True)
def test_eager_sync_job_delayed_from_async_code_may_use_the_orm(eager):
    # A worker runs sync jobs in threads; eager mode must not run one on the caller's event
    # loop thread, where Django refuses sync ORM calls (SynchronousOnlyOperation).
    async def main() -> tuple[str, int | None]:
        h = j.count_notes.delay()
        return h.status, h.result

    assert asyncio.run(main()) == ("finished", 0)


def test_eager_job_raising_systemexit_ends_failed_as_with_a_worker(eager):
    h = j.exits.delay()  # does not raise, as .delay() never does for a job's error
    assert h.status == "failed" and h.record.error["type"] == "SystemExit"

    async def main() -> str:
        return (await j.exits.adelay()).status

    assert asyncio.run(main()) == "failed"


def test_eager_job_started_sees_the_attempt_already_counted(eager):
    seen: list[tuple[int, bool]] = []

    def receiver(sender, job, **kw):  # type: ignore[no-untyped-def]
        seen.append((job.attempts, job.started_at is not None))

    job_started.connect(receiver)
    try:
        j.double.delay(1)
        asyncio.run(j.double.adelay(1))
    finally:
        job_started.disconnect(receiver)
    assert seen == [(1, True), (1, True)]  # as a worker sends it, after the claim
