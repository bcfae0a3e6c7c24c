"""``manage.py rqsuspend [--duration S]``: workers stop taking jobs, without exiting."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...engine.errors import RedisQError
from ...stats import suspend

#: Longest --duration: Redis takes the expiry in milliseconds, and nobody means more.
MAX_SECONDS = 10 * 365 * 86400


class Command(BaseCommand):
    help = (
        "Suspend every worker: running jobs finish, no new job is taken until rqresume (or "
        "until --duration passes). Workers keep running and beating; enqueueing goes on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--duration", "-d", type=float, default=None, metavar="S",
                            help="resume by itself after S seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        duration = options["duration"]
        if duration is not None and not 0 < duration <= MAX_SECONDS:  # also NaN and inf
            raise CommandError(f"--duration must be a positive number of seconds, at most "
                               f"{MAX_SECONDS:,} (ten years), got {duration}")
        try:
            suspend(duration)
        except RedisQError as exc:
            raise CommandError(str(exc)) from exc
        until = "until rqresume" if duration is None else f"for {duration:g} s"
        self.stdout.write(f"workers suspended {until}: running jobs finish, no new job is taken")
