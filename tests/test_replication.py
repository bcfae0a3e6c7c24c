"""``WAIT_REPLICAS``: an enqueue returns only once a replica has the job. A master and one
replica on loopback, no Sentinel (tests/test_sentinel.py covers failovers).
Time budget: about 3 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_redisq import NotReplicated
from django_redisq.engine import Queue, RedisConnection
from tests.infra import Server, poll


@pytest.fixture
def pair() -> Iterator[tuple[Server, Server]]:
    plain = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
    master = Server(*plain)
    replica = Server(*plain, "--replicaof", "127.0.0.1", str(master.port))
    try:
        master.start()
        replica.start()
        poll(lambda: replica.client().info("replication")["master_link_status"] == "up", 15,
             "replica in sync")
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def test_enqueue_waits_for_the_replica_even_after_noscript(pair):
    master, replica = pair
    q = Queue("default", RedisConnection(master.url), wait_replicas=1, wait_timeout_ms=2000)
    m = master.client()
    m.script_flush()  # as after a restart or failover: the first calls get NOSCRIPT
    m.config_resetstat()
    jobs = q.enqueue_many([("tests.jobs.add", (i, i), {}) for i in range(3)])
    stats = m.info("commandstats")
    # The scripts were loaded, the calls sent again, and WAIT sent again after them on the
    # same connection (a WAIT before the re-run would not cover the re-run's writes).
    assert stats["cmdstat_script|load"]["calls"] == 1
    assert stats["cmdstat_wait"]["calls"] == 2
    # Returned means replicated: the replica has every job (read it there, not on the master).
    rep = replica.client()
    assert all(rep.exists(f"redisq:{{default}}:job:{j.id}") for j in jobs)
    single = q.enqueue("tests.jobs.add", (1, 2))
    assert rep.exists(f"redisq:{{default}}:job:{single.id}")


def test_enqueue_without_a_replica_raises_not_replicated(pair):
    master, replica = pair
    q = Queue("default", RedisConnection(master.url), wait_replicas=1, wait_timeout_ms=100)
    replica.kill()
    poll(lambda: master.client().info("replication")["connected_slaves"] == 0, 15,
         "master noticing the replica is gone")
    with pytest.raises(NotReplicated) as exc:
        q.enqueue("tests.jobs.add", (1, 2))
    message = str(exc.value)
    assert "queue 'default'" in message and "0 of 1 replica(s)" in message
    assert "within 100 ms" in message and master.url in message
    assert q.count("queued") == 1  # queued on the master, only not confirmed
