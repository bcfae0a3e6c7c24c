"""The job record stored in a Redis hash, and the ``Job`` handle users hold.

The hash carries a schema version (``v``) so that a newer worker can read jobs written by an
older release. Every field is text except the payload and the result, which are the serializer's
bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCanceled, JobFailed, JobNotFound, PayloadError
from .keys import TERMINAL_STATES
from .serializers import Serializer, get_serializer

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


def _limit_int(value: bytes | str | None) -> int | None:
    """A limit field (shown, never acted on here: the scripts read their own copy), ``None``
    when absent or not a positive integer, so a garbled one never rejects the job."""
    try:
        n = _int(value)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        return None
    return n if n is not None and n > 0 else None


def _limit_text(value: bytes | str | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


#: Hash fields kept as bytes (the serializer's data); every other field is text.
_BINARY = frozenset({"payload", "result"})
#: Fields most jobs do not have: ``from_hash`` reads them only when one is present. A field
#: that ``from_hash`` decodes and that is not in its common set must be listed here.
_OCCASIONAL = frozenset({
    "priority", "retry", "scheduled_for", "deaths", "error", "errors", "cancel", "meta",
    "progress", "progress_msg", "trace", "limit_key", "max_concurrency", "rate_n", "rate_ms",
    "rate_burst", "limit_wait",
})


def _json_field(h: Mapping[str, Any], name: str, kind: type) -> Any:
    """A JSON field of the hash, ``None`` when absent; of type ``kind`` or PayloadError."""
    text = _text(h.get(name))
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, kind):
        raise PayloadError(f"malformed job hash: field {name!r} holds a JSON "
                           f"{type(value).__name__}, not a {kind.__name__}")
    return value


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
    #: Fraction done (0 to 1) and a message, as the running job last reported them.
    progress: float | None = None
    progress_message: str | None = None
    #: Trace context of the enqueuing code (propagation headers), when tracing was active.
    trace: dict[str, str] | None = None
    version: int = SCHEMA_VERSION
    #: Concurrency and rate limits (``@job(limit_key=..., ...)``): the resolved key, the
    #: most jobs of the key at once, the rate as ``(count, period_ms, burst)``, and whether
    #: the job is waiting (in ``deferred``) for a slot of its key.
    limit_key: str | None = None
    max_concurrency: int | None = None
    rate: tuple[int, int, int] | None = None
    limit_wait: bool = False

    @property
    def limits_text(self) -> str:
        """The limits in words, for listings and the admin ("" when none)."""
        if self.limit_key is None:
            return ""
        parts = []
        if self.max_concurrency is not None:
            parts.append(f"at most {self.max_concurrency} at once")
        if self.rate is not None:
            count, period_ms, burst = self.rate
            unit = {1000: "s", 60_000: "m", 3_600_000: "h"}.get(period_ms, f"{period_ms} ms")
            parts.append(f"{count}/{unit} (bursts of {burst})")
        text = f"key {self.limit_key!r}: {', '.join(parts)}"
        return text + ("; waiting for a slot" if self.limit_wait else "")

    @classmethod
    def from_hash(cls, data: Mapping[bytes, bytes] | list[bytes]) -> JobRecord:
        """Decode a HGETALL reply (a mapping, or the flat list a script returns).

        Raises ``PayloadError`` for anything malformed, so a worker can fail the job cleanly.
        """
        pairs: Any
        if isinstance(data, list):
            it = iter(data)
            pairs = zip(it, it)
        else:
            pairs = data.items()
        try:
            # A worker decodes one of these per job: every present field is decoded once
            # (payload and result stay bytes), absent ones cost a dict lookup, and the
            # fields most jobs lack are looked at only when one is there.
            h: dict[str, Any] = {}
            for k, v in pairs:
                key = k.decode() if isinstance(k, bytes) else k
                h[key] = (v.decode(errors="replace") if isinstance(v, bytes) and key not in _BINARY
                          else v)
            get = h.get

            def num(name: str, default: int | None = 0) -> int | None:
                v = get(name)
                return int(float(v)) if v else default

            version = num("v") or 0
            if version not in READABLE_VERSIONS:
                raise PayloadError(
                    f"job schema version {version} is not readable by this worker "
                    f"(reads {sorted(READABLE_VERSIONS)}); upgrade django-redisq"
                )
            job_id, queue, func, status = get("id"), get("queue"), get("func"), get("status")
            if not job_id or not queue or func is None or not status:
                raise PayloadError("job hash lacks one of the fields id, queue, func, status")
            timeout_text = get("timeout")
            timeout = float(timeout_text) if timeout_text else None
            if timeout is not None and not 0 < timeout < math.inf:
                # nan or inf would reach the event loop's timer heap.
                raise PayloadError(f"malformed job hash: timeout {timeout_text!r} is not a "
                                   f"positive number of seconds")
            payload = get("payload") or b""
            record = cls(
                id=job_id,
                queue=queue,
                func=func,
                status=status,
                payload=payload if isinstance(payload, bytes) else payload.encode(),
                serializer=get("ser") or "json",
                timeout=timeout,
                result_ttl=num("result_ttl") or 0,
                failure_ttl=num("failure_ttl") or 0,
                enqueued_at=num("enqueued_at", None),
                started_at=num("started_at", None),
                ended_at=num("ended_at", None),
                attempts=num("attempts") or 0,
                worker=get("worker") or None,
                result=get("result"),
                version=version,
            )
            if not h.keys().isdisjoint(_OCCASIONAL):
                record._read_occasional(h, num)
            return record
        except PayloadError:
            raise
        except Exception as exc:  # anything a hostile hash provokes (OverflowError for
            # '1e400', RecursionError for deep JSON, ...) is a malformed job, not a crash
            raise PayloadError(f"malformed job hash: {type(exc).__name__}: {exc}") from exc

    def _read_occasional(self, h: dict[str, Any], num: Callable[..., int | None]) -> None:
        """The fields of ``_OCCASIONAL`` (``from_hash``; its errors are its caller's)."""
        get = h.get
        error = _json_field(h, "error", dict)
        errors = _json_field(h, "errors", list)
        if error is not None and "traceback" not in error and errors:
            # A worker stores the last error's traceback once, in ``errors``.
            last = errors[-1]
            if isinstance(last, dict) and last.get("attempt") == error.get("attempt"):
                error = {**error, "traceback": last.get("traceback")}
        progress = get("progress")
        rate_n = _limit_int(get("rate_n"))
        self.priority = num("priority") or 0
        self.retry = _json_field(h, "retry", dict)
        self.scheduled_for = num("scheduled_for", None)
        self.deaths = num("deaths") or 0
        self.error = error
        self.errors = errors or []
        self.cancel_requested = bool(get("cancel"))
        self.meta = _json_field(h, "meta", dict) or {}
        self.progress = float(progress) if progress else None
        self.progress_message = get("progress_msg") or None
        self.trace = _json_field(h, "trace", dict)
        self.limit_key = get("limit_key")
        self.max_concurrency = _limit_int(get("max_concurrency"))
        self.rate = ((rate_n, _limit_int(get("rate_ms")) or 1000,
                      _limit_int(get("rate_burst")) or 1) if rate_n else None)
        self.limit_wait = get("limit_wait") == "1"

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

    def call(self, allowed: str = "json") -> tuple[list[Any], dict[str, Any]]:
        """The decoded positional and keyword arguments.

        ``allowed`` is the serializer the queue is configured with: the hash's ``ser`` field
        is data anyone with write access to Redis can set, so it may not choose pickle.
        """
        try:
            data = codec(self.serializer, allowed).loads(self.payload)
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


def codec(name: str, allowed: str) -> Serializer:
    """The codec for data a job hash says was encoded with ``name``, where the queue is
    configured for ``allowed``. JSON is always safe to decode; any other codec (pickle) only
    where the site chose it, so that bytes written into Redis cannot make a process unpickle.
    """
    if name != "json" and name != allowed:
        raise PayloadError(
            f"the job's data is encoded with the {name!r} serializer, but this queue uses "
            f"{allowed!r}; it is not decoded (set REDISQ['SERIALIZER'] = {name!r} only if every "
            f"writer to this Redis is trusted)")
    return get_serializer(name)


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
        """The job's meta dict: as enqueued, then as the running job saved it."""
        return self.record.meta

    @property
    def progress(self) -> float | None:
        """The fraction done (0 to 1) the running job last reported, or None.

        Read fresh from Redis while the job has not ended (like ``meta``)."""
        return self.record.progress

    @property
    def progress_message(self) -> str | None:
        return self.record.progress_message

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
            value: R = codec(rec.serializer, self.queue.serializer.name).loads(
                rec.result or b"null")
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

