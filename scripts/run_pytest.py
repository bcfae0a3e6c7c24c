"""Run pytest (tox's test command) and fail when it exits 0 without finishing its session.

A process that calls ``os._exit(0)`` in the middle of a run (a worker run in-process by a test,
say) would otherwise end the run early with a green result. pytest writes its JUnit XML report
when the session finishes, so a missing report means the run did not finish.

Usage: python scripts/run_pytest.py [PYTEST ARGS ...]  (the report goes to $REDISQ_JUNIT_XML,
by default a temporary file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def main() -> int:
    report = os.environ.get("REDISQ_JUNIT_XML") or os.path.join(
        tempfile.gettempdir(), f"redisq-pytest-{os.getpid()}.xml")
    if os.path.exists(report):
        os.unlink(report)
    cmd = [sys.executable, "-m", "pytest", f"--junitxml={report}", *sys.argv[1:]]
    try:
        rc = subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130
    finished = os.path.exists(report)
    if not os.environ.get("REDISQ_JUNIT_XML") and finished:
        os.unlink(report)
    if rc == 0 and not finished:
        print("\nERROR: pytest exited with status 0 but did not finish its session (no report "
              "was written): something in the run called os._exit() or similar. Tests after "
              "that point did not run.", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
