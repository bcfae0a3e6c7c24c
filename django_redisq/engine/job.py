"""The job record stored in a Redis hash, and the ``Job`` handle users hold.

The hash carries a schema version (``v``) so that a newer worker can read jobs written by an
older release. Every field is text except the payload and the result, which are the serializer's
bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCanceled, JobFailed, JobNotFound, PayloadError
from .keys import TERMINAL_STATES
from .serializers import get_serializer

if TYPE_CHECKING:
    from .queue import Queue

SCHEMA_VERSION = 1
#: Versions this release can read.
READABLE_VERSIONS = frozenset({1})

R = TypeVar("R")


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | str | None, default: int | None = None) -> int | None:
    text = _text(value)
    if text is None or text == "":
        return default
    return int(float(text))


def ms_to_datetime(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass
class JobRecord:
    """A job as stored in Redis, decoded."""

    id: str
    queue: str
    func: str
    status: str
    payload: bytes = b""
    serializer: str = "json"
    priority: int = 0
    timeout: float | None = None
    retry: dict[str, Any] | None = None
    result_ttl: int = 0
    failure_ttl: int = 0
    enqueued_at: int | None = None
    scheduled_for: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    attempts: int = 0
    deaths: int = 0
    worker: str | None = None
    result: bytes | None = None
    error: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    @classmethod
    def from_hash(cls, data: Mapping[bytes, bytes] | list[bytes]) -> JobRecord:
        """Decode a HGETALL reply (a mapping, or the flat list a script returns).

        Raises ``PayloadError`` for anything malformed, so a worker can fail the job cleanly.
        """
        if isinstance(data, list):
            data = dict(zip(data[::2], data[1::2]))
        try:
            h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}
            version = _int(h.get("v"), 0) or 0
            if version not in READABLE_VERSIONS:
                raise PayloadError(
                    f"job schema version {version} is not readable by this worker "
                    f"(reads {sorted(READABLE_VERSIONS)}); upgrade django-redisq"
                )
            job_id, queue, func, status = (
                _text(h.get("id")), _text(h.get("queue")), _text(h.get("func")),
                _text(h.get("status")),
            )
            if not job_id or not queue or func is None or not status:
                raise PayloadError("job hash lacks one of the fields id, queue, func, status")
            timeout = _text(h.get("timeout"))
            retry = _text(h.get("retry"))
            error = _text(h.get("error"))
            errors = _text(h.get("errors"))
            meta = _text(h.get("meta"))
            payload = h.get("payload") or b""
            return cls(
                id=job_id,
                queue=queue,
                func=func,
                status=status,
                payload=payload if isinstance(payload, bytes) else payload.encode(),
                serializer=_text(h.get("ser")) or "json",
                priority=_int(h.get("priority"), 0) or 0,
                timeout=float(timeout) if timeout else None,
                retry=json.loads(retry) if retry else None,
                result_ttl=_int(h.get("result_ttl"), 0) or 0,
                failure_ttl=_int(h.get("failure_ttl"), 0) or 0,
                enqueued_at=_int(h.get("enqueued_at")),
                scheduled_for=_int(h.get("scheduled_for")),
                started_at=_int(h.get("started_at")),
                ended_at=_int(h.get("ended_at")),
                attempts=_int(h.get("attempts"), 0) or 0,
                deaths=_int(h.get("deaths"), 0) or 0,
                worker=_text(h.get("worker")) or None,
                result=h.get("result"),
                error=json.loads(error) if error else None,
                errors=json.loads(errors) if errors else [],
                cancel_requested=bool(h.get("cancel")),
                meta=json.loads(meta) if meta else {},
                version=version,
            )
        except PayloadError:
            raise
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise PayloadError(f"malformed job hash: {exc}") from exc

    @classmethod
    def decode_many(cls, hashes: list[Any]) -> list[JobRecord]:
        """Decode HGETALL replies, skipping missing (expired) and malformed jobs: listings show
        what can be shown; workers fail malformed jobs on their own path."""
        out = []
        for h in hashes:
            if h:
                try:
                    out.append(cls.from_hash(h))
                except PayloadError:
                    continue
        return out

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        """The decoded positional and keyword arguments."""
        try:
            data = get_serializer(self.serializer).loads(self.payload)
            args, kwargs = data
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("payload is not [args, kwargs]")
            return args, kwargs
        except Exception as exc:
            raise PayloadError(f"cannot decode the job's arguments: {exc}") from exc

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def duration(self) -> float | None:
        """Seconds between start and end of the last attempt."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at) / 1000)


