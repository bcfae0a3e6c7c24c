"""Enqueueing: the @job decorator, argument checks in the caller, the job handle, queues."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import uuid

import pytest
from django.core.management import call_command

from django_redisq import Job, JobRecord, QueueNotFound, get_queue, job
from django_redisq.engine.errors import JobCanceled, JobFailed, JobNotFound, PayloadError
from django_redisq.engine.queue import _string_list
from tests import jobs
from tests.conftest import wait_for


def test_plain_call_still_runs_the_function(r):
    assert jobs.add(2, 3) == 5
    assert asyncio.run(jobs.async_add(2, 3)) == 5
    assert r.dbsize() == 0


def test_delay_returns_a_queued_handle(r):
    j = jobs.add.delay(1, 2)
    assert isinstance(j, Job)
    assert j.status == "queued"
    assert get_queue("default").count() == 1
    rec = j.refresh().record
    assert (rec.func, rec.queue, rec.attempts) == ("tests.jobs.add", "default", 0)
    assert rec.call() == ([1, 2], {})


def test_generated_job_ids_are_distinct_version_4_uuids(r):
    # Projects store job ids in UUID columns: the id must parse as one.
    ids = [jobs.add.delay(1, 2).id for _ in range(50)]
    assert len(set(ids)) == 50
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (job_id, 4, uuid.RFC_4122)


def test_async_job_goes_to_its_queue(r):
    j = jobs.async_add.delay(1, 2)
    assert j.queue.name == "high"
    assert get_queue("high").count() == 1


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: jobs.add.delay(1), "missing a required argument: 'b'"),
        (lambda: jobs.add.delay(1, 2, 3), "too many positional arguments"),
        (lambda: jobs.add.delay(1, 2, c=3), "unexpected keyword argument 'c'"),
    ],
)
def test_unbindable_arguments_raise_typeerror_and_write_nothing(r, call, fragment):
    with pytest.raises(TypeError, match=fragment) as info:
        call()
    assert "tests.jobs.add" in str(info.value)
    assert r.dbsize() == 0


def test_unserializable_argument_is_named(r):
    with pytest.raises(TypeError) as info:
        jobs.add.delay(1, object())
    message = str(info.value)
    assert "positional argument b" in message
    assert "object" in message and "json" in message
    assert r.dbsize() == 0


def test_unserializable_keyword_argument_is_named(r):
    with pytest.raises(TypeError, match=r"argument 'value' of type set"):
        jobs.echo.delay(value={1, 2})
    assert r.dbsize() == 0


def test_nan_is_rejected_because_it_is_not_json(r):
    with pytest.raises(TypeError, match="positional argument value"):
        jobs.echo.delay(float("nan"))
    assert r.dbsize() == 0


def test_unknown_queue_lists_configured_queues(r):
    with pytest.raises(QueueNotFound) as info:
        jobs.add.using(queue="nope").delay(1, 2)
    assert "nope" in str(info.value)
    for name in ("default", "high", "low"):
        assert name in str(info.value)
    assert r.dbsize() == 0


def test_lambda_and_nested_functions_cannot_be_jobs():
    with pytest.raises(ValueError, match="lambda"):
        job(lambda: None)

    def nested() -> None: ...

    with pytest.raises(ValueError, match="inside another function"):
        job(nested)


def test_bad_decorator_options_fail_at_decoration():
    with pytest.raises(ValueError, match="timeout"):
        job(timeout=-1)
    with pytest.raises(ValueError, match="priority"):
        job(priority=1000)


def test_using_sets_job_id_priority_and_delay(r):
    j = jobs.add.using(job_id="mail-1", priority=10).delay(1, 2)
    assert j.id == "mail-1"
    assert j.refresh().record.priority == 10
    later = jobs.add.using(delay=dt.timedelta(minutes=5)).delay(1, 2)
    assert later.status == "scheduled"
    assert get_queue("default").count("scheduled") == 1


def test_using_does_not_change_the_original(r):
    jobs.add.using(queue="low").delay(1, 2)
    assert jobs.add.queue_name == "default"
    assert get_queue("low").count() == 1


def test_naive_datetime_is_rejected_naming_use_tz(r):
    with pytest.raises(ValueError, match="USE_TZ"):
        jobs.add.using(at=dt.datetime(2030, 1, 1)).delay(1, 2)
    assert r.dbsize() == 0


def test_same_job_id_while_active_returns_the_existing_job(r):
    first = jobs.add.using(job_id="only-one").delay(1, 2)
    second = jobs.add.using(job_id="only-one").delay(5, 6)
    assert first.id == second.id == "only-one"
    assert get_queue("default").count() == 1
    assert first.refresh().record.call() == ([1, 2], {})


def test_a_job_queued_behind_others_is_written_as_one_that_found_the_queue_empty(r):
    """The ENQUEUE script writes a job onto a queue where others wait by a shorter path than
    the first job's: the same fields, the time in ms, the same order."""
    q = get_queue("default")
    t0 = r.time()
    first = jobs.add.using(priority=5).delay(1, 2)  # empty queue: the general path
    behind = [jobs.add.using(priority=p).delay(1, 2) for p in (5, 0, 100, 5, -100, 5)]
    t1 = r.time()
    lo, hi = t0[0] * 1000 + t0[1] // 1000, t1[0] * 1000 + t1[1] // 1000
    records = [r.hgetall(q.keys.job(j.id)) for j in [first, *behind]]
    for j, h in zip([first, *behind], records):
        assert h.pop(b"id") == j.id.encode()
        assert lo <= int(h.pop(b"enqueued_at")) <= hi  # a whole number of ms, TIME's
        h.pop(b"priority", None)
    assert all(h == records[0] for h in records[1:]), records
    # Highest priority first, first come first within one, whichever path wrote them.
    b5, p0, p100, b5b, m100, b5c = behind
    assert q.job_ids("queued") == [p100.id, first.id, b5.id, b5b.id, b5c.id, p0.id, m100.id]


