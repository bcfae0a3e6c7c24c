"""Round trips are counted: enqueue is one command on the server (one script call)."""

from __future__ import annotations

from django_redisq import get_queue
from tests import jobs


def _reads(r) -> int:
    return int(r.info("stats")["total_reads_processed"])


def test_enqueue_is_one_round_trip(r):
    jobs.add.delay(0, 0)  # the first call loads the script (EVALSHA, NOSCRIPT, SCRIPT LOAD)
    r.config_resetstat()
    before = _reads(r)
    for i in range(50):
        jobs.add.delay(i, i)
    # The server read one request per enqueue (plus this test's own INFO), and each request
    # was one EVALSHA: the script's inner commands are not round trips.
    assert _reads(r) - before == 50 + 1
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 50


def test_enqueue_many_is_one_round_trip_for_the_lot(r):
    q = get_queue("default")
    q.enqueue("tests.jobs.add", [0, 0])
    reads_before = int(r.info("stats")["total_reads_processed"])
    q.enqueue_many([("tests.jobs.add", [i, i], {}) for i in range(100)])
    reads = int(r.info("stats")["total_reads_processed"]) - reads_before
    # One pipeline: the server reads ~20 KB of requests in a few socket reads (how many depends
    # on timing and load), far fewer than one per job (one by one it would be 100 or more).
    assert reads < 50
    assert q.count() == 101


def test_scripts_are_reloaded_after_redis_forgets_them(r):
    """After SCRIPT FLUSH (or a Redis restart) single calls, pipelines and the worker's own
    calls reload their script on NOSCRIPT and go on."""
    from django.core.management import call_command

    q = get_queue("default")
    r.script_flush()
    single = jobs.add.delay(1, 2)
    r.script_flush()
    batch = q.enqueue_many([("tests.jobs.add", [i, i], {}) for i in range(3)])
    r.script_flush()
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert single.result == 3
    assert [j.result for j in batch] == [0, 2, 4]


def test_enqueue_many_is_one_script_call_per_hundred_jobs_and_keeps_their_order(r):
    q = get_queue("default")
    first = q.enqueue_many([("tests.jobs.add", [0, 0], {})] * 2)  # the script is loaded
    r.config_resetstat()
    batch = q.enqueue_many([("tests.jobs.add", [i, i], {}) for i in range(250)])
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 3  # 100 + 100 + 50
    # FIFO, as one by one
    assert q.job_ids("queued", 0, 300) == [j.id for j in first + batch]


def test_send_many_mixes_cron_ticks_with_plain_jobs_in_order(r):
    """Jobs with a ``once`` key (cron ticks) go in their own script calls, between runs of
    plain jobs; each reply still reaches its own job."""
    q = get_queue("default")
    # Both scripts loaded first: calls refused with NOSCRIPT are sent again after the others
    # of their pipeline, which would change the order (once per Redis restart).
    q.enqueue_many([("tests.jobs.add", [0, 0], {})] * 2)
    q.enqueue("tests.jobs.add", [0, 0])
    q.empty()
    plain1, tick, plain2, tick_again = (
        q.prepare("tests.jobs.add", [1, 1]),
        q.prepare("tests.jobs.add", [2, 2], job_id="cron:s:1000", once=("s", 1000)),
        q.prepare("tests.jobs.add", [3, 3]),
        q.prepare("tests.jobs.add", [4, 4], job_id="cron:s:1000b", once=("s", 1000)))
    q.send_many([plain1, tick, plain2, tick_again])
    assert [q.job(p.id).status for p in (plain1, tick, plain2)] == ["queued"] * 3
    assert q.job(tick_again.id).status is None  # the same tick: not enqueued twice
    assert q.job_ids("queued", 0, 10) == [plain1.id, tick.id, plain2.id]


def test_a_bulk_enqueue_orders_by_priority_then_first_come_with_single_enqueues_around(r):
    """Jobs of one ``send_many`` take their places in the queue as if sent one by one: by
    priority, then in order, before and after jobs enqueued singly."""
    q = get_queue("default")
    before = q.enqueue("tests.jobs.add", [0, 0])
    low, high, low2 = (q.prepare("tests.jobs.add", [1, 1]),
                       q.prepare("tests.jobs.add", [2, 2], priority=10),
                       q.prepare("tests.jobs.add", [3, 3]))
    q.send_many([low, high, low2])
    after = q.enqueue("tests.jobs.add", [4, 4])
    assert q.job_ids("queued", 0, 10) == [high.id, before.id, low.id, low2.id, after.id]
