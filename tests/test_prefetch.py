"""Prefetch and batched outcomes: what the worker's fast path must not change for users.

Prefetched jobs are claimed (leased) before a slot is free. They must still be cancelable
before they start, go back to their queue on shutdown without counting an attempt, and never
run twice. Finished outcomes of one queue are written in one script call that reports each
job's code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from django_redisq.engine.connection import RedisConnection
from django_redisq.engine.ops import one
from django_redisq.engine.queue import Queue
from django_redisq.engine.registry import Registry
from django_redisq.engine.worker import Worker, WorkerHooks, WorkerOptions
from tests.conftest import wait_for


def _queue(url: str) -> Queue:
    return Queue("default", RedisConnection(url))


def run_alongside(worker: Worker, scenario: Callable[[], None]) -> None:
    """Run ``worker`` until ``scenario`` (in a thread; it stops the worker) is done."""

    async def main() -> None:
        runner = asyncio.get_running_loop().run_in_executor(None, scenario)
        await worker.run()
        await runner

    asyncio.run(main())


def test_finish_many_reports_a_code_per_job(r, redis_server):
    q = _queue(redis_server.url)
    mine = [q.enqueue("noop").id for _ in range(2)]
    theirs = q.enqueue("noop").id
    _at, claimed = q.run(one(q.claim_call("me", 2, 60_000)))
    assert [c[0].decode() for c in claimed] == mine
    q.run(one(q.claim_call("other", 1, 60_000)))
    codes = q.run(one(q.finish_many_call(
        "me", [(mine[0], b"1"), (mine[1], b"2"), ("gone", b"3"), (theirs, b"4")])))
    assert codes == [1, 1, 0, -1]
    assert [q.job(i).status for i in mine] == ["finished", "finished"]
    assert q.job(theirs).status == "started"
    assert q.run(one(q.finish_many_call("me", [(mine[0], b"1")]))) == [-2]  # already ended


def test_prefetched_jobs_can_be_canceled_and_go_back_on_shutdown(r, redis_server):
    """One slot, three jobs buffered behind a job that blocks: cancel one of them before it
    starts, stop the worker, and the other two are queued again with no attempt counted."""
    gate = threading.Event()
    started = threading.Event()
    ran: list[str] = []
    registry = Registry()

    def blocker() -> None:
        started.set()
        gate.wait(30)

    def record(tag: str) -> None:
        ran.append(tag)

    registry.register(blocker, "blocker")
    registry.register(record, "record")
    q = _queue(redis_server.url)
    first = q.enqueue("blocker")
    waiting = [q.enqueue("record", [tag]) for tag in ("a", "b", "c")]
    worker = Worker([q], options=WorkerOptions(concurrency=1, prefetch=3, grace=30),
                    registry=registry)
    # As after a run of short jobs: the buffer may hold three (1 slot x 50 ms / 1 ms).
    worker._avg_run = 0.001

    def scenario() -> None:
        assert started.wait(20)
        wait_for(lambda: all(j.refresh().status == "started" for j in waiting), timeout=20,
                 message="the worker did not prefetch the three waiting jobs")
        assert q.cancel(waiting[0].id) == "started"
        wait_for(lambda: waiting[0].refresh().status == "canceled", timeout=20)
        worker.stop(graceful=True)
        gate.set()

    run_alongside(worker, scenario)
    assert first.refresh().status == "finished"
    assert ran == []  # nothing buffered ever ran: one canceled, two put back
    for job in waiting[1:]:
        rec = job.refresh().record
        assert (rec.status, rec.attempts, rec.worker) == ("queued", 0, None)
    assert q.job_ids("queued") == [j.id for j in waiting[1:]]
    assert q.counts()["started"] == 0


def test_claim_reply_and_record_match_what_the_script_wrote(r, redis_server):
    from django_redisq.engine.job import JobRecord
    from django_redisq.engine.queue import claimed

    q = _queue(redis_server.url)
    job = q.enqueue("noop", [1], priority=5)
    r.hset(f"redisq:{{default}}:job:{job.id}", "attempts", "garbage")  # read defensively
    at_ms, replies = q.run(one(q.claim_call("me", 5, 60_000)))
    assert len(replies) == 1
    rec = claimed(JobRecord.from_hash(replies[0][1]), "me", at_ms)
    stored = job.refresh().record
    assert (rec.status, rec.worker, rec.started_at) == ("started", "me", at_ms)
    assert (stored.status, stored.worker, stored.started_at) == ("started", "me", at_ms)
    assert stored.attempts == rec.attempts == 1  # garbage counts as 0
    assert q.run(one(q.claim_call("me", 5, 60_000))) == (0, [])


def test_a_key_of_another_type_in_the_queue_is_skipped_not_an_error(r, redis_server):
    q = _queue(redis_server.url)
    good = q.enqueue("noop")
    r.zadd("redisq:{default}:queued", {"bogus": 0})
    r.set("redisq:{default}:job:bogus", "not a hash")
    _at, replies = q.run(one(q.claim_call("me", 5, 60_000)))
    assert [i.decode() for i, _f in replies] == [good.id]
    assert r.zcard("redisq:{default}:queued") == 0


def test_a_dead_workers_prefetched_jobs_come_back_without_a_death(r, redis_server):
    """A worker that dies holds running jobs (a death each: they may be poison) and prefetched
    ones, which never ran: those come back as if never claimed."""
    q = _queue(redis_server.url)
    first, second = q.enqueue("noop"), q.enqueue("noop")
    _at, replies = q.run(one(q.claim_call("ghost", 2, 1, run_now=1)))  # lease of 1 ms
    assert [i.decode() for i, _f in replies] == [first.id, second.id]
    wait_for(lambda: q.run(one(q.maintain_call(3)))[0] == 2, timeout=5)
    ran, prefetched = first.refresh().record, second.refresh().record
    assert (ran.status, ran.deaths, ran.attempts) == ("queued", 1, 1)
    assert (prefetched.status, prefetched.deaths, prefetched.attempts) == ("queued", 0, 0)


def test_a_prefetched_job_that_starts_loses_its_mark(r, redis_server):
    """Once a prefetched job runs, its worker's death counts again (poison detection)."""
    gate = threading.Event()
    started = threading.Event()
    registry = Registry()
    registry.register(lambda: None, "quick")

    def blocker() -> None:
        started.set()
        gate.wait(30)

    registry.register(blocker, "blocker")
    q = _queue(redis_server.url)
    q.enqueue("quick")
    slow = q.enqueue("blocker")
    worker = Worker([q], options=WorkerOptions(concurrency=1, prefetch=1), registry=registry)
    worker._avg_run = 0.001  # as after short jobs: one job may be prefetched
    key = q.keys.job(slow.id)

    def scenario() -> None:
        assert started.wait(20)
        # Claimed as prefetched behind "quick", started when quick ended: unmarked since.
        wait_for(lambda: r.hget(key, "pf") == b"0", timeout=20,
                 message=lambda: f"pf is {r.hget(key, 'pf')!r}")
        worker.stop(graceful=True)
        gate.set()

    run_alongside(worker, scenario)
    assert slow.refresh().status == "finished"


