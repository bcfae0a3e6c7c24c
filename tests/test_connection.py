"""Sync clients: each thread keeps one connection of the queue's pool, and never shares it."""

from __future__ import annotations

import select
import subprocess
import sys
import threading
from pathlib import Path

from django_redisq import get_queue
from tests import jobs


def test_each_thread_keeps_its_own_connection_and_reuses_it(r):
    connection = get_queue("default").connection
    ids: dict[int, set[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def enqueue_many(n: int) -> None:
        start.wait()  # all four threads at once: a shared connection would mix replies
        seen = ids.setdefault(threading.get_ident(), set())
        try:
            for i in range(50):
                job = jobs.add.using(on_commit=False).delay(n, i)
                assert job.status == "queued"
                seen.add(connection.client().client_id())
        except BaseException as exc:  # a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert get_queue("default").count() == 200
    per_thread = list(ids.values())
    # One connection per thread, kept for all its calls, and no two threads share one.
    assert all(len(s) == 1 for s in per_thread), per_thread
    assert len(set().union(*per_thread)) == 4


def test_a_connection_closed_by_the_server_is_replaced_before_use(r):
    client = get_queue("default").connection.client()
    before = client.client_id()
    r.client_kill_filter(_id=before)  # as a server restart or its idle timeout would
    job = jobs.add.using(on_commit=False).delay(1, 2)
    assert job.status == "queued"
    assert client.client_id() != before


def test_a_reply_left_unread_never_answers_the_next_command(r):
    """A command whose caller stopped before reading its reply (an exception between send and
    read) leaves the reply on the connection: the next command must not read it as its own."""
    client = get_queue("default").connection.client()
    client.connection.send_command("ECHO", "stale")
    sock = client.connection._sock
    assert select.select([sock], [], [], 5)[0], "the reply did not arrive within 5 s"
    again = get_queue("default").connection.client()
    assert again.echo("fresh") == b"fresh"
    assert again.echo("next") == b"next"


# Forked from a fresh, single-threaded interpreter: forking the test process, which runs
# other threads, could leave the child waiting on a lock that one of them held.
_FORK = """
import os, sys
from django_redisq.engine import Queue, RedisConnection
connection = RedisConnection(sys.argv[1])
queue = Queue("default", connection)
parent = connection.client().client_id()
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: report the connection its enqueue went through, then leave
    code = 1
    try:
        queue.enqueue("tests.jobs.add", (3, 4))
        os.write(write, str(connection.client().client_id()).encode())
        code = 0
    finally:
        os._exit(code)
os.close(write)
with os.fdopen(read) as pipe:
    child = int(pipe.read() or 0)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
# The parent's connection still works, untouched by the child.
assert connection.client().client_id() == parent
queue.enqueue("tests.jobs.add", (5, 6))
print(parent, child)
"""


def test_a_forked_child_does_not_use_its_parents_connection(redis_server):
    out = subprocess.run([sys.executable, "-c", _FORK, redis_server.url], check=True,
                         capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).parent.parent)).stdout
    parent, child = (int(x) for x in out.split())
    assert child and child != parent
    assert get_queue("default").count() == 2