def test_priority_orders_the_queue(r):
    low = jobs.add.delay(0, 0)
    high = jobs.add.using(priority=50).delay(0, 0)
    assert get_queue("default").job_ids("queued") == [high.id, low.id]


def test_adelay_from_async_code(r):
    async def main() -> str | None:
        j = await jobs.add.adelay(1, 2)
        return await j.astatus()

    assert asyncio.run(main()) == "queued"


def test_adelay_checks_arguments_too(r):
    with pytest.raises(TypeError):
        asyncio.run(jobs.add.adelay(1, object()))
    assert r.dbsize() == 0


def test_queue_listing_count_and_empty(r):
    q = get_queue("default")
    made = [jobs.add.delay(i, i) for i in range(5)]
    assert q.count() == 5
    assert [rec.id for rec in q.jobs("queued", offset=1, limit=2)] == [made[1].id, made[2].id]
    assert q.counts()["queued"] == 5
    assert q.empty() == 5
    assert q.count() == 0
    assert r.dbsize() <= 1  # only the FIFO sequence counter is left


def test_cancel_a_queued_job(r):
    j = jobs.add.delay(1, 2)
    assert j.cancel() == "canceled"
    assert j.status == "canceled"
    assert get_queue("default").count() == 0
    assert get_queue("default").count("canceled") == 1


def test_get_on_a_missing_job_raises(r):
    with pytest.raises(JobNotFound):
        get_queue("default").job("no-such-job").get(timeout=0.1)


def test_get_on_an_ended_job_answers_in_one_round_trip(r):
    j = jobs.add.delay(1, 2)
    assert j.cancel() == "canceled"
    before = r.info("stats")["total_commands_processed"]
    with pytest.raises(JobCanceled):
        get_queue("default").job(j.id).get(timeout=5)
    # INFO's own command, then one pipeline: the watch script and its BLMOVE, which the
    # script's token answers at once rather than blocking.
    assert r.info("stats")["total_commands_processed"] - before <= 10


