"""The worker with real processes and a real Redis: concurrency, recovery after SIGKILL,
poison jobs, graceful shutdown, timeouts, retries, strict priority and bad jobs."""

from __future__ import annotations

import json
import os
import signal

import pytest
from django.core.management import call_command

from django_redisq import get_queue
from tests import jobs
from tests.conftest import wait_for

FAST_LEASE = {"REDISQ_TEST_LEASE": "1", "REDISQ_TEST_HEARTBEAT": "0.2"}


def burst(*queues: str, concurrency: int | None = None) -> None:
    extra = ["--concurrency", str(concurrency)] if concurrency else []
    call_command("rqworker", *(queues or ("default", "high", "low")), "--burst", *extra,
                 verbosity=0)


def release(r, name: str) -> None:
    r.rpush(f"{name}:go", "1")


# -- concurrency (measured with a Redis counter, never timed) -----------------------------------
def test_50_async_jobs_run_at_once(r, worker_proc):
    handles = [jobs.async_gate.delay("c", "c:go") for _ in range(50)]
    w = worker_proc("high", "default", "--concurrency", "50")
    wait_for(lambda: int(r.get("c:max") or 0) >= 50, timeout=20,
             message=lambda: f"async jobs did not reach 50 at once:\n{w.output()}")
    r.set("c:go", "1")
    wait_for(lambda: all(h.status == "finished" for h in handles), timeout=20)
    assert int(r.get("c:max")) == 50


def test_sync_jobs_overlap_in_threads(r, worker_proc):
    handles = [jobs.sync_gate.delay("t", "t:go") for _ in range(8)]
    w = worker_proc("default", "--concurrency", "8")
    wait_for(lambda: int(r.get("t:max") or 0) >= 8, timeout=20,
             message=lambda: f"sync jobs did not overlap:\n{w.output()}")
    r.rpush("t:go", "1")
    wait_for(lambda: all(h.status == "finished" for h in handles), timeout=20)


def test_sync_jobs_overlap_across_processes(r, worker_proc):
    handles = [jobs.sync_gate.delay("p", "p:go") for _ in range(2)]
    w = worker_proc("default", "--processes", "2", "--concurrency", "1")
    wait_for(lambda: int(r.get("p:max") or 0) >= 2, timeout=20,
             message=lambda: f"two processes did not run two jobs at once:\n{w.output()}")
    r.rpush("p:go", "1")
    wait_for(lambda: all(h.status == "finished" for h in handles), timeout=20)
    workers = r.zrange("redisq:{workers}", 0, -1)
    assert len(workers) == 2


# -- no job lost --------------------------------------------------------------------------------
def test_job_of_a_sigkilled_worker_runs_to_completion_elsewhere(r, worker_proc):
    j = jobs.block_first_run.delay("k")
    first = worker_proc("default", env=FAST_LEASE)
    wait_for(lambda: r.get("k:started"), timeout=20, message=first.output())
    first.signal(signal.SIGKILL)
    first.wait()
    assert j.status == "started"  # still leased to the dead worker
    second = worker_proc("default", env=FAST_LEASE)
    assert j.get(timeout=20) == 2
    rec = j.refresh().record
    assert rec.attempts == 2 and rec.deaths == 1
    assert "put back" in second.output()


def test_poison_job_fails_after_the_death_limit_and_the_worker_goes_on(r, worker_proc):
    j = jobs.exit_process.delay("poison")
    w = worker_proc("default", "--processes", "1", env=FAST_LEASE)
    rec = wait_for(lambda: (x := j.queue.fetch_record(j.id)) and x.status == "failed" and x,
                   timeout=30, message=w.output())
    assert rec.error["type"] == "WorkerDied"
    assert "3 times" in rec.error["message"]
    assert int(r.get("poison:runs")) == 3
    # The supervisor replaced the dead process and still serves the queue.
    assert jobs.add.delay(2, 2).get(timeout=10) == 4


