"""Transactional outbox: settings here; the behaviour on PostgreSQL in tests/outbox_pg_cases.py.

The PostgreSQL cases need real transactions across connections and a process killed by
SIGKILL between commit and push, so they run as a separate pytest process with
REDISQ_TEST_DB=postgres (the PostgreSQL at 127.0.0.1:5432, database "test"). Time budget of
that run: about 10 s.
"""

from __future__ import annotations

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