def test_a_waiter_on_a_requeued_job_waits_for_its_new_run(r):
    j = jobs.fail.delay("once")
    call_command("rqworker", "default", "--burst", verbosity=0)
    with pytest.raises(JobFailed):
        j.get(timeout=5)  # leaves the end token of the first run
    assert get_queue("default").requeue(j.id) == 1
    with pytest.raises(TimeoutError):
        j.get(timeout=0.5)  # the old token must not wake it: the job is queued again
    assert j.status == "queued"


def test_a_get_made_before_the_job_existed_does_not_end_later_waits(r):
    """A get() on an id with no job yet (a handle from .delay() inside transaction.atomic(),
    before the commit) raises JobNotFound; once the job exists, get() waits for its run."""
    q = get_queue("default")
    with pytest.raises(JobNotFound):
        q.job("sent-later").get(timeout=0.1)
    j = jobs.add.using(job_id="sent-later").delay(1, 2)
    with pytest.raises(TimeoutError):  # queued, not ended
        j.get(timeout=0.3)
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert j.get(timeout=5) == 3


def test_get_times_out_while_the_job_waits(r):
    j = jobs.add.delay(1, 2)
    with pytest.raises(TimeoutError):
        j.get(timeout=0.2)


def test_engine_imports_without_django():
    code = ("import sys, django_redisq.engine, django_redisq.engine.worker; "
            "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], "
            "'the engine imported Django'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin"},
                   cwd=str(__import__("pathlib").Path(__file__).parent.parent))


def test_get_waits_past_the_client_read_timeout(r):
    """redis-py 8 times out blocking reads after 5 s; get() must still honour longer waits."""
    j = jobs.add.delay(1, 2)
    threading.Timer(6.0, j.cancel).start()  # the job ends after the 5 s read timeout
    with pytest.raises(JobCanceled):  # not RedisUnavailable("Timeout reading from socket")
        j.get(timeout=20)


def test_get_reads_a_job_whose_result_is_not_kept(r):
    """result_ttl=0 deletes the hash as the job ends: the waiter still gets the result, from
    the notification itself."""
    j = jobs.add.using(result_ttl=0).delay(20, 22)
    waiter = threading.Thread(target=lambda: results.append(j.get(timeout=20)))
    results: list[int] = []
    waiter.start()
    wait_for(lambda: r.hget(get_queue("default").keys.job(j.id), "w"), timeout=10)
    call_command("rqworker", "default", "--burst", verbosity=0)
    waiter.join(20)
    assert results == [42]
    assert j.status is None  # gone: nothing kept


def _waited(r, job_handles, *, old_waiters: bool = False):  # type: ignore[no-untyped-def]
    """Results of ``job_handles`` read by get() calls that wait while a burst worker runs the
    jobs, so that each gets the end token. ``old_waiters``: a waiter of an earlier version
    (it registers 'w' = '1', which asks for netstrings) waits on each job too."""
    results: dict[int, object] = {}

    def wait(i: int, handle: Job) -> None:  # type: ignore[type-arg]
        try:
            results[i] = handle.get(timeout=20)
        except Exception as exc:  # the assertion shows it
            results[i] = exc

    threads = [threading.Thread(target=wait, args=(i, h)) for i, h in enumerate(job_handles)]
    for t in threads:
        t.start()
    q = get_queue("default")
    for h in job_handles:
        wait_for(lambda h=h: r.hget(q.keys.job(h.id), "w"), timeout=10)
        if old_waiters:
            r.hset(q.keys.job(h.id), "w", "1")
    call_command("rqworker", "default", "--burst", verbosity=0)
    for t in threads:
        t.join(20)
    return [results.get(i) for i in range(len(job_handles))]


# Lengths at the edges of the token's size classes: under 32 bytes, then 1, 2 and 4 length
# bytes; with multi-byte characters and the control characters JSON escapes.
_RESULTS = ["", "x" * 31, "é" * 100, "\x00\x01\n\"" * 30, "y" * 70_000]


