"""``manage.py rqrequeue --queue Q (--failed | JOB_ID ...)``: put failed jobs back."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_queue, queue_names
from ...engine.errors import RedisQError


class Command(BaseCommand):
    help = (
        "Put failed (or canceled) jobs back on their queue: every failed job with --failed, or "
        "the jobs given by id. A requeued job runs again; its death count is reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_ids", nargs="*", metavar="JOB_ID",
                            help="ids of failed or canceled jobs to requeue")
        parser.add_argument("--queue", "-q", default="default",
                            help="the jobs' queue (default: default)")
        parser.add_argument("--failed", action="store_true",
                            help="requeue every failed job of the queue")

    def handle(self, *args: Any, **options: Any) -> None:
        name, ids, failed = options["queue"], options["job_ids"], options["failed"]
        if name not in queue_names():
            raise CommandError(f"unknown queue {name!r}; configured queues: "
                               f"{', '.join(queue_names())} (see REDISQ['QUEUES'] in settings)")
        if failed == bool(ids):
            raise CommandError("give either --failed (every failed job of the queue) or job "
                               "ids, e.g. rqrequeue --queue default --failed")
        queue = get_queue(name)
        try:
            if failed:
                moved = queue.requeue_failed()
                self.stdout.write(f"requeued {moved} failed job{'' if moved == 1 else 's'} "
                                  f"on {name}")
                return
            problems = []
            moved = 0
            for job_id in dict.fromkeys(ids):
                if queue.requeue(job_id):
                    moved += 1
                    continue
                status = queue.job_status(job_id)
                problems.append(f"{job_id} ({'not found' if status is None else status})")
        except RedisQError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"requeued {moved} job{'' if moved == 1 else 's'} on {name}")
        if problems:
            raise CommandError(
                f"not requeued: {', '.join(problems)}; only failed or canceled jobs of queue "
                f"{name!r} can be requeued")