def test_sigterm_lets_the_running_job_finish(r, worker_proc):
    j = jobs.block.delay("term")
    w = worker_proc("default")
    wait_for(lambda: r.get("term:started"), timeout=20, message=w.output())
    w.signal(signal.SIGTERM)
    release(r, "term")
    assert w.wait(20) == 0
    assert j.status == "finished"


def test_sigterm_past_the_grace_period_puts_the_job_back(r, worker_proc):
    j = jobs.block.delay("grace")
    w = worker_proc("default", "--grace", "0.3")
    wait_for(lambda: r.get("grace:started"), timeout=20, message=w.output())
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.output()
    assert j.status == "queued"
    assert j.refresh().record.attempts == 0  # putting back does not count as an attempt
    release(r, "grace")


def test_second_sigint_stops_at_once_and_puts_the_job_back(r, worker_proc):
    j = jobs.block.delay("int")
    w = worker_proc("default")  # grace 30 s: only the second SIGINT can end it quickly
    wait_for(lambda: r.get("int:started"), timeout=20, message=w.output())
    w.signal(signal.SIGINT)
    wait_for(lambda: "finishing running jobs" in w.output(), timeout=10)
    w.signal(signal.SIGINT)
    assert w.wait(20) == 0, w.output()
    assert j.status == "queued"
    release(r, "int")


def test_one_ctrl_c_to_a_supervised_worker_lets_the_running_job_finish(r, worker_proc):
    # A terminal's Ctrl-C reaches every process of the group: the supervisor and its worker
    # processes each get a SIGINT. The worker must count that as one request, not two.
    j = jobs.block.delay("ctrlc")
    w = worker_proc("default", "--processes", "1")
    wait_for(lambda: r.get("ctrlc:started"), timeout=20, message=w.output())
    os.killpg(w.pid, signal.SIGINT)
    wait_for(lambda: "finishing running jobs" in w.output(), timeout=10, message=w.output)
    release(r, "ctrlc")
    assert w.wait(20) == 0, w.output()
    assert "stopping now" not in w.output()
    assert j.status == "finished"


def test_a_second_sigint_to_a_supervisor_alone_stops_its_workers_at_once(r, worker_proc):
    j = jobs.block.delay("sup2")
    w = worker_proc("default", "--processes", "1")  # grace 30 s
    wait_for(lambda: r.get("sup2:started"), timeout=20, message=w.output())
    w.signal(signal.SIGINT)  # the supervisor only, not its group
    wait_for(lambda: "finishing running jobs" in w.output(), timeout=10, message=w.output)
    w.signal(signal.SIGINT)
    assert w.wait(20) == 0, w.output()
    assert j.status == "queued"
    release(r, "sup2")


def test_sigquit_stops_at_once_and_puts_the_job_back(r, worker_proc):
    j = jobs.block.delay("quit")
    w = worker_proc("default")  # grace 30 s
    wait_for(lambda: r.get("quit:started"), timeout=20, message=w.output())
    w.signal(signal.SIGQUIT)
    assert w.wait(20) == 0, w.output()
    assert j.status == "queued"
    release(r, "quit")


def test_a_cancel_asked_for_before_the_worker_died_ends_the_job_canceled(r, worker_proc):
    # The job ignores the cancel flag (a blocking sync job); its worker dies before it ends.
    # Recovery must honour the cancel, not put the job back to run again.
    j = jobs.block.delay("cdie")
    first = worker_proc("default", env=FAST_LEASE)
    wait_for(lambda: r.get("cdie:started"), timeout=20, message=first.output())
    assert j.cancel() == "started"
    first.signal(signal.SIGKILL)
    first.wait()
    second = worker_proc("default", env=FAST_LEASE)
    wait_for(lambda: j.status == "canceled", timeout=20, message=second.output)
    release(r, "cdie")
    assert int(r.get("cdie:runs")) == 1
    assert j.queue.count("canceled") == 1 and j.queue.count("queued") == 0