def test_a_waiting_get_receives_results_of_every_size_in_the_end_token(r):
    handles = [jobs.echo.delay(v) for v in _RESULTS]
    assert _waited(r, handles) == _RESULTS
    q = get_queue("default")
    token = r.lindex(q.keys.done(handles[-1].id), 0)
    assert token[:1] == b"\xdc"  # a MessagePack array (of 16 to 65,535 strings)


def test_a_waiter_of_an_earlier_version_gets_netstrings_which_get_also_reads(r):
    """Mixed versions during an upgrade: a waiter that asked for netstrings gets them, and
    every waiter of the job reads them."""
    handles = [jobs.echo.delay(v) for v in _RESULTS]
    assert _waited(r, handles, old_waiters=True) == _RESULTS
    token = r.lindex(get_queue("default").keys.done(handles[0].id), 0)
    assert token.startswith(b"2:id")


def test_end_tokens_decode_exactly_as_redis_encodes_them(r):
    strings = [b"", b"a" * 31, b"b" * 32, b"c" * 255, b"d" * 256, b"e" * 65_535,
               b"f" * 65_536, bytes(range(256))] * 3
    for n in (1, 15, 16, len(strings)):  # array sizes: up to 15, then 2 length bytes
        assert _string_list(r.eval("return cmsgpack.pack(ARGV)", 0, *strings[:n])) == strings[:n]
    for bad in (b"\x92\xa1a", b"\x91\xa1ab", b"\x91\x01", b"\xc0"):
        with pytest.raises(PayloadError, match="malformed job notification"):
            _string_list(bad)


_BASIC = [b"v", b"1", b"id", b"j1", b"queue", b"default", b"func", b"tests.jobs.add",
          b"status", b"failed", b"payload", b"[[],{}]"]


@pytest.mark.parametrize("field, value, attribute, expected", [
    (b"priority", b"7", "priority", 7),
    (b"retry", b'{"max":3}', "retry", {"max": 3}),
    (b"scheduled_for", b"1000", "scheduled_for", 1000),
    (b"deaths", b"2", "deaths", 2),
    (b"error", b'{"type":"E","message":"m"}', "error", {"type": "E", "message": "m"}),
    (b"errors", b'[{"attempt":1}]', "errors", [{"attempt": 1}]),
    (b"cancel", b"1", "cancel_requested", True),
    (b"meta", b'{"k":1}', "meta", {"k": 1}),
    (b"progress", b"0.5", "progress", 0.5),
    (b"progress_msg", b"half", "progress_message", "half"),
    (b"trace", b'{"traceparent":"x"}', "trace", {"traceparent": "x"}),
    (b"limit_key", b"user:1", "limit_key", "user:1"),
    (b"max_concurrency", b"2", "max_concurrency", 2),
    (b"rate_n", b"10", "rate", (10, 1000, 1)),
    (b"limit_wait", b"1", "limit_wait", True),
])
def test_a_record_reads_a_field_few_jobs_have_when_it_is_the_only_one(field, value, attribute,
                                                                     expected):
    # The decoder skips these fields for jobs that have none of them: each one alone must
    # still reach the record (what the admin, retries and limits read).
    record = JobRecord.from_hash([*_BASIC, field, value])
    assert getattr(record, attribute) == expected
    assert getattr(JobRecord.from_hash(list(_BASIC)), attribute) != expected


def test_an_enqueue_refused_for_a_missing_dependency_changes_nothing(r):
    """The ended job whose id it reuses keeps its record and result; an outbox entry's
    marker is not set (the entry was not enqueued, so sending it again must try again)."""
    q = get_queue("default")
    done = jobs.add.using(job_id="daily").delay(1, 2)
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert (done.status, done.result) == ("finished", 3)
    with pytest.raises(JobNotFound, match="no-such-job"):
        jobs.add.using(job_id="daily", depends_on=["no-such-job"]).delay(3, 4)
    assert (done.status, done.result, q.counts()["finished"]) == ("finished", 3, 1)
    p = q.prepare("tests.jobs.add", (1, 2), job_id="entry", outbox="tok",
                  depends_on=["no-such-job"])
    with pytest.raises(JobNotFound):
        p.send()
    assert r.exists(p.marker) == 0


