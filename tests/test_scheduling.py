"""Delayed jobs, unique job ids, cancel, bounded memory, timeouts and retry policies."""

from __future__ import annotations

import asyncio
import threading

import pytest

from django_redisq import Retry, get_queue, job
from django_redisq.conf import clear_cache
from django_redisq.engine.errors import JobTimeout
from django_redisq.engine.keys import worker_key, workers_key
from django_redisq.engine.retry import retry_delay
from django_redisq.engine.worker import Worker, WorkerOptions
from tests import jobs
from tests.conftest import wait_for


def test_delayed_job_starts_on_time_with_an_idle_worker(r, worker_proc):
    w = worker_proc("default", "--concurrency", "1")
    # The worker is idle (subscribed, nothing to do) before the job is enqueued.
    wait_for(lambda: r.zcard("redisq:{workers}") == 1, timeout=20, message=w.output())
    j = jobs.add.using(delay=1.0).delay(1, 2)
    assert j.status == "scheduled"
    assert j.get(timeout=10) == 3
    rec = j.refresh().record
    lateness_ms = rec.started_at - rec.scheduled_for
    # Started no earlier than due, and within 100 ms after (recorded server timestamps).
    assert 0 <= lateness_ms <= 100, lateness_ms


def test_an_earlier_delayed_job_wakes_the_scheduler(r, worker_proc):
    w = worker_proc("default")
    wait_for(lambda: r.zcard("redisq:{workers}") == 1, timeout=20, message=w.output())
    late = jobs.add.using(delay=30).delay(0, 0)
    soon = jobs.add.using(delay=0.3).delay(1, 1)
    assert soon.get(timeout=10) == 2
    rec = soon.refresh().record
    assert 0 <= rec.started_at - rec.scheduled_for <= 100
    assert late.status == "scheduled"


def test_unique_job_id_from_100_threads_makes_one_job(r):
    barrier = threading.Barrier(100)
    ids: list[str] = []

    def enqueue(i: int) -> None:
        barrier.wait()
        ids.append(jobs.add.using(job_id="x").delay(i, i).id)

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ids == ["x"] * 100
    assert get_queue("default").count() == 1


def test_cancel_a_scheduled_job(r):
    j = jobs.add.using(delay=60).delay(1, 2)
    assert j.cancel() == "canceled"
    q = get_queue("default")
    assert q.counts()["scheduled"] == 0 and q.counts()["canceled"] == 1


def test_a_canceled_job_never_runs(r):
    j = jobs.record.delay("never")
    j.cancel()
    from django.core.management import call_command

    call_command("rqworker", "default", "--burst", verbosity=0)
    assert r.lrange("test:record", 0, -1) == []
    assert j.status == "canceled"


def test_finished_jobs_expire_and_the_key_count_returns_to_its_start(r, settings):
    settings.REDISQ = {**settings.REDISQ, "RESULT_TTL": 1}
    clear_cache()
    q = get_queue("default")
    worker = Worker([q], options=WorkerOptions(concurrency=50, heartbeat=0.2, lease=1.0))
    runner = threading.Thread(target=lambda: asyncio.run(worker.run()))
    runner.start()
    try:
        # Counted: every key but those that stay while the queue and its worker live. Not
        # counted: the FIFO counter (created by the first job that is queued rather than
        # handed to the idle worker), the stats hash (written in batches, a moment after a
        # job ends), the hand-off offer (it lapses 10 s after the worker's last claim) and
        # the worker's own keys. Any of them may appear between the two counts.
        stay = (q.keys.seq, q.keys.stats, q.keys.idle, workers_key("redisq"),
                worker_key("redisq", worker.name))

        def level() -> int:
            return int(r.dbsize()) - int(r.exists(*stay))

        # Starting level: a live worker, one job done and expired.
        first = q.enqueue("tests.jobs.add", [0, 0])
        wait_for(lambda: first.status is None and q.counts()["finished"] == 0
                 and r.zcard("redisq:{workers}") == 1, timeout=15,
                 message=lambda: f"{r.dbsize()} keys: {r.keys('*')}")
        start = level()
        for chunk in range(10):
            q.enqueue_many([("tests.jobs.add", [i, chunk], {}) for i in range(1000)])

        def left() -> str:  # what a failure needs: where the jobs are, and the other keys
            keys = sorted(k for k in r.keys("*") if not k.startswith(q.keys.job_prefix.encode()))
            return (f"{level()} keys left (start {start}); jobs by state {q.counts()}; "
                    f"worker: {worker.processed} done, {len(worker._ready)} prefetched, "
                    f"{worker._slots} slots busy; other keys: {keys}")

        wait_for(lambda: level() == start and q.counts()["finished"] == 0, timeout=30,
                 message=left)
        assert r.info("stats")["expired_keys"] >= 10_000
    finally:
        worker.stop()
        runner.join(10)
        clear_cache()