def test_a_job_that_always_dies_prefetched_is_still_failed_as_poison(r, redis_server):
    """Should a job kill its worker before the worker clears its prefetch mark, every
    recovery would look harmless: those recoveries are bounded at 5 x MAX_DEATHS."""
    q = _queue(redis_server.url)
    job = q.enqueue("noop")
    for n in range(1, 16):
        _at, replies = q.run(one(q.claim_call(f"ghost-{n}", 1, 1, run_now=0)))
        assert len(replies) == 1
        wait_for(lambda: sum(q.run(one(q.maintain_call(3)))[:2]) == 1, timeout=5)
        rec = job.refresh().record
        if n < 15:
            assert (rec.status, rec.deaths, rec.attempts) == ("queued", 0, 0)
    assert rec.status == "failed" and rec.error["type"] == "WorkerDied"


def _claims_to_run(r: Any, url: str, work: Callable[[int], object], ran: list[int], n: int,
                   concurrency: int) -> int:
    """Run ``n`` jobs of ``work`` (which appends its argument to ``ran``) in a burst worker,
    check that each ran once, and return how many claims that took."""
    registry = Registry()
    registry.register(work, "work")
    q = _queue(url)
    q.enqueue_many([("work", [i], {}) for i in range(n)])
    r.config_resetstat()
    worker = Worker([q], options=WorkerOptions(concurrency=concurrency, burst=True),
                    registry=registry)
    asyncio.run(worker.run())
    assert sorted(ran) == list(range(n))
    return int(r.info("commandstats")["cmdstat_zpopmin"]["calls"])


def test_jobs_ending_one_at_a_time_are_refilled_in_batches(r, redis_server):
    """Sync jobs end one at a time (each in its own thread). While prefetched jobs wait, the
    worker tops its buffer up once half of it is used, so a steady stream of jobs costs about
    one claim per half buffer, not one claim (and one round trip) per job. All still run once."""
    ran: list[int] = []

    def work(i: int) -> None:
        time.sleep(0.005)
        ran.append(i)

    claims = _claims_to_run(r, redis_server.url, work, ran, 200, concurrency=4)
    assert claims <= 120, f"{claims} claims for 200 jobs"


def test_a_deep_queue_of_short_jobs_is_claimed_in_batches_bigger_than_the_slots(r, redis_server):
    """Once the worker knows its jobs are short, one claim fills the free slots and the
    prefetch buffer (up to 20 jobs per slot), and a top-up, once half the buffer is used, is
    about one full claim (100 jobs, as two scripts of 50): 600 no-op jobs at concurrency 10
    take about 16 claim scripts, not one per 10 jobs. All still run once."""
    ran: list[int] = []

    async def work(i: int) -> None:
        ran.append(i)

    claims = _claims_to_run(r, redis_server.url, work, ran, 600, concurrency=10)
    assert claims <= 20, f"{claims} claims for 600 jobs"