def test_a_cancel_asked_for_before_a_shutdown_ends_the_job_canceled(r, worker_proc):
    j = jobs.block.delay("cterm")
    w = worker_proc("default", "--grace", "0.3")
    wait_for(lambda: r.get("cterm:started"), timeout=20, message=w.output())
    assert j.cancel() == "started"
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.output()
    release(r, "cterm")
    assert j.status == "canceled"
    assert j.queue.count("queued") == 0


def test_max_jobs_lets_the_jobs_it_took_run_to_their_end(r, worker_proc):
    j = jobs.block.delay("maxj")
    w = worker_proc("default", "--max-jobs", "1", "--grace", "0")
    wait_for(lambda: r.get("maxj:started"), timeout=20, message=w.output())
    release(r, "maxj")
    assert w.wait(20) == 0, w.output()
    assert j.status == "finished"


# -- timeouts -----------------------------------------------------------------------------------
def _timed_out(job) -> bool:
    rec = job.refresh().record
    return rec.status == "failed" and rec.error["type"] == "django_redisq.engine.errors.JobTimeout"


def test_async_job_past_its_timeout_is_cancelled(r):
    j = jobs.sleep_async_short_timeout.delay(30)
    burst()
    assert _timed_out(j)
    assert "timeout of 0.3 s" in j.record.error["message"]


def test_thread_mode_sync_job_past_its_timeout_fails(r, worker_proc):
    j = jobs.sleep_sync_short_timeout.delay(2)
    after = jobs.add.delay(1, 1)
    w = worker_proc("default", "--concurrency", "2", "--burst")
    assert w.wait(30) == 0, w.output()
    assert _timed_out(j)
    assert after.result == 2


def test_process_mode_sync_job_past_its_timeout_is_killed_and_replaced(r, worker_proc):
    j = jobs.sleep_sync_short_timeout.delay(600)
    w = worker_proc("default", "--processes", "1", "--concurrency", "1")
    wait_for(lambda: _timed_out(j), timeout=20, message=w.output())
    # The child that ran it is gone; its replacement serves the queue.
    assert jobs.add.delay(3, 4).get(timeout=10) == 7
    assert "replaced" in w.output()


# -- retries ------------------------------------------------------------------------------------
def test_job_failing_twice_then_succeeding(r, worker_proc):
    j = jobs.flaky_with_retry.delay("flaky", 2)
    w = worker_proc("default", "--max-jobs", "3")
    assert j.get(timeout=20) == 3
    rec = j.refresh().record
    assert rec.status == "finished" and rec.attempts == 3
    assert [e["message"] for e in rec.errors] == ["attempt 1 fails", "attempt 2 fails"]
    assert w.wait(20) == 0


def test_each_failed_attempt_names_the_worker_that_ran_it(r, worker_proc):
    j = jobs.flaky_with_retry.delay("flaky-workers", 2)
    for _ in range(3):  # one worker process per attempt
        w = worker_proc("default", "--max-jobs", "1")
        assert w.wait(20) == 0, w.output()
    rec = j.refresh().record
    assert rec.status == "finished" and rec.attempts == 3
    workers = [e["worker"] for e in rec.errors] + [rec.worker]
    assert len(set(workers)) == 3 and all(workers), workers


def test_job_failing_always_ends_failed_with_the_last_traceback(r, worker_proc):
    j = jobs.always_fails_with_retry.delay("always")
    w = worker_proc("default", "--max-jobs", "3")
    assert w.wait(20) == 0, w.output()
    rec = j.refresh().record
    assert rec.status == "failed" and rec.attempts == 3
    assert len(rec.errors) == 3
    assert "ValueError: always" in rec.error["traceback"]
    # Each attempt's traceback is stored once: the last one is not repeated in ``error``.
    raw = r.hgetall(j.queue.keys.job(j.id))
    assert b"".join(raw.values()).count(b"Traceback (most recent call last)") == 3
    assert b"Traceback" not in raw[b"error"]


def test_retry_waits_in_scheduled_state(r):
    j = jobs.flaky_with_retry.using(job_id="sched").delay("sched", 5)
    burst("default")  # the first attempt fails; the retry waits 50 ms, past this burst
    assert j.status in ("scheduled", "queued")
    assert j.refresh().record.attempts == 1


