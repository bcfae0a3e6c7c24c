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
    """Each ``REDISQ["CRON"]`` entry must parse: expression, function, queue, time zone."""
    from .engine.cron import CronError
    from .schedules import parse_entry

    parsed, problems = validate()
    if any(p.level == "error" for p in problems):
        return []  # the settings check reports those first
    errors: list[checks.CheckMessage] = []
    for i, entry in enumerate(parsed.cron):
        try:
            parse_entry(entry, i, list(parsed.queues))
        except CronError as exc:
            errors.append(checks.Error(
                str(exc), id="django_redisq.E012",
                hint='Fix the entry: e.g. {"cron": "*/5 * * * *", "func": '
                     '"myapp.tasks.cleanup"}; cron has 5 fields (minute hour day month '
                     'weekday) or an alias like "@hourly"; use "every": seconds for '
                     'sub-minute intervals.'))
    return errors


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
