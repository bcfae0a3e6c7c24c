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
