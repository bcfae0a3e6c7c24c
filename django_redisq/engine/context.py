"""The running job's context, reachable from inside the job body (sync or async)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import JobRecord
    from .queue import Queue


@dataclass
class JobContext:
    """What a job may know about itself while it runs."""

    record: JobRecord
    queue: Queue
    worker: str
    cancel_requested: bool = field(default=False)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self.record.attempts

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.meta


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "redisq_current_job", default=None
)


def current_job() -> JobContext | None:
    """The context of the job running in this task or thread, or ``None`` outside a job."""
    return _current.get()


def set_current(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)
