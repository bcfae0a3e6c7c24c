"""``manage.py rqworker [QUEUE ...]``: run a worker for the given queues (strict priority)."""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ...apps import autodiscover
from ...conf import queue_names
from ...engine.executors import stuck_job_threads
from ...worker import reset_after_fork, run_worker

if TYPE_CHECKING:
    from ...metrics_server import MetricsServer


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
        parser.add_argument("--prefetch", type=int, default=None,
                            help="jobs claimed ahead of free slots, so a freed slot starts the "
                                 "next job without a round trip (default: 20 x the concurrency; 0 "
                                 "for long jobs that other workers could start sooner)")
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
        parser.add_argument("--reload", action="store_true",
                            help="restart the worker when a Python module it imported changes "
                                 "(development), as runserver does; running jobs finish "
                                 "first, within the grace period")
        parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                            help="serve Prometheus metrics at http://ADDR:PORT/metrics "
                                 "(needs django-redisq[prometheus]); with --processes, a "
                                 "process of the supervisor's own serves them")
        parser.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                            help="address the metrics server binds (default: 127.0.0.1)")

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
        if options["prefetch"] is not None and options["prefetch"] < 0:
            raise CommandError(f"--prefetch must be 0 or more, got {options['prefetch']}")
        if options["reload"] and options["processes"]:
            raise CommandError("--reload runs one worker process; leave out --processes")
        self._setup_logging(options["verbosity"])
        if options["reload"]:
            from ...reload import is_child, run_parent

            if not is_child():
                self._exit(run_parent())
                return
        port = options["metrics_port"]
        # Bound here, in the process that runs the worker (or its supervisor), so that a port
        # in use stops the command before any worker starts.
        server = None if port is None else self._bind_metrics(port, options["metrics_addr"])
        registered = autodiscover()
        logging.getLogger("django_redisq.worker").debug("registered jobs: %s", registered)
        # Now that every job module is imported, the schedules as the workers will load them:
        # what the system check could not see (manage.py check imports no job module: it
        # misses @job(cron=...) functions, and cannot tell whether a REDISQ["CRON"] entry's
        # function exists and takes its arguments) stops the command with a message, here.
        from ...engine.cron import CronError
        from ...schedules import load_schedules, unrunnable

        try:
            problems = unrunnable(load_schedules())
        except CronError as exc:
            problems = [str(exc)]
        if problems:
            raise CommandError(f"periodic jobs: {' '.join(problems)}")
        overrides = {"concurrency": options["concurrency"], "burst": options["burst"],
                     "max_jobs": options["max_jobs"], "name": options["name"],
                     "scheduler": options["scheduler"], "grace": options["grace"],
                     "prefetch": options["prefetch"]}
        processes = options["processes"]
        if options["reload"]:
            from ...conf import redisq_settings
            from ...reload import run_child

            grace = options["grace"]
            code = run_child(
                lambda on_worker: run_worker(names, install_signals=False, on_worker=on_worker,
                                             **overrides),
                grace=redisq_settings().shutdown_grace if grace is None else grace)
        elif processes:
            code = self._supervise(names, processes, overrides, server)
        else:
            if server:
                server.serve_in_thread()
            code = run_worker(names, **overrides)
        self._exit(code)

    def _bind_metrics(self, port: int, addr: str) -> MetricsServer:
        from ... import metrics

        if not 0 < port < 65536:
            raise CommandError(f"--metrics-port must be a port number from 1 to 65535, got {port}")
        if not metrics.available():
            raise CommandError(f"--metrics-port needs prometheus-client: {metrics.INSTALL_HINT}")
        try:
            server = metrics.bind_metrics_server(port, addr)
        except OSError as exc:
            raise CommandError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
        logging.getLogger("django_redisq.worker").info(
            "serving Prometheus metrics on http://%s:%d/metrics", addr, port)
        return server

    def _supervise(self, names: list[str], processes: int, overrides: dict[str, Any],
                   metrics_server: MetricsServer | None) -> int:
        from ...engine.supervisor import Supervisor

        base_name = overrides.pop("name", None)
        parent = os.getpid()

        def child_main(slot: int) -> int:
            reset_after_fork()
            if metrics_server:
                metrics_server.close()  # the sidecar's to serve
            name = f"{base_name}-{slot}" if base_name else None
            return run_worker(names, name=name, exit_on_sync_timeout=True,
                              info={"supervisor": parent}, **overrides)

        def serve_metrics(server: MetricsServer) -> int:
            reset_after_fork()
            server.serve_while_parent(parent)
            return 0

        sidecar = partial(serve_metrics, metrics_server) if metrics_server else None
        return Supervisor(processes, child_main, before_fork=connections.close_all,
                          burst=bool(overrides.get("burst")), sidecar=sidecar).run()

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
