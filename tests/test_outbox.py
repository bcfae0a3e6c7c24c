"""Transactional outbox: settings here; the behaviour on PostgreSQL in tests/outbox_pg_cases.py.

The PostgreSQL cases need real transactions across connections and a process killed by
SIGKILL between commit and push, so they run as a separate pytest process with
REDISQ_TEST_DB=postgres (the PostgreSQL at 127.0.0.1:5432, database "test"). Time budget of
that run: about 10 s.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

from django.test import override_settings

from django_redisq import conf
from tests.conftest import ROOT


def test_outbox_is_per_queue_and_off_by_default(settings):  # type: ignore[no-untyped-def]
    url = "redis://127.0.0.1:6379/0"
    with override_settings(REDISQ={"QUEUES": {"a": {"URL": url},
                                              "b": {"URL": url, "OUTBOX": True}}}):
        assert conf.outbox_queues() == ["b"]
        assert (conf.uses_outbox("a"), conf.uses_outbox("b")) == (False, True)
        s = conf.redisq_settings()
        assert (s.outbox_poll_interval, s.outbox_relay_after) == (1.0, 5.0)


def test_outbox_cases_pass_on_postgresql():
    env = {**os.environ, "REDISQ_TEST_DB": "postgres", "REDISQ_TEST_OUTBOX": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("REDISQ_TEST_REDIS_URL", None)  # the child starts its own redis-server
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/outbox_pg_cases.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    summary = re.search(r"(\d+) passed", out)
    assert summary and int(summary.group(1)) == 8, out[-5000:]
    assert not re.search(r"\d+ (failed|skipped|error)", out), out[-5000:]


def test_a_row_stored_before_the_argument_layout_changed_still_makes_its_job(r):  # type: ignore[no-untyped-def]
    """Outbox rows keep ENQUEUE's arguments. A row written before the layout of 2026-12
    (no "layout" key: options one by one, every field as a pair) that outlives an upgrade is
    converted when loaded: its job is enqueued with all its fields, once."""
    from django_redisq.conf import get_queue
    from django_redisq.outbox import dump_call, load_prepared

    q = get_queue("default")
    k = q.keys
    marker = k.outbox_pushed("tok1")
    first_layout = json.dumps({
        "keys": [k.job("job1"), marker],
        "args": ["job1", k.base, 0, 0, 3, 1, "", "0",
                 "v", 1, "queue", "default", "func", "tests.jobs.add",
                 "payload", {"b64": base64.b64encode(b"[[1,2],{}]").decode()},
                 "priority", 3, "timeout", 5.0, "result_ttl", 60000, "failure_ttl", 120000],
        "marker": marker,
    })
    prepared = load_prepared("default", "job1", first_layout)
    prepared.send()
    record = q.job("job1").record
    assert (record.status, record.func, record.payload, record.priority, record.timeout,
            record.result_ttl, record.failure_ttl) == (
        "queued", "tests.jobs.add", b"[[1,2],{}]", 3, 5.0, 60000, 120000)
    load_prepared("default", "job1", first_layout).send()  # the marker: no second job
    assert q.job_ids("queued", 0, 10) == ["job1"]
    # A row written now loads back to the same call.
    fresh = q.prepare("tests.jobs.add", (1, 2), job_id="job2", outbox="tok2")
    again = load_prepared("default", "job2", dump_call(fresh))
    assert (again.call.keys, again.call.args, again.marker) == (
        fresh.call.keys, fresh.call.args, fresh.marker)
