"""The example project's test suite passes in eager mode with no worker and no Redis.

It runs as a separate pytest process (its own settings, ``example_project.settings_test``)
with ``REDIS_URL`` pointing at a closed port: any job that reached Redis would fail with a
connection error. Time budget: about 3 s (one Django start-up, 7 quick tests).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from tests.conftest import ROOT


def test_example_suite_passes_without_redis():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("REDISQ_TEST_REDIS_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", "example_project/pytest.ini", "example_project/tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    summary = re.search(r"(\d+) passed", out)
    assert summary and int(summary.group(1)) >= 7, out
    assert not re.search(r"\d+ (failed|skipped|error)", out), out
