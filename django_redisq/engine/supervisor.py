"""Process mode: a parent that keeps P worker processes running.

Each child is a full worker (its own event loop, fetching on its own). A child whose sync job
hit its timeout exits with ``EXIT_REPLACE`` once the failure is written, which is how a runaway
job is killed; the parent starts a replacement. SIGTERM/SIGINT make the children shut down
gracefully, a second SIGINT at once (see ``_forward``); the parent exits when they have.

An optional sidecar (the ``--metrics-port`` server) is one more forked process, restarted like a
worker if it dies. It is not told to stop with the workers: it keeps serving while they drain
and is ended once they have. The parent runs no threads, so every fork is of a single-threaded
process and a child never inherits a lock that another thread held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from .worker import EXIT_REPLACE

#: The slot of the sidecar process; workers have slots 0 to processes - 1.
SIDECAR = -1

log = logging.getLogger("django_redisq.worker")


class Supervisor:
    def __init__(self, processes: int, child_main: Callable[[int], int],
                 before_fork: Callable[[], None] | None = None, burst: bool = False,
                 sidecar: Callable[[], int] | None = None) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.child_main = child_main
        self.before_fork = before_fork
        self.burst = burst
        self.sidecar = sidecar
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.restarts = 0
        self.sigints = 0

    def _spawn(self, slot: int) -> None:
        if self.before_fork:
            self.before_fork()
        pid = os.fork()
        if pid == 0:  # child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # Ctrl-C reaches the whole process group: the sidecar keeps serving while the
            # workers drain, and the parent ends it with SIGTERM.
            for sig in (signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN if slot == SIDECAR else signal.SIG_DFL)
            code = 1
            try:
                code = self.sidecar() if self.sidecar and slot == SIDECAR else \
                    self.child_main(slot)
            except BaseException:
                log.exception("%s process crashed", "sidecar" if slot == SIDECAR else "worker")
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot

    def _forward(self, sig: int, _frame: object) -> None:
        # A worker stops at once on its second SIGINT. Ctrl-C in a terminal already sends one
        # to every process of the group, children included, so forwarding that one again
        # would make a single Ctrl-C a hard stop. The first SIGINT goes on as SIGTERM (a
        # graceful stop, which workers do not count towards a hard one): children that had
        # it from the terminal finish their jobs, and so do those that had not (``kill -INT``
        # of this process alone). A second SIGINT goes on as SIGQUIT, a hard stop however
        # many SIGINTs a child has seen.
        if sig == signal.SIGINT:
            self.sigints += 1
            sig = signal.SIGTERM if self.sigints == 1 else signal.SIGQUIT
        self.stopping = True
        for pid, slot in list(self.children.items()):
            if slot != SIDECAR:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _workers_left(self) -> bool:
        return any(slot != SIDECAR for slot in self.children.values())

    def _end_sidecar(self) -> None:
        for pid in [p for p, slot in self.children.items() if slot == SIDECAR]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del self.children[pid]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGQUIT, self._forward)
        if self.sidecar:
            self._spawn(SIDECAR)
        for slot in range(self.processes):
            self._spawn(slot)
        log.info("supervisor %d: %d worker processes", os.getpid(), self.processes)
        status = 0
        while self._workers_left():
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
            if code == 0 and self.burst and slot != SIDECAR:
                continue
            if code not in (0, EXIT_REPLACE):
                what = "sidecar" if slot == SIDECAR else "worker"
                log.error("%s process %d exited with %d; starting another", what, pid, code)
                status = 1 if code > 0 else status
                time.sleep(0.2)  # don't spin if every child dies at start (bad settings)
            self.restarts += 1
            self._spawn(slot)
        self._end_sidecar()
        return 0 if self.stopping or self.burst else status
