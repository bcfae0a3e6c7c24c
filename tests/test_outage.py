"""Redis outages: enqueue fails with a clear error; a worker rides out a Redis restart.

Time budget: about 10 s (the worker test keeps Redis down for 5 s). The admin's 503 page for
an unreachable Redis is tested in test_admin.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest
import redis
from django.conf import settings
from django.test import override_settings

import django_redisq
from django_redisq import RedisQError, RedisUnavailable
from django_redisq.engine.scripts import ENQUEUE_SCRIPT
from tests import jobs
from tests.conftest import _free_port, wait_for
from tests.infra import Server


def queues_at(url: str) -> dict[str, object]:
    return {**settings.REDISQ, "QUEUES": {"default": {"URL": url}, "high": {"URL": url}}}


def test_enqueue_without_redis_raises_redis_unavailable_naming_queue_and_masked_url():
    port = _free_port()  # nothing listens there
    with override_settings(REDISQ=queues_at(f"redis://app:s3cret@127.0.0.1:{port}/0")):
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as exc:
            jobs.add.using(on_commit=False).delay(1, 2)
        elapsed = time.monotonic() - started
        with pytest.raises(RedisUnavailable) as aexc:
            asyncio.run(jobs.add.adelay(1, 2))
    for e in (exc.value, aexc.value):
        message = str(e)
        assert "queue 'default'" in message
        assert f"redis://app:***@127.0.0.1:{port}/0" in message
        assert "s3cret" not in message and "Redis is unreachable" in message
        # One class to catch: ours, and redis-py's own ConnectionError for generic handlers.
        assert isinstance(e, RedisQError) and isinstance(e, redis.ConnectionError)
        assert isinstance(e.__cause__, redis.ConnectionError)
    assert django_redisq.RedisUnavailable is RedisUnavailable
    # redis-py's default retry policy (10 tries, jittered backoff capped at 1 s) decides how
    # long a caller waits; bounded, not hanging.
    assert elapsed < 15, elapsed
    print(f"\nenqueue to a closed port raised RedisUnavailable after {elapsed * 1000:.1f} ms")


def test_worker_survives_a_5_second_outage_and_finishes_jobs_afterwards(worker_proc):
    server = Server("--save", "", "--appendonly", "no")
    server.start()
    try:
        env = {"REDISQ_TEST_QUEUES": json.dumps({"default": {"URL": server.url}}),
               "REDISQ_TEST_HEARTBEAT": "0.5", "REDISQ_TEST_LEASE": "5"}
        w = worker_proc("default", "--concurrency", "4", env=env)
        with override_settings(REDISQ=queues_at(server.url)):
            before = [jobs.add.delay(i, 1) for i in range(20)]
            wait_for(lambda: all(j.status == "finished" for j in before), timeout=20,
                     message=lambda: f"jobs before the outage did not finish:\n{w.output()}")

            server.kill()  # Redis vanishes, as on a crash or a host reboot
            down_since = time.monotonic()
            wait_for(lambda: "Redis error while" in w.output(), timeout=15,
                     message=lambda: f"the worker did not notice the outage:\n{w.output()}")
            while time.monotonic() - down_since < 5:  # the outage lasts 5 s
                assert w.proc.poll() is None, f"the worker died:\n{w.output()}"
                time.sleep(0.1)
            server.start()  # same port, empty (no persistence): scripts must be reloaded
            back = time.monotonic()

            after = [jobs.add.delay(i, 2) for i in range(20)]
            wait_for(lambda: all(j.status == "finished" for j in after), timeout=20,
                     message=lambda: f"jobs after the outage did not finish:\n{w.output()}")
            recovered_in = time.monotonic() - back
            assert [j.result for j in after] == [i + 2 for i in range(20)]
            assert w.proc.poll() is None, f"the worker died:\n{w.output()}"
            output = w.output()
            attempts = len(re.findall(r"Redis error while", output))
            connections = server.client().info("stats")["total_connections_received"]
        assert "internal task" not in output and "Traceback" not in output, output
        # Backoff with jitter, doubling to 5 s: a handful of retries per loop over the outage,
        # not a busy loop (which would log thousands).
        assert 2 <= attempts <= 40, (attempts, output)
        assert connections <= 40, connections
        print(f"\noutage: {attempts} logged retries over 5 s down; {connections} connections "
              f"after restart; jobs done {recovered_in:.2f} s after Redis came back")
    finally:
        server.stop()


def test_master_without_its_min_replicas_is_unavailable_and_writes_nothing():
    """``min-replicas-to-write``: the master refuses the enqueue script before its first write."""
    server = Server("--save", "", "--appendonly", "no", "--min-replicas-to-write", "1")
    server.start()
    try:
        with override_settings(REDISQ=queues_at(server.url)), \
                pytest.raises(RedisUnavailable) as exc:
            jobs.add.using(on_commit=False).delay(1, 2)
        assert "NOREPLICAS" in str(exc.value) and "queue 'default'" in str(exc.value)
        assert server.client().dbsize() == 0
    finally:
        server.stop()


def test_master_demoted_while_an_enqueue_waits_for_replicas_is_unavailable():
    """A failover that demotes the master while ``WAIT`` blocks there (Redis answers
    ``UNBLOCKED``): the enqueue was not confirmed, so it raises ``RedisUnavailable`` (retry),
    not a bare ResponseError."""
    master = Server("--save", "", "--appendonly", "no")
    other = Server("--save", "", "--appendonly", "no")
    master.start()
    other.start()
    conf = {**settings.REDISQ, "QUEUES": {"default": {
        "URL": master.url, "WAIT_REPLICAS": 1, "WAIT_TIMEOUT_MS": 20_000}}}
    raised: list[BaseException] = []

    def enqueue() -> None:
        try:
            with override_settings(REDISQ=conf):
                jobs.add.using(on_commit=False).delay(1, 2)
        except BaseException as exc:  # the test inspects it
            raised.append(exc)

    thread = threading.Thread(target=enqueue)
    try:
        c = master.client()
        c.script_load(ENQUEUE_SCRIPT.source)  # else NOSCRIPT comes first, then a retry
        thread.start()
        wait_for(lambda: any(cl["cmd"] == "wait" for cl in c.client_list()), timeout=10,
                 message="the enqueue blocked in WAIT")
        c.replicaof(*other.address)
        thread.join(10)
        assert not thread.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], RedisUnavailable), raised
        assert "UNBLOCKED" in str(raised[0]) and "queue 'default'" in str(raised[0])
        # Writing to the demoted master (a URL that names a replica now) is unavailable too.
        with override_settings(REDISQ=conf), pytest.raises(RedisUnavailable) as exc:
            jobs.add.using(on_commit=False).delay(1, 2)
        assert "read only replica" in str(exc.value), exc.value
    finally:
        master.stop()
        other.stop()


@pytest.mark.parametrize("kind", ["SENTINEL", "CLUSTER"])
def test_unreachable_sentinels_or_cluster_raise_redis_unavailable(kind):
    a, b = _free_port(), _free_port()  # nothing listens there
    if kind == "SENTINEL":
        entry = {"SENTINEL": {"SENTINELS": [("127.0.0.1", a), ("127.0.0.1", b)],
                              "SERVICE_NAME": "mymaster", "PASSWORD": "s3cret"}}
        where = f"sentinel://127.0.0.1:{a},127.0.0.1:{b}/mymaster/0"
    else:
        entry = {"CLUSTER": {"NODES": [f"127.0.0.1:{a}", f"127.0.0.1:{b}"],
                             "PASSWORD": "s3cret"}}
        where = f"cluster://127.0.0.1:{a},127.0.0.1:{b}"
    started = time.monotonic()
    with override_settings(REDISQ={**settings.REDISQ, "QUEUES": {"default": entry}}):
        with pytest.raises(RedisUnavailable) as exc:
            jobs.add.using(on_commit=False).delay(1, 2)
        with pytest.raises(RedisUnavailable) as aexc:
            asyncio.run(jobs.add.adelay(1, 2))
    for e in (exc.value, aexc.value):
        assert "queue 'default'" in str(e) and where in str(e) and "s3cret" not in str(e)
    print(f"\n{kind} unreachable: RedisUnavailable after {time.monotonic() - started:.2f} s "
          f"(sync and async)")


def _raised_in(filename: str, statement: str) -> BaseException:
    """The exception ``statement`` raises when run as code of the file ``filename`` (so that
    the last frame of its traceback is in that file, as in the real race)."""
    ns: dict[str, object] = {}
    exec(compile(f"def f():\n    {statement}", filename, "exec"), ns)
    try:
        ns["f"]()  # type: ignore[operator]
    except BaseException as exc:  # the test inspects it
        return exc
    raise AssertionError(f"{statement!r} raised nothing")


def test_a_lost_transport_bug_of_cpython_counts_as_a_lost_connection():
    """cpython#136234: asyncio's selector transport raises TypeError/AttributeError from
    writelines() on a connection already lost (seen here on 3.12.1 when a Cluster node died).
    The worker's loops retry RedisUnavailable; anything else would stop the worker."""
    from django_redisq.engine.ops import _lost_transport

    exc = _raised_in("/usr/lib/python3.12/asyncio/selector_events.py",
                     "raise TypeError(\"'NoneType' object is not callable\")")
    assert isinstance(exc, TypeError) and _lost_transport(exc)
    try:
        raise TypeError("a bug of ours")
    except TypeError as exc:
        assert not _lost_transport(exc)


def test_redis_py_writing_to_a_closed_connection_counts_as_a_lost_connection():
    """The same race surfaces in redis-py's asyncio connection as AttributeError on its writer
    (seen on Python 3.11 when a Cluster node died): a lost connection, not a bug of ours."""
    from django_redisq.engine.ops import _lost_transport

    exc = _raised_in("/venv/lib/python3.11/site-packages/redis/asyncio/connection.py",
                     "None.writelines([])")
    assert isinstance(exc, AttributeError) and _lost_transport(exc)