# -- strict priority ----------------------------------------------------------------------------
def test_single_slot_worker_takes_higher_queues_first(r):
    for q in ("low", "default", "high"):
        for i in range(3):
            jobs.record.using(queue=q).delay(f"{q}{i}")
    burst("high", "default", "low", concurrency=1)
    order = [x.decode() for x in r.lrange("test:record", 0, -1)]
    assert order == ["high0", "high1", "high2", "default0", "default1", "default2",
                     "low0", "low1", "low2"]


# -- bad jobs never kill the worker -------------------------------------------------------------
def _write_raw_job(r, job_id: str, **fields: str) -> None:
    q = get_queue("default")
    base = {"v": "1", "id": job_id, "queue": "default", "func": "tests.jobs.add",
            "ser": "json", "payload": "[[1,2],{}]", "status": "queued", "result_ttl": "60000",
            "failure_ttl": "60000"}
    base.update(fields)
    r.hset(q.keys.job(job_id), mapping=base)
    r.zadd(q.keys.state("queued"), {job_id: 1})


@pytest.mark.parametrize("fields, reason", [
    ({"payload": "{not json"}, "cannot decode the job's arguments"),
    ({"payload": "[1, 2]"}, "cannot decode the job's arguments"),
    ({"v": "99"}, "schema version 99"),
    ({"priority": "urgent"}, "malformed job hash"),
    ({"attempts": "many", "payload": "[[1,2],{}]"}, None),  # counted from 0: it just runs
])
def test_undecodable_job_fails_and_the_worker_goes_on(r, fields, reason):
    _write_raw_job(r, "bad", **fields)
    good = jobs.add.delay(1, 1)
    burst("default")
    q = get_queue("default")
    if reason is None:
        assert q.job("bad").result == 3
    else:
        assert "bad" in q.job_ids("failed")
        raw_error = json.loads(r.hget(q.keys.job("bad"), "error"))
        assert reason in raw_error["message"]
    assert good.result == 2


def test_a_key_of_the_wrong_type_in_a_queue_is_skipped(r):
    q = get_queue("default")
    r.set(q.keys.job("imposter"), "not a hash")
    r.zadd(q.keys.state("queued"), {"imposter": 0})
    good = jobs.add.delay(1, 1)
    burst("default")
    assert good.result == 2
    assert q.count() == 0


def test_unserializable_result_fails_the_job(r):
    j = jobs.unserializable_result.delay()
    good = jobs.add.delay(1, 1)
    burst("default")
    assert j.status == "failed"
    assert "return value of tests.jobs.unserializable_result" in j.record.error["message"]
    assert good.result == 2


def test_exception_whose_str_raises_fails_the_job(r):
    j = jobs.raise_bad_str.delay()
    good = jobs.add.delay(1, 1)
    burst("default")
    assert j.status == "failed"
    assert j.record.error["type"] == "tests.jobs.BadStr"
    assert "unprintable BadStr" in j.record.error["message"]
    assert good.result == 2


@pytest.mark.parametrize("func", [jobs.raise_base, jobs.araise_base], ids=["sync", "async"])
def test_a_job_raising_systemexit_or_another_baseexception_fails_and_the_worker_goes_on(r, func):
    # Not an Exception, but an error of the job's own: it ends failed with its traceback at
    # once (no retries by default, no lease expiry, no re-run), as any other error.
    exits, aborts = func.delay("exit"), func.delay("abort")
    good = jobs.add.delay(1, 1)
    burst("default")
    assert (exits.status, aborts.status) == ("failed", "failed")
    assert exits.record.error["type"] == "SystemExit"
    assert aborts.record.error["type"] == "tests.jobs.Abort"
    assert "stop here" in aborts.record.error["message"]
    assert "raise Abort" in aborts.record.error["traceback"]
    assert exits.record.attempts == aborts.record.attempts == 1
    assert good.result == 2


