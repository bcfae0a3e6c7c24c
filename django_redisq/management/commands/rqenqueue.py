"""``manage.py rqenqueue dotted.path [ARG ...]``: enqueue a registered job from the shell."""

from __future__ import annotations

import difflib
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...apps import autodiscover
from ...conf import get_queue, queue_names
from ...decorators import JobFunction
from ...engine.errors import RedisQError, UnknownFunction
from ...engine.job import Job
from ...engine.registry import registry

HOW_TO_REGISTER = (
    "Register it by decorating it with @job (from django_redisq import job) in a module that "
    "is imported at start: an installed app's tasks.py or jobs.py, or a module listed in "
    "REDISQ['IMPORTS']."
)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(
            f"{what} is not JSON ({exc}): {text!r}. Write numbers, true/false/null, lists and "
            f"objects as JSON, and quote strings: '\"text\"'.") from None


class Command(BaseCommand):
    help = (
        "Enqueue a call of a registered @job function. Each ARG is parsed as JSON, e.g. "
        "rqenqueue myapp.tasks.add 1 2, or rqenqueue myapp.tasks.greet '\"Ada\"' "
        "--kwargs '{\"polite\": true}'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("function", help="registered name of the job, e.g. myapp.tasks.add")
        parser.add_argument("arguments", nargs="*", metavar="ARG",
                            help="positional arguments, each parsed as JSON")
        parser.add_argument("--kwargs", default=None, metavar="JSON",
                            help='keyword arguments as a JSON object, e.g. \'{"b": 2}\'')
        parser.add_argument("--queue", "-q", default=None,
                            help="queue to use (default: the one given to @job)")
        parser.add_argument("--delay", type=float, default=None, metavar="S",
                            help="run no sooner than S seconds from now")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["function"]
        call_args = [_json(a, f"argument {i}") for i, a in enumerate(options["arguments"], 1)]
        kwargs: dict[str, Any] = {}
        if options["kwargs"] is not None:
            kwargs = _json(options["kwargs"], "--kwargs")
            if not isinstance(kwargs, dict):
                raise CommandError(f"--kwargs must be a JSON object, e.g. '{{\"b\": 2}}', got "
                                   f"{options['kwargs']!r}")
        delay = options["delay"]
        if delay is not None and delay < 0:
            raise CommandError(f"--delay must not be negative, got {delay}")
        queue = options["queue"]
        if queue is not None and queue not in queue_names():
            raise CommandError(f"unknown queue {queue!r}; configured queues: "
                               f"{', '.join(queue_names())} (see REDISQ['QUEUES'] in settings)")

        names = autodiscover()
        try:
            entry = registry.get(name)
        except UnknownFunction:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            listed = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
            raise CommandError(
                f"{name!r} is not a registered job.{hint} Registered jobs: "
                f"{listed or 'none'}. {HOW_TO_REGISTER}") from None

        try:
            jf = entry.options.get("job")
            if isinstance(jf, JobFunction):
                given = {k: v for k, v in (("queue", queue), ("delay", delay)) if v is not None}
                # Sent now: a shell command has no transaction to wait for.
                handle: Job[Any] = jf.using(on_commit=False, **given).delay(*call_args, **kwargs)
            else:  # registered with registry.register(), not @job
                handle = get_queue(queue or "default").enqueue(name, call_args, kwargs,
                                                               delay=delay)
        except (TypeError, ValueError, RedisQError) as exc:
            raise CommandError(f"cannot enqueue {name}: {exc}") from exc

        if options["verbosity"] == 0:
            self.stdout.write(handle.id)
        else:
            when = f" in {delay:g} s" if delay else ""
            self.stdout.write(f"enqueued {name} on {handle.queue.name}{when}: job {handle.id}")
