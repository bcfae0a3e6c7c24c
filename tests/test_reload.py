"""``rqworker --reload``: a code change restarts the worker, after running jobs finish.

Time budget: about 10 s (two worker starts; Django's StatReloader looks at files once a second).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from django_redisq import get_queue
from tests.conftest import ROOT, wait_for

MODULE = "redisq_reload_probe"


def _write(path: Path, version: str, bump: float = 2) -> None:
    path.write_text(
        "import os\n\n"
        "from django_redisq import job\n\n\n"
        "@job\n"
        "def version() -> str:\n"
        f"    return '{version}:' + str(os.getpid())\n")
    # A later mtime than any earlier version, whatever the file system's time resolution.
    later = time.time() + bump
    os.utime(path, (later, later))


def _seen(w, text: str, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in w.output():
            return True
        time.sleep(0.05)  # polling the worker's log file
    return False


def _run(queue, timeout: float) -> str | None:  # type: ignore[no-untyped-def]
    job = queue.enqueue(f"{MODULE}.version")
    try:
        return str(job.get(timeout=timeout))
    except TimeoutError:
        return None  # the worker is restarting; the job waits for the new one


def test_reload_restarts_on_a_code_change_after_running_jobs_finish(r, worker_proc, tmp_path):
    module = tmp_path / f"{MODULE}.py"
    _write(module, "v1")
    w = worker_proc("default", "--reload", "--grace", "20", env={
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "PYTHONDONTWRITEBYTECODE": "1",
        "REDISQ_TEST_EXTRA_IMPORTS": MODULE})
    queue = get_queue("default")
    first = _run(queue, timeout=30)
    assert first is not None and first.startswith("v1:"), w.output()
    old_pid = int(first.split(":")[1])

    # A job is running when the code changes: it must finish, not be cut off.
    slow = queue.enqueue("tests.jobs.block", ["slow"])
    wait_for(lambda: r.get("slow:started"), timeout=10, message=w.output())
    # The reloader compares each file with its previous look (once a second); its first look
    # may come after this write, so write again (later mtime) until the change is seen.
    deadline = time.monotonic() + 20
    for n in range(1, 100):
        _write(module, "v2", bump=2 + n)
        if _seen(w, f"{MODULE}.py changed", 1.5) or time.monotonic() > deadline:
            break
    assert f"{MODULE}.py changed" in w.output(), w.output()
    assert slow.status == "started"  # the old worker waits for it
    r.rpush("slow:go", "1")
    assert slow.get(timeout=10) == "slow"

    deadline = time.monotonic() + 30
    result = None
    while time.monotonic() < deadline:
        result = _run(queue, timeout=2)
        if result and result.startswith("v2:"):
            break
    assert result and result.startswith("v2:"), f"got {result!r}:\n{w.output()}"
    assert int(result.split(":")[1]) != old_pid  # a new worker process runs the new code
    assert r.get("slow:runs") == b"1"  # finished once, not put back and run again

    w.signal(signal.SIGTERM)  # the parent passes it on; both exit
    assert w.wait(30) == 0, w.output()
    assert "worker restarting after a code change" in w.output()
