"""Direct hand-off: a job enqueued onto an empty queue goes straight to an idle worker.

An idle worker offers to take the next job of each queue it found empty; the enqueue script
leases the job to it and publishes it on the worker's own channel, so the worker starts it
without a claim. What users rely on: the job runs once, on a live worker, in queue order;
nothing is handed to a dead, busy, stopping or suspended worker, or if it is, it comes back.
"""

from __future__ import annotations

import signal
import threading

from django_redisq.engine.connection import RedisConnection
from django_redisq.engine.ops import Call, one
from django_redisq.engine.queue import Queue, _netstrings, handoff_record
from django_redisq.engine.registry import Registry
from django_redisq.engine.scripts import ENQUEUE_SCRIPT
from django_redisq.engine.worker import Worker, WorkerOptions
from tests.conftest import wait_for
from tests.test_prefetch import run_alongside

IDLE = "redisq:{%s}:idle"


def _queue(url: str, name: str = "default") -> Queue:
    return Queue(name, RedisConnection(url))


def offers(r, queue: str = "default") -> list[str]:  # type: ignore[no-untyped-def]
    return [m.decode() for m in r.zrange(IDLE % queue, 0, -1)]


def test_a_job_enqueued_for_an_idle_worker_is_leased_to_it_at_once(r, redis_server):
    """The enqueue itself leases the job to the idle worker: it is 'started' on that worker
    when ``enqueue`` returns, runs once, and the worker offers again afterwards."""
    gate, ran = threading.Event(), []
    registry = Registry()

    def step(tag: str) -> str:
        ran.append(tag)
        gate.wait(20)
        return tag

    registry.register(step, "step")
    q = _queue(redis_server.url)
    worker = Worker([q], options=WorkerOptions(concurrency=2, name="w1"), registry=registry)

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r) == ["30000|w1"], message="the idle worker made no offer")
            job = q.enqueue("step", ["a"])
            rec = job.refresh().record  # read right after the enqueue: no claim in between
            assert (rec.status, rec.worker, rec.attempts) == ("started", "w1", 1)
            assert rec.started_at == rec.enqueued_at
            assert r.zscore("redisq:{default}:started", job.id) is not None
            assert r.zcard("redisq:{default}:queued") == 0
            gate.set()
            assert job.get(timeout=10) == "a"
            # The offer went with the job; it is made again once the worker has a free slot.
            wait_for(lambda: offers(r) == ["30000|w1"], message="the worker did not offer again")
            second = q.enqueue("step", ["b"])
            assert second.refresh().record.worker == "w1"
            assert second.get(timeout=10) == "b"
        finally:
            gate.set()
            worker.stop()

    run_alongside(worker, scenario)
    assert ran == ["a", "b"]
    assert offers(r) == []  # withdrawn on stop


def test_jobs_already_waiting_keep_their_turn(r, redis_server):
    """An offer only takes a job enqueued onto an empty queue: with jobs waiting, a new job
    queues behind them, and the offer stands."""
    q = _queue(redis_server.url)
    r.zadd(IDLE % "default", {"30000|ghost": 2**50})
    first = q.enqueue("noop")
    # The ghost has no subscriber, so the first job is queued and its offer dropped.
    assert first.refresh().status == "queued"
    assert offers(r) == []
    r.zadd(IDLE % "default", {"30000|ghost": 2**50})
    second = q.enqueue("noop")
    assert second.refresh().status == "queued"
    assert q.job_ids("queued") == [first.id, second.id]
    assert offers(r) == ["30000|ghost"]  # not taken: the queue was not empty


def test_a_lapsed_offer_is_not_taken(r, redis_server):
    q = _queue(redis_server.url)
    r.zadd(IDLE % "default", {"30000|old": 1})  # lapsed in 1970
    job = q.enqueue("noop")
    assert job.refresh().status == "queued"
    assert r.exists(IDLE % "default") == 0


def test_a_shorter_offer_does_not_cut_a_longer_one_short(r, redis_server):
    """Workers with different heartbeats make offers of different lengths; the offer set
    lives as long as its longest offer, whichever order they came in."""
    q = _queue(redis_server.url)
    for first, second in ((60000, 5000), (5000, 60000)):
        r.delete(IDLE % "default")
        assert q.run(one(q.offer_call("long" if first > second else "short", 30000, first)))
        assert q.run(one(q.offer_call("short" if first > second else "long", 30000, second)))
        assert 5000 < r.pttl(IDLE % "default") <= 60000, (first, second)


