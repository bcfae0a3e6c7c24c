"""Structured logs: one JSON object per line, with the job's fields (stdlib only).

The worker logs every record about a job with ``job_id``, ``queue``, ``function`` and
``attempt`` in ``extra``. ``JobContextFilter`` adds the same fields to records logged by job
code itself (anything logged while ``current_job()`` is set), and ``JSONFormatter`` writes
them, with any other ``extra`` fields, as JSON::

    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": "django_redisq.logging.JobContextFilter"}},
        "formatters": {"json": {"()": "django_redisq.logging.JSONFormatter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json",
                              "filters": ["job"]}},
        "root": {"handlers": ["json"], "level": "INFO"},
    }
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from .engine.context import current_job

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
JOB_FIELDS = ("job_id", "queue", "function", "attempt")


class JobContextFilter(logging.Filter):
    """Adds ``job_id``, ``queue``, ``function`` and ``attempt`` of the running job to records
    that do not carry them (records logged from inside a job body)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            ctx = current_job()
            if ctx is not None:
                record.job_id = ctx.id
                record.queue = ctx.queue.name
                record.function = ctx.record.func
                record.attempt = ctx.attempt
        return True


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, the ``extra`` fields, and ``exc_info`` / ``stack_info`` text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)
