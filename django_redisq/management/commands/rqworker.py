"""``manage.py rqworker [QUEUE ...]``: run a worker for the given queues (strict priority)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ...apps import autodiscover
from ...conf import queue_names
from ...engine.executors import stuck_job_threads
from ...worker import reset_after_fork, run_worker


class Command(BaseCommand):
    help = (
        "Run a django-redisq worker. Queues are served in the order given: a job in an "
        "earlier queue is always taken before one in a later queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", metavar="QUEUE",
                            help="queues to serve, highest priority first (default: default)")
        parser.add_argument("--concurrency", "-c", type=int, default=None,
                            help="jobs run at once per process: async jobs as tasks, sync jobs "
                                 "in a thread pool of this size (default: REDISQ CONCURRENCY, 10)")
        parser.add_argument("--processes", "-p", type=int, default=None,
                            help="run P worker processes under a supervisor, so CPU-bound jobs "
                                 "use several cores and a sync job past its timeout is killed "
                                 "with its process (which is replaced)")
        parser.add_argument("--burst", "-b", action="store_true",
                            help="exit once the queues are empty and no job runs")
        parser.add_argument("--max-jobs", type=int, default=None,
                            help="exit after taking N jobs (per process)")
        parser.add_argument("--name", "-n", default=None,
                            help="worker name shown in the admin (default: host.pid.random)")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--with-scheduler", dest="scheduler", action="store_true",
                           default=True,
                           help="promote delayed jobs exactly on time and take part in cron "
                                "leadership (default)")
        group.add_argument("--without-scheduler", dest="scheduler", action="store_false",
                           help="no exact-time promotion or cron; delayed jobs are still "
                                "promoted at each heartbeat")
        parser.add_argument("--grace", type=float, default=None,
                            help="seconds running jobs get to finish after SIGTERM/SIGINT "
                                 "(default: REDISQ SHUTDOWN_GRACE, 30)")

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["queues"] or ["default"]
        configured = queue_names()
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise CommandError(
                f"unknown queue(s): {', '.join(unknown)}; configured queues: "
                f"{', '.join(configured)} (see REDISQ['QUEUES'] in settings)"
            )
        for flag in ("concurrency", "processes", "max_jobs"):
            value = options[flag]
            if value is not None and value < 1:
                raise CommandError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
        self._setup_logging(options["verbosity"])
        registered = autodiscover()
        logging.getLogger("django_redisq.worker").debug("registered jobs: %s", registered)
        overrides = {"concurrency": options["concurrency"], "burst": options["burst"],
                     "max_jobs": options["max_jobs"], "name": options["name"],
                     "scheduler": options["scheduler"], "grace": options["grace"]}
        processes = options["processes"]
        if processes:
            code = self._supervise(names, processes, overrides)
        else:
            code = run_worker(names, **overrides)
        self._exit(code)

    def _supervise(self, names: list[str], processes: int, overrides: dict[str, Any]) -> int:
        from ...engine.supervisor import Supervisor

        base_name = overrides.pop("name", None)
        parent = os.getpid()

        def child_main(slot: int) -> int:
            reset_after_fork()
            name = f"{base_name}-{slot}" if base_name else None
            return run_worker(names, name=name, exit_on_sync_timeout=True,
                              info={"supervisor": parent}, **overrides)

        return Supervisor(processes, child_main, before_fork=connections.close_all,
                          burst=bool(overrides.get("burst"))).run()

    def _setup_logging(self, verbosity: int) -> None:
        logger = logging.getLogger("django_redisq")
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
        logger.setLevel(level)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)

    def _exit(self, code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # A sync job past its timeout may still hold a thread, which would keep the
        # interpreter alive at exit; its job is already failed or put back.
        if stuck_job_threads():
            logging.shutdown()
            os._exit(code)
        if code:
            sys.exit(code)
