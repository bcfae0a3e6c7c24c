"""The worker inside Django: ORM access from sync and async jobs, signals, one log line per job."""

from __future__ import annotations

import logging

import pytest
from django.core.management import call_command

from django_redisq import signals
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
