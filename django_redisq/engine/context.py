"""The running job's context, reachable from inside the job body (sync or async).

``current_job()`` reads a contextvar: the worker sets it in the job's task, and sync jobs run
in a copy of that context in their thread, so it works for both kinds of job.

``set_progress()`` and ``update_meta()`` are cheap to call in a tight loop: they change this
object under a lock and, at most once per ``PROGRESS_INTERVAL`` seconds, the worker's loop
writes the latest values to the job hash, together with the other writes it batches; the last
values are always written when the job ends.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import JobRecord
    from .queue import Queue

log = logging.getLogger("django_redisq.worker")

#: Least seconds between two progress/meta writes of one job.
PROGRESS_INTERVAL = 0.5
#: Longest progress message kept (longer ones are cut).
MAX_MESSAGE = 1000


@dataclass
class JobContext:
    """What a job may know about itself while it runs."""

    record: JobRecord
    queue: Queue
    worker: str
    cancel_requested: bool = field(default=False)
    progress: float | None = None
    progress_message: str | None = None
    #: Told (from any thread) that progress or meta changed and no write is scheduled yet.
    _sink: Callable[[JobContext], None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dirty: bool = field(default=False, repr=False)
    _scheduled: bool = field(default=False, repr=False)
    #: ``time.monotonic()`` of the last write (the worker throttles on it).
    last_write: float = field(default=float("-inf"), repr=False)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self.record.attempts

    @property
    def meta(self) -> dict[str, Any]:
        """The job's meta dict (from enqueue). Change it with ``update_meta``, or edit it in
        place and call ``save_meta``."""
        return self.record.meta

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report how much of the job is done, from 0 to 1, with an optional message.

        Shown by ``Job.progress`` / ``Job.progress_message`` and the admin job page."""
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                or not math.isfinite(fraction) or not 0 <= fraction <= 1):
            raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"the progress message must be a string, got {type(message)}")
        with self._lock:
            self.progress = float(fraction)
            self.progress_message = message[:MAX_MESSAGE] if message else None
            # The record too: in eager mode (no worker, no Redis) the handle reads it.
            self.record.progress, self.record.progress_message = (self.progress,
                                                                  self.progress_message)
        self._changed()

    def update_meta(self, **values: Any) -> None:
        """Merge ``values`` into the job's meta and save it (values must be JSON types)."""
        try:
            json.dumps(values)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"meta values must be JSON-serialisable: {exc}") from None
        with self._lock:
            self.record.meta.update(values)
        self._changed()

    def save_meta(self) -> None:
        """Save ``meta`` after editing it in place."""
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            self._dirty = True
            if self._scheduled or self._sink is None:
                return
            self._scheduled = True
            sink = self._sink
        sink(self)

    def take_update(self) -> list[Any] | None:
        """The fields to write (``[field, value, ...]``) if anything changed since the last
        call, else None. Called by the worker."""
        with self._lock:
            self._scheduled = False
            if not self._dirty:
                return None
            self._dirty = False
            fields: list[Any] = []
            if self.progress is not None:
                fields += ["progress", repr(self.progress),
                           "progress_msg", self.progress_message or ""]
            try:
                meta = json.dumps(self.record.meta, separators=(",", ":"), default=str)
            except (TypeError, ValueError) as exc:  # e.g. a cycle made by editing in place
                log.warning("job %s: meta not saved, it cannot be encoded as JSON: %s",
                            self.record.id, exc)
            else:
                fields += ["meta", meta]
            return fields or None

    def detach(self) -> None:
        """The job ended: later calls (a timed-out thread still running) write nothing."""
        with self._lock:
            self._sink = None


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "redisq_current_job", default=None
)


def current_job() -> JobContext | None:
    """The context of the job running in this task or thread, or ``None`` outside a job."""
    return _current.get()


def set_current(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)
