"""Django system checks for the REDISQ (or django-rq RQ_QUEUES) settings.

Wrong settings fail ``manage.py check`` (and every command that runs checks: runserver,
migrate, rqworker) with ids ``django_redisq.E0xx`` naming the setting and the fix, instead of
failing later in a worker. The rules live in ``conf.validate()``, shared with
``redisq_settings()``. Run only these with ``manage.py check --tag django_redisq``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from .conf import validate

TAG = "django_redisq"


@checks.register(TAG)
def check_settings(app_configs: Sequence[AppConfig] | None = None,
                   **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem in the queue settings: errors (E0xx) and warnings (W0xx)."""
    _, problems = validate()
    return [
        (checks.Error if p.level == "error" else checks.Warning)(
            p.msg, hint=p.hint, id=f"django_redisq.{p.id}")
        for p in problems
    ]


@checks.register(TAG)
def check_cron(app_configs: Sequence[AppConfig] | None = None,
               **kwargs: Any) -> list[checks.CheckMessage]:
    """Each ``REDISQ["CRON"]`` entry must parse (expression that can match, function, queue,
    time zone, ``every``), and no two schedules may share a name. ``@job(cron=...)``
    functions are counted if this process has imported them (a worker, which imports every
    job module, refuses duplicates at start in any case)."""
    from .engine.cron import CronError, Schedule
    from .schedules import duplicate_names, job_schedules, parse_entry

    parsed, problems = validate()
    if any(p.level == "error" for p in problems):
        return []  # the settings check reports those first
    errors: list[checks.CheckMessage] = []
    labelled: list[tuple[str, Schedule]] = []
    for i, entry in enumerate(parsed.cron):
        where = f'REDISQ["CRON"][{i}]'
        try:
            labelled.append((where, parse_entry(entry, i, list(parsed.queues))))
        except (CronError, TypeError, ValueError) as exc:
            # Not only CronError: a check must report a bad entry, never crash on one.
            msg = str(exc) if isinstance(exc, CronError) else f"{where}: {exc}"
            errors.append(checks.Error(msg, id="django_redisq.E012", hint=CRON_HINT))
    try:
        labelled += job_schedules()
    except CronError as exc:  # @job rejects bad expressions at decoration; defensive
        errors.append(checks.Error(str(exc), id="django_redisq.E012", hint=CRON_HINT))
    errors.extend(
        checks.Error(msg, id="django_redisq.E012",
                     hint='e.g. {"cron": "0 3 * * *", "func": "myapp.tasks.report", '
                          '"args": ["site-a"], "name": "report-site-a"}')
        for msg in duplicate_names(labelled))
    return errors


CRON_HINT = ('Fix the entry: e.g. {"cron": "*/5 * * * *", "func": "myapp.tasks.cleanup"}; cron '
             'has 5 fields (minute hour day month weekday) or an alias like "@hourly", and '
             'must match some date; use "every": seconds (a number) for sub-minute intervals.')


@checks.register(TAG)
def check_metrics(app_configs: Sequence[AppConfig] | None = None,
                  **kwargs: Any) -> list[checks.CheckMessage]:
    """Metrics configured (``METRICS_TOKEN`` set or ``metrics_view`` mounted) need
    prometheus-client."""
    from . import metrics

    if metrics.available():
        return []
    parsed, _ = validate()
    if parsed.metrics_token is None and not metrics.url_mounted():
        return []
    return [checks.Error(
        "django_redisq.metrics is configured (REDISQ[\"METRICS_TOKEN\"] or metrics_view in "
        "urls.py) but prometheus-client is not installed.",
        hint=f"Install the extra: {metrics.INSTALL_HINT}.", id="django_redisq.E013")]