@pytest.mark.parametrize("job_id", ["order\t42", "line\nbreak", "bell\x07", ".", ".."])
def test_job_ids_that_could_not_be_shown_or_linked_are_refused(r, job_id):
    with pytest.raises(ValueError, match="printable"):
        jobs.add.using(job_id=job_id).delay(1, 1)
    assert r.dbsize() == 0


@pytest.mark.parametrize("options, error, fragment", [
    ({"delay": float("nan")}, ValueError, "finite number of seconds"),
    ({"delay": float("inf")}, ValueError, "finite number of seconds"),
    ({"delay": dt.timedelta(days=3_000_000)}, ValueError, "100 years"),
    ({"delay": "60"}, TypeError, "seconds .a number. or a timedelta"),
    ({"at": dt.date(2030, 1, 1)}, TypeError, "aware datetime"),
    ({"at": dt.datetime(9999, 12, 31, 23, 30, tzinfo=dt.timezone.utc)}, ValueError, "9000"),
    ({"at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "delay": 5}, ValueError,
     "not both"),
])
def test_a_due_time_that_could_not_be_kept_is_refused_at_enqueue(r, options, error, fragment):
    with pytest.raises(error, match=fragment):
        jobs.add.using(**options).delay(1, 1)
    assert r.dbsize() == 0


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), True])
def test_the_engine_refuses_a_timeout_that_is_no_finite_number(r, timeout):
    with pytest.raises(ValueError, match="finite positive number"):
        get_queue("default").prepare("tests.jobs.add", (1, 1), timeout=timeout)


def test_requeue_failed_requeues_each_failed_job_once_while_workers_run(r, monkeypatch):
    # A worker runs what is requeued at once, and it fails again: those jobs must not be
    # requeued a second time by the same call (side effects twice, and no end).
    q = get_queue("default")
    handles = [jobs.fail.delay(str(i)) for i in range(6)]
    call_command("rqworker", "default", "--burst", verbosity=0)
    real, calls = q.requeue, []

    def requeue_then_run(*ids: str) -> int:
        calls.append(ids)
        assert len(calls) <= 3, "requeue_failed keeps requeueing jobs that failed again"
        moved = real(*ids)
        call_command("rqworker", "default", "--burst", verbosity=0)
        return moved

    monkeypatch.setattr(q, "requeue", requeue_then_run)  # get_queue() caches the queue
    assert q.requeue_failed(batch=2) == 6
    assert sorted(i for ids in calls for i in ids) == sorted(h.id for h in handles)
    assert [h.refresh().record.attempts for h in handles] == [2] * 6


def test_empty_deletes_the_jobs_queued_when_it_started_not_those_enqueued_since(r, monkeypatch):
    q = get_queue("default")
    first = [jobs.add.delay(i, i) for i in range(5)]
    real, later = q.delete, []

    def delete_while_enqueueing(*ids: str) -> int:
        later.append(jobs.add.delay(0, 0))
        return real(*ids)

    monkeypatch.setattr(q, "delete", delete_while_enqueueing)
    assert q.empty(batch=2) == 5
    assert all(h.status is None for h in first)
    assert sorted(q.job_ids("queued")) == sorted(h.id for h in later)


def test_a_wait_resumed_after_a_result_ttl_0_job_ended_reads_its_end_token(r):
    # get() waits in slices, checking the job before each. A job kept for no time that ends
    # between two slices has no hash left, only the end token its waiter asked for.
    j = jobs.add.using(result_ttl=0).delay(2, 3)
    with pytest.raises(TimeoutError):
        j.get(timeout=0.01)  # registers the waiter; the slice ends before the job
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert not r.exists(j.queue.keys.job(j.id))  # deleted as it ended
    assert j.get(timeout=5) == 5
