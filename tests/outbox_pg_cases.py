"""Transactional outbox on PostgreSQL. Run by tests/test_outbox.py as a separate pytest
process with REDISQ_TEST_DB=postgres and the "outbox" queue configured (REDISQ_TEST_OUTBOX=1);
it fails, rather than skips, anywhere else.

Time budget: about 10 s (one worker subprocess, one enqueuing subprocess, relay after 1 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from django_redisq import get_queue
from django_redisq.models import OutboxJob
from django_redisq.outbox import relay_once
from django_redisq.testing import run_jobs
from tests import jobs
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _on_postgres() -> None:
    assert connection.vendor == "postgresql", "run these tests with REDISQ_TEST_DB=postgres"
    assert get_queue("outbox") is not None


def _states() -> dict[str, int]:
    return {k: v for k, v in get_queue("outbox").counts().items() if v}


def test_commit_pushes_at_once_and_deletes_the_row(r):
    with transaction.atomic():
        j = jobs.outbox_count.delay("k")
        assert OutboxJob.objects.filter(job_id=j.id).exists()  # in the transaction
        assert j.status is None and r.zcard("redisq:{outbox}:queued") == 0
    assert j.status == "queued"
    assert not OutboxJob.objects.exists()
    assert r.pttl(f"redisq:{{outbox}}:outbox:{_token_of(r)}") > 6 * 24 * 3600 * 1000


def _token_of(r) -> str:  # type: ignore[no-untyped-def]
    keys = r.keys("redisq:{outbox}:outbox:*")
    assert len(keys) == 1
    return str(keys[0].decode().rsplit(":", 1)[1])


def test_rollback_leaves_no_row_and_no_job(r):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        jobs.outbox_count.delay("k")
        assert OutboxJob.objects.count() == 1
        raise Boom
    assert OutboxJob.objects.count() == 0
    assert relay_once(["outbox"], older_than=0) == 0
    assert _states() == {} and r.dbsize() == 0


def test_outside_a_transaction_or_on_commit_false_pushes_at_once(r):
    a = jobs.outbox_count.delay("k")
    with transaction.atomic():
        b = jobs.outbox_count.using(on_commit=False).delay("k")
        assert b.status == "queued"
    assert a.status == "queued" and not OutboxJob.objects.exists()


def test_sigkill_after_commit_before_push_runs_the_job_exactly_once(r, worker_proc):
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "REDISQ_TEST_PG_NAME": str(connection.settings_dict["NAME"])}
    proc = subprocess.run([sys.executable, "-m", "tests.outbox_crash", "runs"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[0]
    assert "not killed" not in proc.stdout
    # Committed, not pushed: the row is there and Redis knows nothing of the job.
    row = OutboxJob.objects.get()
    assert row.job_id == job_id and get_queue("outbox").job_status(job_id) is None
    assert r.get("runs") is None

    w = worker_proc("outbox", "-v", "2")
    job = get_queue("outbox").job(job_id)
    # The relay takes rows older than OUTBOX_RELAY_AFTER (1 s here), polling every 0.2 s.
    wait_for(lambda: job.status is not None, timeout=15, interval=0.05,
             message=lambda: f"the relay did not push the job:\n{w.output()}")
    assert job.get(timeout=10) == 1
    wait_for(lambda: not OutboxJob.objects.exists(), timeout=10, message="row not deleted")
    assert r.get("runs") == b"1"
    assert "outbox: relayed 1 job(s)" in w.output()
    # The row is gone and its marker stays: nothing can push the job again.
    assert relay_once(["outbox"], older_than=0) == 0
    assert r.get("runs") == b"1" and _states() == {"finished": 1}


def _committed_row(key: str) -> tuple[str, dict[str, object]]:
    """Enqueue through the outbox and keep a copy of the row as it was at commit."""
    seen: dict[str, object] = {}

    def grab() -> None:
        seen.update(OutboxJob.objects.values().get())

    with transaction.atomic():
        transaction.on_commit(grab)  # runs before .delay()'s push hook
        j = jobs.outbox_count.delay(key)
    assert not OutboxJob.objects.exists()  # the fast path pushed it and deleted the row
    return j.id, seen


def test_relay_repeating_a_push_of_a_finished_job_makes_no_duplicate(r):
    job_id, row = _committed_row("runs")
    assert run_jobs(["outbox"]).finished == 1
    assert r.get("runs") == b"1"
    # A crash after the push and before the delete leaves the row: put it back, aged.
    OutboxJob.objects.create(**{**row, "created_at": timezone.now() - timedelta(minutes=1)})
    assert relay_once(["outbox"], older_than=1) == 1  # pushed (a no-op) and deleted
    assert not OutboxJob.objects.exists()
    assert run_jobs(["outbox"]).total == 0
    assert r.get("runs") == b"1" and _states() == {"finished": 1}
    assert get_queue("outbox").job(job_id).status == "finished"


def test_relay_repeating_a_push_of_a_queued_job_makes_no_duplicate(r):
    _job_id, row = _committed_row("runs")
    OutboxJob.objects.create(**{**row, "created_at": timezone.now() - timedelta(minutes=1)})
    assert relay_once(["outbox"], older_than=1) == 1
    assert _states() == {"queued": 1}
    assert run_jobs(["outbox"]).finished == 1 and r.get("runs") == b"1"


def test_relay_leaves_young_rows_to_the_fast_path(r):
    with transaction.atomic():
        jobs.outbox_count.delay("k")
        # Still in the transaction: other connections cannot see the row at all.
    OutboxJob.objects.create(token="young", queue="outbox", job_id="x", func="f", call="{}")
    assert relay_once(["outbox"], older_than=60) == 0
    assert OutboxJob.objects.filter(token="young").exists()


def test_two_relays_at_once_push_each_row_once(r):
    """SELECT ... FOR UPDATE SKIP LOCKED: concurrent relays take disjoint rows."""
    from django_redisq.outbox import dump_call

    queue = get_queue("outbox")
    old = timezone.now() - timedelta(minutes=1)
    rows = []
    for i in range(300):
        p = queue.prepare("tests.jobs.outbox_count", ["k"], outbox=f"t{i}")
        rows.append(OutboxJob(token=f"t{i}", queue="outbox", job_id=p.id, func="f",
                              call=dump_call(p), created_at=old))
    OutboxJob.objects.bulk_create(rows)
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def relay() -> None:
        from django.db import connections

        barrier.wait()
        try:
            n = 0
            while True:
                got = relay_once(["outbox"], older_than=1, limit=50)
                if not got:
                    break
                n += got
            counts.append(n)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 300 and len(counts) == 2
    assert _states() == {"queued": 300}
    assert not OutboxJob.objects.exists()
