"""Process mode: a parent that keeps P worker processes running.

Each child is a full worker (its own event loop, fetching on its own). A child whose sync job
hit its timeout exits with ``EXIT_REPLACE`` once the failure is written, which is how a runaway
job is killed; the parent starts a replacement. SIGTERM/SIGINT are forwarded to the children,
which shut down gracefully; the parent exits when they have.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from .worker import EXIT_REPLACE

log = logging.getLogger("django_redisq.worker")


class Supervisor:
    def __init__(self, processes: int, child_main: Callable[[int], int],
                 before_fork: Callable[[], None] | None = None, burst: bool = False) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.child_main = child_main
        self.before_fork = before_fork
        self.burst = burst
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.restarts = 0

    def _spawn(self, slot: int) -> None:
        if self.before_fork:
            self.before_fork()
        pid = os.fork()
        if pid == 0:  # child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = self.child_main(slot)
            except BaseException:
                logging.getLogger("django_redisq.worker").exception("worker process crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot

    def _forward(self, sig: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for slot in range(self.processes):
            self._spawn(slot)
        log.info("supervisor %d: %d worker processes", os.getpid(), self.processes)
        status = 0
        while self.children:
            try:
                pid, raw = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(raw)
            if self.stopping:
                continue
            if code == 0 and self.burst:
                continue
            if code not in (0, EXIT_REPLACE):
                log.error("worker process %d exited with %d; starting another", pid, code)
                status = 1 if code > 0 else status
                time.sleep(0.2)  # don't spin if every child dies at start (bad settings)
            self.restarts += 1
            self._spawn(slot)
        return 0 if self.stopping or self.burst else status
