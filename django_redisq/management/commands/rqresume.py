"""``manage.py rqresume``: suspended workers take jobs again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...engine.errors import RedisQError
from ...stats import resume


class Command(BaseCommand):
    help = "End a suspension (rqsuspend): workers take jobs again."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            was = resume()
        except RedisQError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("workers resumed" if was else "workers were not suspended")