def encode_fields(fields: Mapping[str, Any]) -> list[Any]:
    """Flatten a field mapping into HSET arguments, dropping ``None`` values."""
    out: list[Any] = []
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, (dict, list)):
            v = json.dumps(v, separators=(",", ":"))
        elif isinstance(v, bool):
            v = int(v)
        out += [k, v]
    return out


class Job(Generic[R]):
    """A handle on a job: its id, and ways to read its state and wait for it to end.

    ``status`` asks Redis each time; ``result``, ``exc_info`` and ``record`` use the last
    ``refresh()`` (made on first use, and again while the job has not ended).
    """

    def __init__(self, queue: Queue, job_id: str, record: JobRecord | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self._record = record

    def __repr__(self) -> str:
        status = self._record.status if self._record else "?"
        return f"<Job {self.id} queue={self.queue.name} status={status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.queue.name, other.id) == (self.queue.name, self.id)

    def __hash__(self) -> int:
        return hash((self.queue.name, self.id))

    # -- state --------------------------------------------------------------------------------
    @property
    def status(self) -> str | None:
        """The current state, or ``None`` when Redis has no such job (not sent yet, or expired)."""
        return self.queue.job_status(self.id)

    async def astatus(self) -> str | None:
        return await self.queue.ajob_status(self.id)

    def refresh(self) -> Job[R]:
        self._record = self.queue.fetch_record(self.id)
        return self

    async def arefresh(self) -> Job[R]:
        self._record = await self.queue.afetch_record(self.id)
        return self

    @property
    def record(self) -> JobRecord:
        if self._record is None or not self._record.is_terminal:
            self.refresh()
        if self._record is None:
            raise JobNotFound(f"job {self.id} not found in queue {self.queue.name!r}")
        return self._record

    @property
    def result(self) -> R | None:
        """The return value once finished, else ``None``."""
        rec = self.record
        if rec.status != "finished" or rec.result is None:
            return None
        return self._decode_result(rec)

    @property
    def exc_info(self) -> str | None:
        """The traceback of the last failure, or ``None``."""
        rec = self.record
        return rec.error.get("traceback") or None if rec.error else None

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Each failed attempt's ``{type, message, traceback}``, oldest first."""
        return self.record.errors

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.meta

    # -- actions ------------------------------------------------------------------------------
    def cancel(self) -> str | None:
        """Cancel a waiting job now, or ask its worker to stop it; returns the status after."""
        return self.queue.cancel(self.id)

    async def acancel(self) -> str | None:
        return await self.queue.acancel(self.id)

    def get(self, timeout: float | None = None) -> R:
        """Wait until the job ends; return its result or raise its error.

        Blocks on Redis (no polling). Raises ``TimeoutError`` when ``timeout`` seconds pass,
        ``JobFailed`` when the job failed, ``JobCanceled`` when it was canceled.
        """
        self._record = self.queue.wait(self.id, timeout)
        return self._outcome(self._record)

    async def aget(self, timeout: float | None = None) -> R:
        self._record = await self.queue.await_(self.id, timeout)
        return self._outcome(self._record)

    # -- helpers ------------------------------------------------------------------------------
    def _decode_result(self, rec: JobRecord) -> R:
        try:
            value: R = get_serializer(rec.serializer).loads(rec.result or b"null")
        except Exception as exc:
            raise PayloadError(f"cannot decode the result of job {self.id}: {exc}") from exc
        return value

    def _outcome(self, rec: JobRecord) -> R:
        if rec.status == "finished":
            return self._decode_result(rec)
        if rec.status == "canceled":
            raise JobCanceled(f"job {self.id} was canceled")
        err = rec.error or {}
        raise JobFailed(self.id, str(err.get("type", "Error")), str(err.get("message", "")),
                        str(err.get("traceback", "")))

