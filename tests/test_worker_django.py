"""The worker inside Django: ORM access from sync and async jobs, signals, one log line per job."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection

from django_redisq import signals
from django_redisq.worker import DjangoHooks, SharedPasses
from tests import jobs
from tests.testapp.models import Note


def burst() -> None:
    call_command("rqworker", "default", "high", "--burst", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_sync_and_async_jobs_use_the_orm(r):
    a = jobs.write_note.delay("from a thread")
    b = jobs.async_write_note.delay("from the event loop")
    burst()
    assert a.status == b.status == "finished", (a.record.error, b.record.error)
    assert set(Note.objects.values_list("text", flat=True)) == {
        "from a thread", "from the event loop"}
    assert {a.result, b.result} == set(Note.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_orm_jobs_in_a_worker_subprocess(r, worker_proc):
    a = jobs.write_note.delay("subprocess sync")
    b = jobs.async_write_note.delay("subprocess async")
    w = worker_proc("default", "--burst")
    assert w.wait(30) == 0, w.output()
    assert a.status == b.status == "finished", w.output()
    assert Note.objects.filter(text__startswith="subprocess").count() == 2


def test_signals_are_sent_for_each_outcome(r):
    seen: list[tuple[str, str]] = []

    def receiver(signal_name):
        def handler(sender, job, **info):
            seen.append((signal_name, sender))
            if signal_name == "finished":
                assert "result" in info
            if signal_name == "failed":
                assert isinstance(info["exc"], ValueError)
        return handler

    handlers = {name: receiver(name) for name in ("started", "finished", "failed")}
    signals.job_started.connect(handlers["started"])
    signals.job_finished.connect(handlers["finished"])
    signals.job_failed.connect(handlers["failed"])
    try:
        jobs.add.delay(1, 2)
        jobs.fail.delay()
        burst()
    finally:
        signals.job_started.disconnect(handlers["started"])
        signals.job_finished.disconnect(handlers["finished"])
        signals.job_failed.disconnect(handlers["failed"])
    assert sorted(seen) == sorted([
        ("started", "tests.jobs.add"), ("finished", "tests.jobs.add"),
        ("started", "tests.jobs.fail"), ("failed", "tests.jobs.fail"),
    ])


def test_one_info_line_per_job(r, caplog):
    ok = jobs.add.delay(1, 2)
    bad = jobs.fail.delay()
    with caplog.at_level(logging.INFO, logger="django_redisq.worker"):
        burst()
    lines = [rec for rec in caplog.records if getattr(rec, "job_id", None)
             and rec.levelno == logging.INFO]
    assert len(lines) == 2
    by_id = {rec.job_id: rec for rec in lines}
    assert by_id[ok.id].getMessage().startswith(f"job {ok.id} tests.jobs.add on default: "
                                                "finished in ")
    assert "failed (ValueError)" in by_id[bad.id].getMessage()
    for rec in lines:
        assert rec.queue == "default" and rec.attempt == 1 and rec.function.startswith("tests.")


# -- database hygiene of async jobs: passes of close_old_connections shared by the jobs --------
def test_an_ask_is_answered_by_a_pass_that_started_after_it():
    """Asks made while a pass runs wait for the next pass, which they share; so a job's
    hygiene pass never predates its ask, and concurrent jobs do not each hop to the thread."""
    running, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def tidy() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            running.set()
            release.wait(10)

    async def main() -> None:
        passes = SharedPasses(tidy)
        first = asyncio.ensure_future(passes())
        assert await asyncio.to_thread(running.wait, 10)  # the first pass has started
        later = [asyncio.ensure_future(passes()) for _ in range(5)]
        # A thread round trip: the five asks (scheduled before it) have run meanwhile.
        await asyncio.to_thread(lambda: None)
        assert not first.done() and not any(t.done() for t in later)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 10)
        assert passes.passes == 2  # the first ask's pass, then one for the five
        assert len(set(calls)) == 1  # asgiref's one sync thread, where the async ORM runs

    asyncio.run(main())


def test_a_failed_pass_fails_its_asks_and_the_next_ask_gets_a_new_pass():
    outcomes = iter([RuntimeError("database gone"), None])

    def tidy() -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    async def main() -> None:
        passes = SharedPasses(tidy)
        results = await asyncio.gather(passes(), passes(), return_exceptions=True)
        assert [str(r) for r in results] == ["database gone", "database gone"]
        await passes()
        assert passes.passes == 2

    asyncio.run(main())


def test_a_pass_cancelled_before_it_started_leaves_no_ask_waiting():
    """A pass queued behind other work in the sync thread and cancelled (the loop stopping)
    cancels its asks, and a later ask gets a pass of its own instead of joining it."""
    release = threading.Event()

    async def main() -> None:
        passes = SharedPasses(lambda: None)
        blocker = asyncio.ensure_future(sync_to_async(release.wait)(10))  # holds the thread
        first = asyncio.ensure_future(passes())
        await asyncio.to_thread(lambda: None)  # the first ask has been made
        (pass_task,) = passes._tasks
        pass_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.ensure_future(passes())
        release.set()
        await asyncio.wait_for(second, 10)
        assert await blocker is True

    asyncio.run(main())


@pytest.mark.django_db(transaction=True)
def test_async_jobs_tidy_the_sync_thread_only_when_a_connection_may_be_open_there():
    """Async jobs that leave the database alone cost no hop to asgiref's sync thread once a
    pass found no connection there; a job that used the database still has its connection
    closed after it (CONN_MAX_AGE 0), and a connection opened in any thread brings the passes
    back."""
    hooks = DjangoHooks()

    async def noop() -> None:
        return None

    async def orm_job() -> bool:
        await Note.objects.acreate(text="hygiene")
        return await sync_to_async(lambda: connection.connection is not None)()

    def sync_thread_connection_closed() -> bool:
        return connection.connection is None

    def query_in_a_thread_of_its_own() -> None:
        try:
            Note.objects.count()
        finally:
            connection.close()

    async def main() -> None:
        for _ in range(5):
            await hooks.run_async(None, noop)  # type: ignore[arg-type]
        await asyncio.gather(*(hooks.run_async(None, noop)  # type: ignore[arg-type]
                               for _ in range(10)))
        tidy = hooks._tidy_async
        assert tidy is not None
        assert tidy.passes == 1  # the first ask's: nothing was known about the thread yet
        assert not tidy.maybe_open

        assert await hooks.run_async(None, orm_job) is True  # type: ignore[arg-type]
        assert tidy.passes == 2  # after the job only: nothing was open before it
        assert await sync_to_async(sync_thread_connection_closed)()
        await hooks.run_async(None, noop)  # type: ignore[arg-type]
        assert tidy.passes == 2

        await asyncio.to_thread(query_in_a_thread_of_its_own)
        assert tidy.maybe_open
        await hooks.run_async(None, noop)  # type: ignore[arg-type]
        assert tidy.passes == 3 and not tidy.maybe_open

    asyncio.run(main())


def test_the_worker_sends_signals_only_while_a_receiver_is_connected():
    """Without receivers the worker skips the signal calls; a receiver connected later (the
    worker already running) is seen from the next job on."""
    hooks = DjangoHooks()
    assert not hooks.has_events

    def receiver(sender, **kwargs):
        return None

    signals.job_failed.connect(receiver)
    try:
        assert hooks.has_events
    finally:
        signals.job_failed.disconnect(receiver)
    assert not hooks.has_events


@pytest.mark.django_db(transaction=True)
def test_a_persistent_connection_keeps_the_sync_thread_tidied_around_every_async_job():
    """With CONN_MAX_AGE > 0 the connection an async job opened stays open after it, so the
    jobs after it (even those that leave the database alone) still get their passes: a
    connection that broke or aged meanwhile is closed before the next job uses it."""
    from django.db import connections

    hooks = DjangoHooks()
    settings_dict = connections.settings["default"]
    old_age = settings_dict.get("CONN_MAX_AGE", 0)

    async def orm_job() -> None:
        await Note.objects.acreate(text="persistent")

    async def noop() -> None:
        return None

    def close_sync_thread_connection() -> None:
        connection.close()

    async def main() -> None:
        await hooks.run_async(None, orm_job)  # type: ignore[arg-type]
        tidy = hooks._tidy_async
        assert tidy is not None and tidy.maybe_open
        passes = tidy.passes
        for _ in range(3):
            await hooks.run_async(None, noop)  # type: ignore[arg-type]
        assert tidy.passes == passes + 6  # before and after each of the three jobs
        await sync_to_async(close_sync_thread_connection)()

    settings_dict["CONN_MAX_AGE"] = 60
    try:
        asyncio.run(main())
    finally:
        settings_dict["CONN_MAX_AGE"] = old_age
