"""``rqworker --reload``: restart the worker when code changes, with Django's autoreloader.

As with ``runserver``, a parent process starts the worker as a child process with
``DJANGO_AUTORELOAD_ENV`` set, and starts it again whenever the child exits with code 3. The
child serves jobs in a thread while Django's reloader (``StatReloader``, or ``WatchmanReloader``
when pywatchman is installed) watches every imported module in the main thread. Unlike
``runserver``, a change does not end the process at once: the child asks the worker to stop
gracefully (running jobs get ``SHUTDOWN_GRACE`` seconds to finish, then are put back on their
queues), and only then exits with code 3.

SIGTERM to the parent is passed to the child, which stops gracefully; the parent then exits
with the child's code. Ctrl-C in a terminal reaches both (one process group): the child stops
gracefully (a second Ctrl-C puts running jobs back at once) and the parent does not restart it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from django.utils import autoreload

from .engine.worker import Worker

log = logging.getLogger("django_redisq.worker")

#: Exit code of a child that wants to be restarted (Django's autoreloader uses 3 too).
RELOAD_EXIT = 3


def is_child() -> bool:
    return os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"


def run_parent() -> int:
    """Start the worker child, again after each code change, until it exits for another
    reason; returns its exit code."""
    args = autoreload.get_child_arguments()
    env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    state: dict[str, Any] = {"stopping": False, "child": None}

    def on_signal(sig: int, _frame: object) -> None:
        state["stopping"] = True
        child = state["child"]
        # SIGINT from a terminal already reached the child (same process group).
        if sig == signal.SIGTERM and child is not None and child.poll() is None:
            child.send_signal(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        child = subprocess.Popen(args, env=env, close_fds=False)
        state["child"] = child
        code = child.wait()
        if code == RELOAD_EXIT and not state["stopping"]:
            log.info("worker restarting after a code change")
            continue
        return 0 if code == RELOAD_EXIT else code


def run_child(serve: Callable[[Callable[[Worker], None]], int], grace: float) -> int:
    """Serve jobs in a thread while the reloader watches files in this (main) thread.

    ``serve(on_worker)`` runs a worker until it stops and returns its exit code, calling
    ``on_worker`` with the worker first. Returns ``RELOAD_EXIT`` after a code change.
    """
    reloader = autoreload.get_reloader()
    state: dict[str, Any] = {"reload": False, "code": 1, "worker": None, "signals": 0}
    lock = threading.Lock()

    def stop_worker(graceful: bool) -> None:
        with lock:
            worker = state["worker"]
        if worker is not None:
            worker.stop(graceful=graceful)

    def on_worker(worker: Worker) -> None:
        with lock:
            state["worker"] = worker
        if state["reload"] or state["signals"]:
            worker.stop(graceful=True)  # a change or signal came before the worker existed

    def on_change(sender: Any, file_path: Any, **kwargs: Any) -> bool:
        if not state["reload"]:
            state["reload"] = True
            log.warning("%s changed: stopping the worker (running jobs get %g s to finish), "
                        "then restarting", file_path, grace)
            stop_worker(graceful=True)
        return True  # handled: the reloader must not exit the process at once

    def on_signal(sig: int, _frame: object) -> None:
        state["signals"] += 1
        hard = state["signals"] > 1 and sig == signal.SIGINT
        state["reload"] = False
        log.warning("worker: %s, %s", signal.Signals(sig).name,
                    "stopping now, putting running jobs back" if hard else
                    f"finishing running jobs (up to {grace:g} s)")
        stop_worker(graceful=not hard)

    def main() -> None:
        try:
            state["code"] = serve(on_worker)
        except BaseException:
            log.exception("worker crashed")
        finally:
            reloader.stop()

    autoreload.file_changed.connect(on_change, dispatch_uid="django_redisq.reload")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=main, name="django-main-thread", daemon=True)
    thread.start()
    log.info("watching for file changes with %s", type(reloader).__name__)
    reloader.run(thread)
    thread.join()
    return RELOAD_EXIT if state["reload"] else int(state["code"])
