"""OpenTelemetry tracing, when ``opentelemetry-api`` is installed (``django-redisq[otel]``).

At enqueue, the active trace context (W3C ``traceparent``/``tracestate``) is stored in the
job's ``trace`` field, only when a span is active. The worker runs each job in a span
``redisq.job <function>`` (kind CONSUMER) whose parent is that context, with the job id,
queue, function and attempt as attributes. Without the package, ``ENABLED`` is False, this
module defines no-ops, and the enqueue and worker paths test one module-level flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import JobRecord

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the [otel] extra is not installed
    ENABLED = False
else:
    ENABLED = True
    _tracer = trace.get_tracer("django_redisq")


def configured() -> bool:
    """Whether an SDK (a real tracer provider) was set: without one, the API's spans are
    no-ops, and the worker skips them altogether (the API may be installed only because
    another library depends on it). Reads the API's global, which is what
    ``trace.get_tracer_provider()`` does too, minus its environment lookup per call."""
    return getattr(trace, "_TRACER_PROVIDER", True) is not None


def carrier() -> dict[str, str] | None:
    """The active trace context as propagation headers, or None without an active span."""
    if not ENABLED:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


@contextmanager
def job_span(rec: JobRecord, queue: str) -> Iterator[Any]:
    """Run the block in the job's span (the current span while it runs)."""
    parent = propagate.extract(rec.trace) if rec.trace else None
    with _tracer.start_as_current_span(
        f"redisq.job {rec.func}", context=parent, kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "redisq", "redisq.job.id": rec.id,
                    "redisq.queue": queue, "redisq.function": rec.func,
                    "redisq.attempt": rec.attempts},
        record_exception=False, set_status_on_exception=False,
    ) as span:
        yield span


def record_outcome(outcome: str, exc: BaseException | None, message: str = "") -> None:
    """Mark the current (job) span with the attempt's outcome and its error, if any.

    ``message`` is the error's text as the worker recorded it (``str(exc)`` may raise)."""
    span = trace.get_current_span()
    span.set_attribute("redisq.outcome", outcome)
    if exc is not None:
        # An exception whose __str__ raises cannot be recorded; the status is set anyway.
        with suppress(Exception):
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:500]))