def test_a_claim_of_more_than_50_jobs_goes_as_scripts_of_50_in_one_round_trip(r, redis_server):
    """A script holds Redis, which serves no one else meanwhile, so a big claim is split into
    scripts of at most 50 jobs; they go in one pipeline, so the worker still waits for one
    round trip. The jobs come back in queue order, each once, and only those beyond
    ``run_now`` are marked prefetched."""
    q = _queue(redis_server.url)
    ids = [j.id for j in q.enqueue_many([("noop", (), {})] * 130)]
    q.run(one(q.claim_call("warm-up", 0, 60_000)))  # the script is loaded
    r.config_resetstat()
    reads_before = int(r.info("stats")["total_reads_processed"])
    replies = q.run(one(q.claim_op("me", 120, 60_000, run_now=60)))
    reads = int(r.info("stats")["total_reads_processed"]) - reads_before
    assert [job_id.decode() for _at, job_id, _fields in replies] == ids[:120]
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 3  # 50 + 50 + 20
    assert reads <= 2, f"{reads} requests read: the claims were not one pipeline"  # + INFO
    marks = [r.hget(q.keys.job(i), "pf") for i in ids[:120]]
    assert marks == [b"0"] * 60 + [b"1"] * 60
    assert q.job_ids("queued") == ids[120:]


def test_a_split_claim_that_empties_the_queue_still_offers_to_take_the_next_job(
        r, redis_server):
    """With an offer (direct hand-off), the claim that finds the queue empty makes it: the
    last of the scripts, whichever of them emptied the queue."""
    q = _queue(redis_server.url)
    ids = [j.id for j in q.enqueue_many([("noop", (), {})] * 70)]  # the second script empties it
    replies = q.run(one(q.claim_op("me", 120, 60_000, run_now=120, offer_ttl_ms=30_000)))
    assert [job_id.decode() for _at, job_id, _fields in replies] == ids
    assert r.zrange(q.keys.idle, 0, -1) == [b"60000|me"]


def test_a_claim_after_the_queue_ran_dry_is_one_script(r, redis_server):
    """More than one script's worth (several claim scripts in one pipeline) is asked only of
    a queue whose last claim came back full. Once a claim found the queue empty, the next
    look is one script, however big the prefetch buffer has grown meanwhile."""
    ran: list[int] = []

    async def work(i: int) -> None:
        ran.append(i)

    # ZPOPMIN calls: the first claim pops the one job, then finds the queue empty (2); once
    # that job ran the buffer has room for 200, and the burst worker's last look before it
    # exits is one script, one ZPOPMIN (two scripts, each with its own, when split).
    assert _claims_to_run(r, redis_server.url, work, ran, 1, concurrency=10) == 3


def test_a_big_claim_takes_no_lower_priority_job_while_a_higher_queue_may_hold_more(
        r, redis_server):
    """A claim asks a queue not known to be deep for one script's worth (50 jobs), less than
    the free room; when that comes back full the queue may hold more, so the claim stops
    there instead of filling the rest from a lower-priority queue. Jobs start in claim
    order, and every job of ``high`` starts before any of ``low``."""
    ran: list[str] = []

    async def work(tag: str) -> None:
        ran.append(tag)

    registry = Registry()
    registry.register(work, "work")
    conn = RedisConnection(redis_server.url)
    high, low = Queue("high", conn), Queue("low", conn)
    low.enqueue_many([("work", [f"low{i}"], {}) for i in range(20)])
    high.enqueue_many([("work", [f"high{i}"], {}) for i in range(300)])
    worker = Worker([high, low], options=WorkerOptions(concurrency=10, burst=True),
                    registry=registry)
    worker._avg_run = 0.001  # as after short jobs: the first claim has room for 100
    asyncio.run(worker.run())
    assert ran == [f"high{i}" for i in range(300)] + [f"low{i}" for i in range(20)]


def test_prefetched_jobs_kept_for_no_time_leave_no_key_behind(r, redis_server):
    """A job with result_ttl=0 is deleted as it finishes. The 'started' mark of a prefetched
    job must not follow that finish (it would write a hash that never expires): here a
    job_finished hook keeps each job in the worker's books a little after its outcome."""
    registry = Registry()
    registry.register(lambda: None, "quick")

    class Hooks(WorkerHooks):
        has_events = True

        async def event(self, name: str, record: Any, **info: Any) -> None:
            if name == "job_finished":
                await asyncio.sleep(0.001)  # a receiver's work, while the next flush goes

    q = _queue(redis_server.url)
    n = 5000
    q.enqueue_many([("quick", (), {})] * n, result_ttl=0)
    worker = Worker([q], options=WorkerOptions(concurrency=4, burst=True), registry=registry,
                    hooks=Hooks())
    asyncio.run(worker.run())
    assert worker.processed == n
    left = [k for k in r.scan_iter(match=q.keys.job("*"), count=1000)]
    assert left == [], f"{len(left)} job hashes left, e.g. {r.hgetall(left[0])}"
