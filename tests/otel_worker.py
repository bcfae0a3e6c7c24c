"""OpenTelemetry SDK set-up for worker subprocesses of the tracing tests.

tests/settings.py calls ``install`` when ``REDISQ_TEST_OTEL_FILE`` is set: finished spans go
to an ``InMemorySpanExporter``, written as JSON lines to that file when the process exits, so
the test process can check the job span's parent.
"""

from __future__ import annotations

import atexit
import json
import os


def install(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    def dump() -> None:
        with open(path, "w") as f:
            for span in exporter.get_finished_spans():
                ctx = span.get_span_context()
                assert ctx is not None
                f.write(json.dumps({
                    "name": span.name,
                    "trace_id": ctx.trace_id,
                    "span_id": ctx.span_id,
                    "parent_span_id": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "pid": os.getpid(),
                }) + "\n")

    atexit.register(dump)