def test_a_lease_renewal_extends_the_leases_still_held_and_reports_the_lost_ones(r):
    """A heartbeat renews every job a worker holds (running and prefetched): leases it still
    owns move to the new deadline; a job recovered and claimed by another worker meanwhile
    is reported lost and keeps the other worker's lease."""
    from django_redisq.engine.ops import one

    q = get_queue("default")
    q.enqueue_many([("tests.jobs.add", [i, i], {}) for i in range(30)])
    _now, claimed = q.run(one(q.claim_call("worker-a", 30, 1_000)))
    ids = [job_id.decode() for job_id, _fields in claimed]
    assert len(ids) == 30
    r.hset(q.keys.job(ids[0]), "worker", "worker-b")
    r.hset(q.keys.job(ids[1]), "cancel", "1")
    before = dict(r.zrange(q.keys.state("started"), 0, -1, withscores=True))
    lost, cancel = q.run(one(q.renew_call("worker-a", 600_000, ids)))
    assert [x.decode() for x in lost] == [ids[0]]
    assert [x.decode() for x in cancel] == [ids[1]]
    after = dict(r.zrange(q.keys.state("started"), 0, -1, withscores=True))
    assert all(after[i.encode()] > before[i.encode()] + 500_000 for i in ids[1:])
    assert after[ids[0].encode()] == before[ids[0].encode()]


# -- a stale run's outcome and a later job of the same id ---------------------------------------
def _claim(q, worker: str) -> list[str]:
    from django_redisq.engine.ops import one

    _now, claimed = q.run(one(q.claim_call(worker, 1, 30_000)))
    return [job_id.decode() for job_id, _fields in claimed]


@pytest.mark.parametrize("outcome", ["finish", "fail"])
@pytest.mark.parametrize("how", ["deleted", "requeued"])
def test_the_end_of_a_run_leaves_a_new_queued_job_of_its_id_alone(r, how, outcome):
    """A running job is deleted and its id enqueued anew (or it was recovered, failed
    elsewhere and requeued): when the old run ends, the queued job is not its to end."""
    from django_redisq.engine.ops import one

    q = get_queue("default")
    jobs.add.using(job_id="report").delay(1, 1)
    assert _claim(q, "old") == ["report"]
    if how == "deleted":
        assert q.delete("report") == 1
        new = jobs.add.using(job_id="report").delay(20, 22)
    else:
        r.zadd(q.keys.state("started"), {"report": 0})  # the lease of "old" expired
        assert q.run(one(q.maintain_call(max_deaths=3)))[0] == 1
        assert _claim(q, "other") == ["report"]
        assert q.run(one(q.fail_call("report", "other", '{"type": "E", "message": "m"}',
                                     "[]"))) == b"failed"
        assert q.requeue("report") == 1
        new = q.job("report")
    if outcome == "finish":
        assert q.run(one(q.finish_call("report", "old", b"2"))) == -2
    else:
        assert q.run(one(q.fail_call("report", "old", '{"type": "E", "message": "m"}',
                                     "[]"))) == b""
    assert q.job_status("report") == "queued"
    assert q.fetch_record("report").result is None
    burst("default")
    assert (new.status, new.result) == ("finished", 42 if how == "deleted" else 2)


@pytest.mark.parametrize("outcome", ["finish", "fail"])
def test_the_end_of_a_run_whose_job_recovery_put_back_ends_it(r, outcome):
    """Our lease expired and recovery queued the job again: it has run, so its outcome is
    recorded and it does not run a second time."""
    from django_redisq.engine.ops import one

    q = get_queue("default")
    j = jobs.add.using(job_id="report").delay(1, 1)
    assert _claim(q, "old") == ["report"]
    r.zadd(q.keys.state("started"), {"report": 0})
    assert q.run(one(q.maintain_call(max_deaths=3)))[0] == 1
    assert j.status == "queued"
    if outcome == "finish":
        assert q.run(one(q.finish_call("report", "old", b"2"))) == 1
        assert (j.status, j.result) == ("finished", 2)
    else:
        assert q.run(one(q.fail_call("report", "old", '{"type": "E", "message": "m"}',
                                     "[]"))) == b"failed"
    assert q.count() == 0
