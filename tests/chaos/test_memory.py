"""Bounded Redis memory: after 100,000 jobs drain and their TTLs pass, Redis holds only expiring
keys and a bounded set of per-queue structures, and ``used_memory`` is back near its baseline.

A private redis-server (nothing else writes to it) and one ``rqworker`` (async no-op jobs,
concurrency 100). The baseline is taken once the worker serves and every script is loaded.
Jobs are enqueued with ``enqueue_many`` in batches of 1,000 and ``result_ttl=1``; the worker's
maintenance sweep (every heartbeat, 0.5 s here) drops expired ids from the finished registry,
and Redis expires the job hashes. Then every key is SCANned.

``REDISQ_SOAK_JOBS`` changes the count (default 100,000). Each phase has its own deadline (the
worker serving 30 s, the drain 150 s, the sweep and the expiry 20 s each), which bounds the run;
its wall time is reported, not asserted (about 30-90 s for 100,000 on a 2-core machine: the
drain took 73-75 s of the old 80 s deadline on Python 3.10, CI's oldest env). Timing targets
live in ``bench/``.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import redis

from django_redisq.engine.connection import RedisConnection
from django_redisq.engine.queue import Queue
from django_redisq.engine.scripts import ALL_SCRIPTS
from tests.conftest import RedisServer, wait_for

JOBS = int(os.environ.get("REDISQ_SOAK_JOBS", "100000"))
BATCH = 1_000
#: How far above the baseline used_memory may stay: 1 MiB, or 10% when the baseline is larger.
SLACK = 1024 * 1024

#: Keys allowed to stay without a TTL, one pattern per per-queue (or per-deployment)
#: structure; each is bounded by the number of queues, workers or schedules, not by jobs.
ALLOWED = {
    # FIFO counter of each queue: one string per queue.
    r"redisq:\{default\}:seq": "queue sequence counter",
    # State registries: one sorted set per queue and state (Redis deletes them when empty;
    # terminal ones are trimmed by the maintenance sweep as their entries expire).
    r"redisq:\{default\}:(queued|started|scheduled|deferred|finished|failed|canceled)":
        "state registry",
    # Job counters and time histograms (metrics): one hash per queue, whose fields are per
    # registered function, never per job (checked below).
    r"redisq:\{default\}:stats": "metrics counters",
    # Registry of workers, scored by last heartbeat; silent workers leave it after an hour.
    r"redisq:\{workers\}": "worker registry",
    # Last enqueued tick of each periodic schedule: one per schedule.
    r"redisq:\{default\}:cron:[^:]+": "cron last tick",
    # Set by rqsuspend (with or without --duration), one per deployment.
    r"redisq:suspended": "suspension flag",
}


@pytest.mark.timeout(300)  # the phases' own deadlines add up to 240 s
def test_memory_is_bounded_after_a_soak(report):
    server = RedisServer()
    server.start()
    try:
        _soak(server, report)
    finally:
        server.stop()


def _soak(server: RedisServer, report) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import WorkerProcess

    client = redis.Redis.from_url(server.url)
    queue = Queue("default", RedisConnection(server.url))
    for script in ALL_SCRIPTS:
        client.script_load(script.source)
    env = {"REDISQ_TEST_REDIS_URL": server.url, "REDISQ_TEST_EXTRA_IMPORTS": "tests.chaos.jobs",
           "REDISQ_TEST_HEARTBEAT": "0.5", "REDISQ_TEST_LEASE": "5"}
    worker = WorkerProcess("default", "--concurrency", "100", "-v", "0", env=env)
    try:
        wait_for(lambda: client.zcard("redisq:{workers}") == 1, timeout=30,
                 message=worker.output())
        baseline = int(client.info("memory")["used_memory"])
        t0 = time.monotonic()
        for start in range(0, JOBS, BATCH):
            n = min(BATCH, JOBS - start)
            queue.enqueue_many([("tests.chaos.jobs.noop_async", [], {})] * n, result_ttl=1)
        t_enqueued = time.monotonic() - t0
        peak_keys = 0

        def drained() -> bool:
            nonlocal peak_keys
            peak_keys = max(peak_keys, int(client.dbsize()))
            c = queue.counts()
            return c["queued"] == 0 and c["started"] == 0 and c["scheduled"] == 0

        wait_for(drained, timeout=150, interval=0.1,
                 message=lambda: f"not drained: {queue.counts()}")
        t_drained = time.monotonic() - t0
        # TTLs pass (1 s), the sweep trims the finished registry, Redis expires the hashes.
        wait_for(lambda: client.zcard(queue.keys.state("finished")) == 0, timeout=20,
                 interval=0.1, message="the finished registry was not trimmed")
        wait_for(lambda: client.dbsize() < 20, timeout=20, interval=0.1,
                 message=lambda: f"{client.dbsize()} keys left")

        def processed() -> int:
            return int(client.hget("redisq:{workers}:" + _worker_name(client), "processed") or 0)

        # The worker's own count, from its heartbeat (every 0.5 s): every job ran.
        wait_for(lambda: processed() >= JOBS, timeout=10, interval=0.1,
                 message=lambda: f"the worker reports {processed()} jobs done")
        finished = processed()

        leftovers: dict[str, int] = {}
        for key in client.scan_iter(count=1000):
            name = key.decode()
            ttl = client.pttl(key)
            if ttl > 0:
                continue
            kind = next((what for pattern, what in ALLOWED.items()
                         if re.fullmatch(pattern, name)), None)
            assert kind is not None, f"{name} has no TTL and is not a bounded structure"
            leftovers[name] = ttl

        # One function ran: its outcome counters, bucket counts and sums, not one per job.
        stats_fields = int(client.hlen(queue.keys.stats))
        assert stats_fields <= 100, f"{stats_fields} fields in the stats hash"

        slack = max(SLACK, baseline // 10)

        def settled() -> int | None:
            used = int(client.info("memory")["used_memory"])
            return used if used <= baseline + slack else None

        used = wait_for(settled, timeout=20, interval=0.2,
                        message=f"used_memory stays above {baseline} + {slack}")
        wall = time.monotonic() - t0
    finally:
        worker.close()

    report("jobs", f"{JOBS} async no-op jobs, result_ttl 1 s, 1 worker x concurrency 100")
    report("drain", f"enqueued in {t_enqueued:.1f} s, drained after {t_drained:.1f} s "
                    f"({JOBS / t_drained:,.0f} jobs/s); worker counted {finished} done")
    report("peak keys", peak_keys)
    report("keys left without a TTL", f"{sorted(leftovers)} (stats hash: {stats_fields} "
                                      f"fields)")
    report("used_memory", f"baseline {baseline:,} B, after {used:,} B "
                          f"({used - baseline:+,} B; allowed +{slack:,})")
    report("wall time", f"{wall:.1f} s")
    assert finished == JOBS


def _worker_name(client: redis.Redis) -> str:
    names = client.zrange("redisq:{workers}", 0, 0)
    return names[0].decode() if names else ""