# -- cancelling a started job ---------------------------------------------------------------
def _started(r, name: str):
    return lambda: r.get(f"{name}:started")


def test_cancel_a_started_async_job(r, worker_proc):
    j = jobs.async_block.delay("ca")
    w = worker_proc("default")
    wait_for(_started(r, "ca"), timeout=20, message=w.output())
    assert j.cancel() == "started"  # requested; the worker stops it
    wait_for(lambda: j.status == "canceled", timeout=10, message=w.output())
    assert jobs.add.delay(1, 1).get(timeout=10) == 2


def test_cancel_a_started_thread_job_through_its_flag(r, worker_proc):
    j = jobs.cooperative.delay("ct")
    w = worker_proc("default")
    wait_for(_started(r, "ct"), timeout=20, message=w.output())
    j.cancel()
    wait_for(lambda: j.status == "canceled", timeout=10, message=w.output())


def test_cancel_a_started_process_job_kills_it(r, worker_proc):
    j = jobs.block.delay("cp")
    w = worker_proc("default", "--processes", "1")
    wait_for(_started(r, "cp"), timeout=20, message=w.output())
    j.cancel()
    wait_for(lambda: j.status == "canceled", timeout=10, message=w.output())
    # The process that ran it was replaced and serves the queue.
    assert jobs.add.delay(2, 3).get(timeout=10) == 5
    assert int(r.get("cp:runs")) == 1


# -- timeouts and retry policies ----------------------------------------------------------------
@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), True, 0, -1, "30"])
def test_a_timeout_that_is_no_finite_positive_number_fails_in_the_caller(timeout):
    """Infinity and NaN used to pass, then failed the job in the worker ("malformed job
    hash")."""
    with pytest.raises(ValueError, match=r"@job\(timeout=...\) must be a finite positive number"):
        job(timeout=timeout)
    with pytest.raises(ValueError, match=r"tests.jobs.add.using\(timeout=...\) must be a finite"):
        jobs.add.using(timeout=timeout)
    assert jobs.add.using(timeout=2.5).delay(1, 2).refresh().record.timeout == 2.5


def test_retry_on_takes_one_exception_class_and_refuses_a_string():
    assert Retry(on=ValueError).on == (ValueError,)
    policy = Retry(max=3, on=KeyError, jitter=0).to_dict()
    assert retry_delay(policy, 1, KeyError("k")) == 1.0
    assert retry_delay(policy, 1, ValueError()) is None
    with pytest.raises(TypeError, match="not the string 'ValueError'"):
        Retry(on="ValueError")
    with pytest.raises(TypeError, match="takes exception classes, got 3"):
        Retry(on=(ValueError, 3))


def test_a_long_retry_policy_keeps_retrying_at_its_max_delay():
    """``2.0 ** 1024`` overflows a float: the delay is capped before it is computed."""
    policy = Retry(max=5000, delay=1.0, backoff=2.0, max_delay=60.0, jitter=0).to_dict()
    assert [retry_delay(policy, n, ValueError()) for n in (1, 2, 7, 1024, 1025, 5000)] == [
        1.0, 2.0, 60.0, 60.0, 60.0, 60.0]
    assert retry_delay(policy, 5001, ValueError()) is None  # its max is reached
    with pytest.raises(ValueError, match=r"max_delay=\.\.\.\) must be a finite number"):
        Retry(max_delay=float("inf"))


def test_a_timed_out_job_is_a_timeout_error_for_retry_policies(r, worker_thread):
    """README's ``Retry(on=(ConnectionError, TimeoutError))`` retries a job that ran past its
    timeout: ``JobTimeout`` is a ``TimeoutError``."""
    assert issubclass(JobTimeout, TimeoutError)
    j = jobs.outlives_its_timeout.delay()
    wait_for(lambda: j.status == "failed", timeout=20)
    rec = j.refresh().record
    assert rec.attempts == 2  # retried once, as its policy allows
    assert [e["type"] for e in rec.errors] == ["django_redisq.engine.errors.JobTimeout"] * 2