def test_the_offer_of_a_killed_worker_is_skipped(r, redis_server, worker_proc):
    """A worker SIGKILLed while idle leaves its offer behind; Redis sees its connections
    close, so the next enqueue finds no receiver and queues the job for the others."""
    w = worker_proc("default", "--name", "doomed", "--concurrency", "1")
    wait_for(lambda: offers(r) == ["30000|doomed"], timeout=30,
             message="the worker made no offer")
    w.signal(signal.SIGKILL)
    w.wait()
    keys = _queue(redis_server.url).keys
    channels = (keys.handoff("doomed"), keys.handoff_netstrings("doomed"))
    wait_for(lambda: [n for _, n in r.pubsub_numsub(*channels)] == [0, 0],
             message="Redis kept the subscriptions")
    assert offers(r) == ["30000|doomed"]
    from tests.jobs import add

    job = add.delay(2, 3)
    rec = job.refresh().record
    assert (rec.status, rec.worker, rec.attempts) == ("queued", None, 0)
    assert offers(r) == []
    survivor = worker_proc("default", "--burst")
    assert survivor.wait() == 0
    assert job.get(timeout=1) == 5


def test_a_job_handed_to_a_busy_worker_goes_back_and_runs_once(r, redis_server):
    """One slot, two queues: a job on the first takes the slot; the worker's offer on the
    second still stands, so a job there is handed over, put back (no slot), and run once the
    slot frees, with one attempt."""
    gate, ran = threading.Event(), []
    registry = Registry()

    def block() -> None:
        ran.append("block")
        gate.wait(20)

    def record(tag: str) -> None:
        ran.append(tag)

    registry.register(block, "block")
    registry.register(record, "record")
    first, second = _queue(redis_server.url, "first"), _queue(redis_server.url, "second")
    worker = Worker([first, second], options=WorkerOptions(concurrency=1, name="solo"),
                    registry=registry)
    jobs = []

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r, "first") and offers(r, "second"),
                     message="the idle worker made no offers")
            jobs.append(first.enqueue("block"))
            wait_for(lambda: ran == ["block"], message="the blocking job did not start")
            jobs.append(second.enqueue("record", ["x"]))
            wait_for(lambda: jobs[1].refresh().status == "queued",
                     message="the busy worker did not put the handed job back")
            assert jobs[1].refresh().record.attempts == 0
            gate.set()
            jobs[1].get(timeout=10)
        finally:
            gate.set()
            worker.stop()

    run_alongside(worker, scenario)
    assert ran == ["block", "x"]
    rec = jobs[1].refresh().record
    assert (rec.status, rec.attempts, rec.worker) == ("finished", 1, "solo")


def test_a_suspended_worker_withdraws_its_offer(r, redis_server, worker_proc):
    from django.core.management import call_command

    from tests.jobs import add

    w = worker_proc("default", "--name", "napper", "--concurrency", "1")
    wait_for(lambda: offers(r) == ["30000|napper"], timeout=30, message="no offer")
    call_command("rqsuspend")
    try:
        wait_for(lambda: offers(r) == [], message="the suspended worker kept its offer")
        job = add.delay(2, 3)
        assert job.refresh().status == "queued"
    finally:
        call_command("rqresume")
    assert job.get(timeout=10) == 5  # run once resumed
    w.signal(signal.SIGTERM)
    assert w.wait() == 0


def test_a_malformed_job_handed_over_fails_with_its_reason(r, redis_server):
    """A job hash the worker cannot read (written by a newer version, say) fails at once
    with the reason, as on the claim path; the worker goes on."""
    registry = Registry()
    registry.register(lambda: "ok", "ok")
    q = _queue(redis_server.url)
    worker = Worker([q], options=WorkerOptions(name="reader"), registry=registry)
    bad_id = "bad-version"

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r) == ["30000|reader"], message="no offer")
            k = q.keys
            q.run(one(Call(ENQUEUE_SCRIPT, [k.job(bad_id)],
                           # id, base, priority, flag, options, then v (unreadable),
                           # queue, func, payload, timeout, result_ttl, failure_ttl
                           [bad_id, k.base, 0, "0", "", "99", "default", "ok", "[[],{}]",
                            "", 60000, 60000])))
            wait_for(lambda: q.job_status(bad_id) == "failed",
                     message="the malformed job did not fail")
            wait_for(lambda: offers(r) == ["30000|reader"], message="no offer after the failure")
            assert q.enqueue("ok").get(timeout=10) == "ok"
        finally:
            worker.stop()

    run_alongside(worker, scenario)
    assert "schema version 99" in r.hget(q.keys.job(bad_id), "error").decode()


