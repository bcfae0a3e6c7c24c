"""The first worker: rqworker --burst runs sync and async jobs and records outcomes."""

from __future__ import annotations

import asyncio

import pytest
from django.core.management import CommandError, call_command

from django_redisq import JobFailed, get_queue
from tests import jobs


def burst(*queues: str) -> None:
    call_command("rqworker", *(queues or ("default", "high", "low")), "--burst", verbosity=0)


def test_sync_and_async_jobs_run_and_results_are_readable(r):
    a = jobs.add.delay(1, 2)
    b = jobs.async_add.delay(3, 4)
    burst()
    assert a.status == b.status == "finished"
    assert a.result == 3 and b.result == 7
    assert a.get(timeout=1) == 3
    assert asyncio.run(b.aget(timeout=1)) == 7
    rec = a.refresh().record
    assert rec.attempts == 1 and rec.started_at and rec.ended_at and rec.duration is not None


def test_failing_job_is_in_the_failed_registry_with_its_traceback(r):
    j = jobs.fail.delay("it broke <b>")
    burst()
    assert j.status == "failed"
    assert j.id in get_queue("default").job_ids("failed")
    tb = j.exc_info
    assert tb is not None
    assert "Traceback (most recent call last)" in tb
    assert 'raise ValueError(message)' in tb
    assert tb.strip().endswith("ValueError: it broke <b>")
    with pytest.raises(JobFailed, match="ValueError: it broke"):
        j.get(timeout=1)


def test_unregistered_function_ends_failed_with_a_clear_error(r):
    q = get_queue("default")
    j = q.enqueue("tests.jobs.not_a_job", [1])
    burst("default")
    assert j.status == "failed"
    err = j.record.error
    assert err is not None
    assert err["type"] == "django_redisq.engine.errors.UnknownFunction"
    assert "'tests.jobs.not_a_job' is not registered" in err["message"]


def test_dotted_path_to_an_importable_but_unregistered_function_is_refused(r):
    q = get_queue("default")
    j = q.enqueue("os.getcwd")
    burst("default")
    assert j.status == "failed"
    assert "not registered" in j.record.error["message"]


def test_unknown_queue_on_the_command_line_lists_configured_ones():
    with pytest.raises(CommandError, match="configured queues: default, high, low"):
        call_command("rqworker", "nope", "--burst")


def test_burst_on_empty_queues_exits(r):
    burst()
    assert r.zcard("redisq:{workers}") == 0  # deregistered on exit


def test_many_jobs_in_burst(r):
    handles = [jobs.add.delay(i, 1) for i in range(200)]
    burst("default")
    assert [h.result for h in handles] == [i + 1 for i in range(200)]
    assert get_queue("default").counts()["finished"] == 200
