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