def test_a_bulk_enqueue_for_an_idle_worker_hands_over_the_first_and_queues_the_rest(
        r, redis_server):
    """``enqueue_many`` onto an empty queue: the first job goes to the idle worker, the rest
    are queued behind it and wake it; every job runs once, in the order given."""
    ran: list[int] = []
    registry = Registry()
    registry.register(ran.append, "record")
    q = _queue(redis_server.url)
    worker = Worker([q], options=WorkerOptions(concurrency=1, name="w1"), registry=registry)

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r) == ["30000|w1"], message="the idle worker made no offer")
            batch = q.enqueue_many([("record", [i], {}) for i in range(150)])  # two calls
            for job in batch:
                job.get(timeout=10)
            first = batch[0].refresh().record
            assert (first.worker, first.started_at) == ("w1", first.enqueued_at)  # handed over
        finally:
            worker.stop()

    run_alongside(worker, scenario)
    assert ran == list(range(150))


def test_jobs_of_a_queue_without_a_default_timeout_run_with_none(r, redis_server):
    """A queue made with ``default_timeout=None`` sends its jobs with no timeout: handed to an
    idle worker, queued behind another, or claimed, each runs and reads back with none."""
    gate = threading.Event()
    registry = Registry()

    def hold() -> str:
        gate.wait(20)
        return "held"

    registry.register(hold, "hold")
    registry.register(lambda: "ok", "ok")
    q = Queue("default", RedisConnection(redis_server.url), default_timeout=None)
    worker = Worker([q], options=WorkerOptions(concurrency=1, name="w1", prefetch=0),
                    registry=registry)

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r) == ["30000|w1"], message="the idle worker made no offer")
            first = q.enqueue("hold")  # handed over: the worker is busy with it
            wait_for(lambda: first.status == "started", message="the job was not handed over")
            queued = [q.enqueue("ok"), q.enqueue("ok")]  # the second takes the short path
            assert [j.refresh().record.timeout for j in (first, *queued)] == [None] * 3
            gate.set()
            assert first.get(timeout=10) == "held"
            assert [j.get(timeout=10) for j in queued] == ["ok", "ok"]
        finally:
            worker.stop()

    run_alongside(worker, scenario)


def test_a_worker_of_an_earlier_version_gets_its_jobs_as_netstrings(r, redis_server):
    """Mixed versions during an upgrade. A worker of an earlier version listens for
    netstrings on its old channel only: the enqueue finds no receiver for the packed message
    and sends it that way. The current worker reads either form alike (it listens on both
    channels, for enqueuers of earlier versions)."""
    q = _queue(redis_server.url)
    old = r.pubsub()
    old.subscribe(q.keys.handoff_netstrings("old"))
    assert old.get_message(timeout=5)["type"] == "subscribe"
    assert q.run(one(q.offer_call("old", 30000, 60000)))
    job = q.enqueue("noop", ["x"])
    assert job.status == "started"
    message = wait_for(lambda: old.get_message(timeout=1), message="no hand-off message")
    old.close()
    assert message["data"].startswith(b"13:")  # the claim time (ms), a netstring
    job_id, record = handoff_record(message["data"], "old")
    assert job_id == job.id and record.call() == (["x"], {})
    assert (record.status, record.worker) == ("started", "old")
    packed = r.eval("return cmsgpack.pack(ARGV)", 0, *_netstrings(message["data"]))
    assert handoff_record(packed, "old") == (job_id, record)


def test_a_worker_listens_for_hand_offs_in_either_form(r, redis_server):
    q = _queue(redis_server.url)
    worker = Worker([q], options=WorkerOptions(name="both"), registry=Registry())

    def scenario() -> None:
        try:
            wait_for(lambda: offers(r) == ["30000|both"], message="no offer")
            channels = (q.keys.handoff("both"), q.keys.handoff_netstrings("both"))
            assert [n for _, n in r.pubsub_numsub(*channels)] == [1, 1]
        finally:
            worker.stop()

    run_alongside(worker, scenario)
