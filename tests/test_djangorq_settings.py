"""Migrating from django-rq: its settings file passes the checks and workers run jobs from it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import jobs
from tests.conftest import ROOT


def test_django_rq_settings_pass_the_checks(r):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_djangorq",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "django", "check", "--tag", "django_redisq"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues" in proc.stdout


def test_a_worker_runs_jobs_with_django_rq_settings(r, worker_proc):
    a = jobs.add.delay(20, 22)
    b = jobs.async_add.delay(1, 2)  # the "high" queue: the URL entry
    w = worker_proc("high", "default", "--burst",
                    env={"DJANGO_SETTINGS_MODULE": "tests.settings_djangorq"})
    assert w.wait(60) == 0, w.output()
    assert (a.result, b.result) == (42, 3)
