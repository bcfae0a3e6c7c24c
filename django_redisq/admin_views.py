"""The admin pages of the "Queues" section: custom views that read Redis, never a table.

Every page reads a bounded amount of Redis: counts are ZCARDs (O(1)), listings are ZRANGE
windows followed by one pipeline of HGETALLs, so a page costs the same whether a queue holds
ten jobs or ten million. Pages are wrapped by ``RedisQAdmin.wrap`` (``admin.py``): the admin
site's login and staff check, CSRF, no caching, then the model permission checks made here.

Rules kept throughout:

* a GET never changes anything; actions are POST (``require_POST``) with Django's CSRF check;
* everything read from Redis is rendered through autoescaping, as plain ``str`` (``plain``);
* bad query parameters give a 400 page, a missing queue or job a 404 page, an unreachable
  Redis a 503 page naming the masked URL; none of them is a 500.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import wraps
from typing import TYPE_CHECKING, Any, cast

import redis
from django.contrib import messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone as dj_timezone
from django.utils.http import urlencode

from .conf import get_queue, queue_names, redisq_settings
from .engine.errors import PayloadError, RedisQError
from .engine.job import JobRecord, codec
from .engine.keys import ACTIVE_STATES, STATES, TERMINAL_STATES, worker_key, workers_key
from .engine.ops import Batch, Cmd, Steps, one
from .engine.queue import Queue

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    AnyAdmin = ModelAdmin[Any]
else:
    AnyAdmin = Any

log = logging.getLogger("django_redisq.admin")

#: Jobs per page of a listing.
PER_PAGE = 50
#: Workers shown at most (the most recently seen first).
MAX_WORKERS = 500
#: Job ids selected at most in one bulk action.
MAX_SELECTED = 1000
#: Longest job id (``Queue.prepare`` refuses longer ones).
MAX_JOB_ID = 200
#: Characters of arguments, results and tracebacks shown before cutting.
MAX_TEXT = 100_000
#: Seconds between reloads of a running job's admin page (progress, status).
JOB_REFRESH_SECONDS = 2

#: Which actions apply to jobs in which state.
REQUEUEABLE = ("failed", "canceled")
CANCELABLE = ACTIVE_STATES

_PAGE_RE = re.compile(r"[0-9]{1,9}")
_UNQUOTE_RE = re.compile(r"_([0-9A-F]{2})")


# -- errors shown as pages ----------------------------------------------------------------------
class PageError(Exception):
    """Shown as an admin page with this status and message instead of a Django error."""

    status = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadParameter(PageError):
    status = 400
    title = "Bad request"


class NotFound(PageError):
    status = 404
    title = "Not found"


# -- small helpers ------------------------------------------------------------------------------
def plain(value: Any) -> str:
    """``value`` as a plain ``str``: never a ``SafeString``, so autoescaping always applies
    (a pickled ``SafeString`` read from Redis must not reach a template unescaped)."""
    text = value if isinstance(value, str) else str(value)
    return text if type(text) is str else str.__str__(text)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return plain(value) if value is not None else ""


def _int(value: Any) -> int | None:
    """An integer read from Redis, or None when it is not a finite number ("1e400" is
    infinite, "nan" is not a number)."""
    try:
        return int(float(_text(value)))
    except (ValueError, OverflowError, TypeError):
        return None


def _visible(text: str) -> str:
    """``text`` with what would not show as backslash escapes: control and other
    non-printable characters, and the bytes of a value that was not UTF-8 (read with
    ``surrogateescape``). The result still goes through autoescaping."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _is_text(value: str) -> bool:
    """Whether ``value`` is UTF-8 text (not bytes kept as surrogates by surrogateescape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"


def pretty(value: Any) -> str:
    """Readable, indented JSON for a decoded value (``repr`` for what JSON cannot show)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return _cut(plain(text))


def duration_text(seconds: float | None) -> str:
    """``850 ms``, ``2.50 s``, ``3 min 5 s``, ``2 h 1 min``, ``7 d``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    parts = []
    rest = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n} {unit}")
    return " ".join(parts[:2])


@dataclass(frozen=True)
class Stamp:
    """A moment formatted once in Python (cheaper than a template include per table cell):
    ``text`` in the current time zone, ``iso`` for ``<time datetime>``, ``ago`` for a title."""

    text: str
    iso: str
    ago: str
    value: datetime | None  # None: not a moment a datetime can hold (``text`` says so)

    def __str__(self) -> str:
        return self.text


def _raw_stamp(raw: Any, why: str) -> Stamp:
    text = _clip(_visible(_text(raw)), 40)
    return Stamp(f"{why} ({text})", "", f"the stored value is {why}", None)


def stamp(ms: Any, now_ms: int | None = None) -> Stamp | None:
    """Milliseconds since the epoch (an int, or the value as read from Redis) as a Stamp;
    None when absent. A value that is not a number, or a moment outside what ``datetime``
    holds (a due time 3 million days away, "1e18", "+inf"), is shown as it is stored: a
    listing must never fail on one job's odd value."""
    if ms is None or ms == "" or ms == b"":
        return None
    value = ms if type(ms) is int else _int(ms)
    if value is None:
        return _raw_stamp(ms, "not a time")
    try:
        when = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return _raw_stamp(ms, "out of range")
    zone = ""
    try:
        local = dj_timezone.localtime(when)
    except (ValueError, OverflowError):  # 9999-12-31 23:30 UTC is past the end east of UTC
        local, zone = when, " UTC"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    delta = (now_ms - value) / 1000
    ago = (f"{duration_text(delta)} ago" if delta >= 0 else f"in {duration_text(-delta)}")
    return Stamp(local.strftime("%Y-%m-%d %H:%M:%S") + zone, local.isoformat(), ago, when)


def _clip(value: str, limit: int = 80) -> str:
    """A request value quoted back in a message, cut short (it is escaped when shown)."""
    return value if len(value) <= limit else value[:limit] + "…"


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """A ``ZRANGE ... WITHSCORES`` reply as (member, score), whatever shape redis-py gave."""
    if not reply:
        return []
    if isinstance(reply[0], (list, tuple)):
        return [(_text(m), float(s)) for m, s in reply]
    return [(_text(m), float(s)) for m, s in zip(reply[::2], reply[1::2])]


def _server_ms(reply: Any) -> int:
    """Milliseconds from a ``TIME`` reply (Redis's clock: the one heartbeats are scored by)."""
    seconds, micros = (int(_text(x)) for x in reply)
    return seconds * 1000 + micros // 1000


def _by_connection(queues: Sequence[Queue]) -> list[list[Queue]]:
    """Queues grouped by Redis connection (``conf`` shares one per URL): one pipeline each."""
    groups: dict[int, list[Queue]] = {}
    for q in queues:
        groups.setdefault(id(q.connection), []).append(q)
    return list(groups.values())


def _configured() -> list[Queue]:
    return [get_queue(name) for name in queue_names()]


# -- site plumbing ------------------------------------------------------------------------------
def qid(value: str) -> str:
    """A queue name or job id as a URL path segment or a selection value: Django admin's
    ``quote`` ("/" as "_2F", "_" as "_5F", ...), plus, in the same ``_XX`` form, the control
    characters (an HTML form turns a CR into a LF and a NUL into U+FFFD) and the dots of an
    id that is all dots: "." and ".." are dot segments, which browsers resolve (even written
    "%2E") before sending the request, so the link would lead to another page."""
    text = quote(value)
    if text in (".", ".."):
        return text.replace(".", "_2E")
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() or ord(ch) > 0xFF else f"_{ord(ch):02X}"
                       for ch in text)
    return text


def unq(value: str) -> str:
    """Undo ``qid`` (and Django admin's ``quote``): "_" is always escaped, so every "_XX"
    is an escape."""
    return _UNQUOTE_RE.sub(lambda m: chr(int(m[1], 16)), value)


def admin_url(model_admin: AnyAdmin, name: str, *args: str) -> str:
    site = model_admin.admin_site.name
    return reverse(f"{site}:django_redisq_{name}", args=args, current_app=site)


def job_url(model_admin: AnyAdmin, queue: str, job_id: str, action: str = "change") -> str:
    return admin_url(model_admin, f"job_{action}", qid(queue), qid(job_id))


def sibling(model_admin: AnyAdmin, model_name: str) -> AnyAdmin:
    """The registered admin of another model of this app (its permission methods apply)."""
    from django.apps import apps

    model = apps.get_model("django_redisq", model_name)
    return model_admin.admin_site.get_model_admin(model)


def require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def context(request: HttpRequest, model_admin: AnyAdmin, title: str,
            **extra: Any) -> dict[str, Any]:
    opts = model_admin.model._meta
    return {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "app_label": opts.app_label,
        "title": title,
        "queues_url": admin_url(model_admin, "queue_changelist"),
        "jobs_url": admin_url(model_admin, "job_changelist"),
        **extra,
    }


def render(request: HttpRequest, template: str, ctx: dict[str, Any],
           status: int = 200) -> HttpResponse:
    response = TemplateResponse(request, f"django_redisq/{template}", ctx, status=status)
    return response.render()


View = Callable[..., HttpResponse]


def guarded(view: View) -> View:
    """Turn bad parameters, missing objects and an unreachable Redis into admin pages."""

    @wraps(view)
    def inner(request: HttpRequest, model_admin: AnyAdmin, *args: Any,
              **kwargs: Any) -> HttpResponse:
        request.current_app = model_admin.admin_site.name
        try:
            return view(request, model_admin, *args, **kwargs)
        except PageError as exc:
            return render(request, "error.html", context(
                request, model_admin, exc.title, message=exc.message), status=exc.status)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RedisUnavailable is a ConnectionError; its message carries the masked URL only.
            log.warning("admin: Redis is unreachable: %s", exc)
            return render(request, "unavailable.html", context(
                request, model_admin, "Redis is unreachable", error=plain(str(exc)),
                servers=_servers()), status=503)
        except redis.ResponseError as exc:
            # What the pages expect of Redis data is handled where it is read (a key of
            # another type, malformed jobs); an error left is shown, not a traceback page.
            log.exception("admin: Redis replied with an error")
            return render(request, "error.html", context(
                request, model_admin, "Redis replied with an error",
                message=f"Redis replied with an error: {_clip(plain(str(exc)), 300)}"),
                status=500)

    return inner


def _servers() -> list[dict[str, str]]:
    """Each configured queue with its masked Redis URL (no connection is made)."""
    conf = redisq_settings()
    return [{"queue": name, "url": qs.masked_url} for name, qs in conf.queues.items()]


# -- parameters ---------------------------------------------------------------------------------
def param_queue(value: str | None, *, default: bool = True) -> Queue:
    names = queue_names()
    if value is None or value == "":
        if default and names:
            return get_queue(names[0])
        raise BadParameter("Choose a queue.")
    if value not in names:
        raise BadParameter(f"There is no queue named “{_clip(value)}”. "
                           f"Configured queues: {', '.join(names)}.")
    return get_queue(value)


def path_queue(value: str) -> Queue:
    name = unq(value)
    if name not in queue_names():
        raise NotFound(f"There is no queue named “{_clip(name)}”.")
    return get_queue(name)


def param_state(value: str | None, default: str = "queued") -> str:
    if value is None or value == "":
        return default
    if value not in STATES:
        raise BadParameter(f"Unknown job state “{_clip(value)}”; choose one of "
                           f"{', '.join(STATES)}.")
    return value


def param_page(value: str | None) -> int:
    if value is None or value == "":
        return 1
    if not _PAGE_RE.fullmatch(value) or int(value) < 1:
        raise BadParameter(f"“{_clip(value)}” is not a page number; pages are numbered "
                           f"from 1.")
    return int(value)


def valid_job_id(value: str) -> bool:
    """Whether the admin can open and act on a job of this id: 1 to 200 characters of
    text. Not only printable ones: enqueue once accepted any, and the jobs made then must
    stay viewable and deletable (``qid`` escapes what a URL or a form would change; pages
    show them with ``_visible``). Not an id that is not UTF-8 (read with
    ``surrogateescape``): no URL or form carries it back."""
    return 0 < len(value) <= MAX_JOB_ID and _is_text(value)


def path_job_id(value: str) -> str:
    job_id = unq(value)
    if not valid_job_id(job_id):
        raise BadParameter("That is not a job id: job ids are 1 to 200 characters.")
    return job_id


# -- reading Redis ------------------------------------------------------------------------------
@dataclass
class WorkerInfo:
    name: str
    alive: bool
    last_beat: Stamp | None
    seconds_ago: float | None  # None: no heartbeat time that can be read
    host: str = ""
    pid: str = ""
    queues: list[str] = field(default_factory=list)
    concurrency: str = ""
    started: Stamp | None = None
    state: str = ""
    processed: str = ""
    failed: str = ""
    #: ``{"queue", "id", "text", "url"}``; "queue" is "" for an entry that names no job.
    jobs: list[dict[str, str]] = field(default_factory=list)
    known: bool = False  # the worker's hash still exists (it expires after 3 heartbeats)


@dataclass
class Overview:
    """Counts of some queues and the worker registry of one Redis, read in two round trips."""

    counts: dict[str, dict[str, int]]
    workers: list[WorkerInfo]
    workers_total: int


def _overview_steps(queues: Sequence[Queue], prefix: str, with_workers: bool,
                    stale_ms: int, worker_limit: int = MAX_WORKERS) -> Steps[Overview]:
    ops: list[Cmd] = [Cmd(("ZCARD", q.keys.state(s))) for q in queues for s in STATES]
    if with_workers:
        wkey = workers_key(prefix)
        ops += [Cmd(("TIME",)), Cmd(("ZCARD", wkey)),
                Cmd(("ZREVRANGE", wkey, 0, worker_limit - 1, "WITHSCORES"),
                    options={"withscores": True})]
    replies = yield Batch(ops)
    counts: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queues):
        row = replies[i * len(STATES):(i + 1) * len(STATES)]
        counts[q.name] = {s: int(n) for s, n in zip(STATES, row)}
    if not with_workers:
        return Overview(counts, [], 0)
    time_reply, total, pairs = replies[-3:]
    now = _server_ms(time_reply)
    seen = _pairs(pairs)
    hashes = (yield Batch([Cmd(("HGETALL", worker_key(prefix, n))) for n, _ in seen])
              ) if seen else []
    workers = [_worker(name, score, now, stale_ms, h or {})
               for (name, score), h in zip(seen, hashes)]
    return Overview(counts, workers, int(total))


def _worker(name: str, score: float, now_ms: int, stale_ms: int,
            raw: dict[Any, Any]) -> WorkerInfo:
    h = {_text(k): _text(v) for k, v in raw.items()}
    # The registry's score is the last heartbeat; a corrupt one ("+inf") is not a time.
    last = _int(h.get("last_beat")) or (int(score) if math.isfinite(score) else None)
    if last is None:
        info = WorkerInfo(name=plain(name), alive=False, seconds_ago=None, known=bool(h),
                          last_beat=stamp(h.get("last_beat") or str(score), now_ms))
    else:
        info = WorkerInfo(name=plain(name), alive=bool(h) and now_ms - last <= stale_ms,
                          last_beat=stamp(last, now_ms),
                          seconds_ago=max(0, now_ms - last) / 1000, known=bool(h))
    if h:
        info.host = h.get("host", "")
        info.pid = h.get("pid", "")
        info.queues = [q for q in h.get("queues", "").split(",") if q]
        info.concurrency = h.get("concurrency", "")
        info.started = stamp(h.get("started"), now_ms)
        info.state = h.get("state", "")
        info.processed = h.get("processed", "")
        info.failed = h.get("failed", "")
        for item in h.get("jobs", "").split(","):
            if not item:
                continue
            queue, sep, job_id = item.partition("/")
            if not (sep and queue and valid_job_id(job_id)):  # "/abc": shown, not linked
                queue = job_id = ""
            info.jobs.append({"queue": queue, "id": job_id, "text": _visible(item), "url": ""})
    return info


def overview(queues: Sequence[Queue], *, with_workers: bool = True) -> Overview:
    """Counts per state of ``queues`` and the workers of their Redis deployments: one pipeline
    per Redis deployment for the counts and the worker registry, one more for worker details."""
    conf = redisq_settings()
    stale_ms = int(conf.heartbeat * 3 * 1000)
    out = Overview({}, [], 0)
    groups = _by_connection(queues) if queues else (
        _by_connection(_configured()) if with_workers else [])
    seen: set[str] = set()
    for group in groups:
        part: Overview = group[0].run(_overview_steps(
            [q for q in group if q in queues], conf.key_prefix, with_workers, stale_ms))
        out.counts.update(part.counts)
        for w in part.workers:
            if w.name not in seen:
                seen.add(w.name)
                out.workers.append(w)
        out.workers_total += part.workers_total
    return out


@dataclass
class Entry:
    """A job as the admin reads it: the queue and id it was read under (never the hash's own
    ``queue`` and ``id`` fields, which may say otherwise), its fields, and its decoded record,
    or why there is none (a malformed hash, or a key that is not a hash)."""

    queue: str
    id: str  # a registry member that is not UTF-8 keeps its bytes as surrogates
    fields: dict[str, bytes]
    record: JobRecord | None = None
    problem: str = ""

    def value(self, name: str) -> str:
        """A field as text ("" when absent)."""
        return _text(self.fields.get(name))

    @property
    def func(self) -> str:
        return self.record.func if self.record is not None else self.value("func")

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else self.value("status")


def _job_key(queue: Queue, job_id: str) -> str | bytes:
    key = queue.keys.job(job_id)
    # an id that was not UTF-8: its key is made of the same bytes
    return key if _is_text(key) else key.encode("utf-8", "surrogateescape")


def _raw_fields(reply: Any) -> dict[str, bytes]:
    """A HGETALL reply (a mapping or a flat list) as field name -> value bytes."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    return {_text(k): v if isinstance(v, bytes) else _text(v).encode() for k, v in pairs}


def _entry(queue: str, job_id: str, reply: Any) -> Entry | None:
    """The ``Entry`` of a ``_read_hashes`` reply; None when the job does not exist."""
    if isinstance(reply, str):
        return Entry(queue, job_id, {}, problem=(
            f"Its key holds a Redis {_visible(reply)}, not a hash: this is not a job record. "
            f"It can only be deleted."))
    if not reply:
        return None
    fields = _raw_fields(reply)
    try:
        return Entry(queue, job_id, fields, JobRecord.from_hash(reply))
    except PayloadError as exc:
        return Entry(queue, job_id, fields, problem=_cut(plain(str(exc)), 2000))


def _read_hashes(queue: Queue, keys: Sequence[str | bytes]) -> list[Any]:
    """The HGETALL reply of each key (on ``queue``'s Redis), in one round trip; for a key of
    another type, its type's name instead (two more round trips, only then)."""
    if not keys:
        return []
    try:
        return list(queue.run(_batch_steps([Cmd(("HGETALL", k)) for k in keys])))
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
    types = [_text(t) for t in queue.run(_batch_steps([Cmd(("TYPE", k)) for k in keys]))]
    hashes = [k for k, t in zip(keys, types) if t == "hash"]
    replies = iter(queue.run(_batch_steps([Cmd(("HGETALL", k)) for k in hashes]))
                   if hashes else [])
    return [next(replies) if t == "hash" else ({} if t == "none" else t) for t in types]


def read_jobs(queue: Queue, ids: Sequence[str]) -> list[Entry]:
    """The jobs of ``queue`` with these ids, in order; missing ones are left out."""
    replies = _read_hashes(queue, [_job_key(queue, i) for i in ids])
    entries = [_entry(queue.name, i, reply) for i, reply in zip(ids, replies)]
    return [e for e in entries if e is not None]


def find_job(job_id: str, queues: Sequence[Queue]) -> list[Entry]:
    """The jobs with this exact id in any of ``queues``: one pipeline per Redis deployment."""
    found: list[Entry] = []
    for group in _by_connection(queues):
        replies = _read_hashes(group[0], [_job_key(q, job_id) for q in group])
        found += [e for q, reply in zip(group, replies)
                  if (e := _entry(q.name, job_id, reply)) is not None]
    return found


def _ids_steps(queue: Queue, state: str, offset: int, limit: int) -> Steps[list[str]]:
    # As ``Queue.job_ids`` (terminal registries newest first, the others next due first),
    # keeping a member that is not UTF-8 (as surrogates) rather than failing on it.
    cmd = "ZREVRANGE" if state in TERMINAL_STATES else "ZRANGE"
    ids = yield Cmd((cmd, queue.keys.state(state), offset, offset + limit - 1))
    return [i.decode("utf-8", "surrogateescape") if isinstance(i, bytes) else plain(i)
            for i in ids]


class JobWindow:
    """A state's jobs as a sequence for ``Paginator``: slicing reads one ZRANGE window, then
    the jobs' hashes in one pipeline. Malformed jobs are kept (``Entry.problem``), so that a
    listing shows every job it counts and each can be selected and deleted."""

    def __init__(self, queue: Queue, state: str, total: int) -> None:
        self.queue = queue
        self.state = state
        self.total = total

    def count(self) -> int:
        return self.total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, window: slice) -> list[Entry]:
        start = window.start or 0
        stop = self.total if window.stop is None else window.stop
        if stop <= start:
            return []
        ids = self.queue.run(_ids_steps(self.queue, self.state, start, stop - start))
        return read_jobs(self.queue, ids)


def paginate(queue: Queue, state: str, total: int,
             page: int) -> tuple[Paginator[Entry], Page[Entry]]:
    """The page of a state's jobs (a page past the end shows the last one)."""
    paginator: Paginator[Entry] = Paginator(cast(Any, JobWindow(queue, state, total)),
                                            PER_PAGE)
    number = min(page, paginator.num_pages)
    return paginator, paginator.page(number)


def page_links(paginator: Paginator[Entry], page: Page[Entry],
               base: dict[str, str]) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    if paginator.num_pages <= 1:
        return links
    for n in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1):
        if not isinstance(n, int):  # Paginator.ELLIPSIS
            links.append({"ellipsis": True, "label": n})
        else:
            links.append({"label": n, "current": n == page.number,
                          "url": "?" + urlencode({**base, "page": str(n)})})
    return links


# -- rows ---------------------------------------------------------------------------------------
@dataclass
class JobRow:
    id: str  # shown: escapes for what would not show (``_visible``)
    queue: str
    func: str
    status: str
    url: str  # "" for an id no URL can carry (not UTF-8)
    select: str  # the checkbox value: quoted queue, "/", quoted id ("" as for url)
    enqueued_at: Stamp | None
    scheduled_for: Stamp | None
    started_at: Stamp | None
    ended_at: Stamp | None
    duration: str
    attempts: str
    error: str
    malformed: str = ""  # why the job's record cannot be decoded ("" when it can)


def job_row(model_admin: AnyAdmin, entry: Entry, now: int | None = None) -> JobRow:
    """A listing's row: the id and queue are those the job was read under."""
    linkable = valid_job_id(entry.id)
    rec = entry.record
    common = {
        "id": _visible(entry.id), "queue": plain(entry.queue),
        "func": _visible(entry.func), "status": _visible(entry.status),
        "url": job_url(model_admin, entry.queue, entry.id) if linkable else "",
        "select": f"{qid(entry.queue)}/{qid(entry.id)}" if linkable else "",
    }
    if rec is None:
        f = entry.value
        return JobRow(
            **common, enqueued_at=stamp(f("enqueued_at"), now),
            scheduled_for=stamp(f("scheduled_for"), now), started_at=stamp(f("started_at"), now),
            ended_at=stamp(f("ended_at"), now), duration="",
            attempts=_clip(_visible(f("attempts")), 20), error="",
            malformed=entry.problem or "malformed job record")
    err = rec.error or {}
    error = f"{_text(err.get('type'))}: {_text(err.get('message'))}" if err else ""
    return JobRow(
        **common,
        enqueued_at=stamp(rec.enqueued_at, now), scheduled_for=stamp(rec.scheduled_for, now),
        started_at=stamp(rec.started_at, now), ended_at=stamp(rec.ended_at, now),
        duration=duration_text(rec.duration), attempts=str(rec.attempts),
        error=_cut(error, 200),
    )


def _decodable(rec: JobRecord, queue: Queue) -> str | None:
    """Why the job's data is not decoded here, or None. Pickle is unpickled only on a site
    configured for pickle: a hash naming "pickle" must not make the web process unpickle."""
    if rec.serializer == "json" or rec.serializer == queue.serializer.name:
        return None
    return (f"Encoded with the “{plain(rec.serializer)}” serializer, but this site uses "
            f"“{queue.serializer.name}”, so it is not decoded here.")


# -- pages --------------------------------------------------------------------------------------
@guarded
def queues_view(request: HttpRequest, model_admin: AnyAdmin) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    queues = _configured()
    data = overview(queues)
    jobs_admin = sibling(model_admin, "job")
    conf = redisq_settings()
    rows = []
    for q in queues:
        counts = data.counts.get(q.name, dict.fromkeys(STATES, 0))
        serving = [w for w in data.workers if w.alive and q.name in w.queues]
        rows.append({
            "name": q.name,
            "url": admin_url(model_admin, "job_changelist") + "?" + urlencode({"queue": q.name}),
            "states": [{"state": s, "count": counts[s],
                        "url": admin_url(model_admin, "job_changelist") + "?"
                        + urlencode({"queue": q.name, "state": s})} for s in STATES],
            "failed": counts["failed"],
            "queued": counts["queued"],
            "workers": serving,
            "redis_url": conf.queues[q.name].masked_url,
            "requeue_url": admin_url(model_admin, "queue_requeue_failed", qid(q.name)),
            "empty_url": admin_url(model_admin, "queue_empty", qid(q.name)),
        })
    first = queues[0].name if queues else ""
    return render(request, "queues.html", context(
        request, model_admin, "Queues", rows=rows, states=STATES,
        can_change_jobs=jobs_admin.has_change_permission(request),
        can_delete_jobs=jobs_admin.has_delete_permission(request),
        failed_url=admin_url(model_admin, "job_changelist") + "?"
        + urlencode({"queue": first, "state": "failed"}),
        workers_url=admin_url(model_admin, "worker_changelist"),
        schedules_url=admin_url(model_admin, "schedule_changelist"),
        dead_workers=sum(1 for w in data.workers if not w.alive),
    ))


def _queue_action(request: HttpRequest, model_admin: AnyAdmin, queue_name: str,
                  action: str) -> HttpResponse:
    jobs_admin = sibling(model_admin, "job")
    require(model_admin.has_view_permission(request))
    if action == "requeue_failed":
        require(jobs_admin.has_change_permission(request))
    else:
        require(jobs_admin.has_delete_permission(request))
    queue = path_queue(queue_name)
    back = admin_url(model_admin, "queue_changelist")
    if request.method == "POST":
        # Ids that are not UTF-8 and keys that are no job are skipped by the engine (read with
        # replacement characters; REQUEUE and DELETE take any key type).
        if action == "requeue_failed":
            n = queue.requeue_failed()
            log.info("admin: %s requeued %d failed jobs of queue %s", request.user, n,
                     queue.name)
            messages.success(request, f"Requeued {n} failed job{'s' if n != 1 else ''} of "
                                      f"queue “{queue.name}”.")
        else:
            n = queue.empty()
            log.info("admin: %s emptied queue %s (%d jobs)", request.user, queue.name, n)
            messages.success(request, f"Deleted {n} queued job{'s' if n != 1 else ''} "
                                      f"from queue “{queue.name}”.")
        return HttpResponseRedirect(back)
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD, POST"})
    state = "failed" if action == "requeue_failed" else "queued"
    count = queue.count(state)
    title = ("Requeue all failed jobs" if action == "requeue_failed"
             else "Empty the queue") + f" of “{queue.name}”"
    return render(request, "confirm.html", context(
        request, model_admin, "Are you sure?", action=action, action_title=title,
        queue=queue.name, count=count, state=state, back_url=back,
        list_url=admin_url(model_admin, "job_changelist") + "?"
        + urlencode({"queue": queue.name, "state": state})))


@guarded
def requeue_failed_view(request: HttpRequest, model_admin: AnyAdmin,
                        queue: str) -> HttpResponse:
    return _queue_action(request, model_admin, queue, "requeue_failed")


@guarded
def empty_queue_view(request: HttpRequest, model_admin: AnyAdmin, queue: str) -> HttpResponse:
    return _queue_action(request, model_admin, queue, "empty")


ACTIONS = {
    "requeue": "Requeue selected failed or canceled jobs",
    "cancel": "Cancel selected waiting or running jobs",
    "delete": "Delete selected jobs",
}


@guarded
def jobs_view(request: HttpRequest, model_admin: AnyAdmin) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    if request.method == "POST":
        return _bulk_action(request, model_admin)
    queue = param_queue(request.GET.get("queue"))
    state = param_state(request.GET.get("state"))
    page_number = param_page(request.GET.get("page"))
    query = request.GET.get("q", "").strip()[:MAX_JOB_ID]  # ids and function names are short
    base = {"queue": queue.name, "state": state}
    counts = queue.counts()
    found: list[Entry] | None = None
    note = ""
    if query and valid_job_id(query):
        found = find_job(query, _configured())
    if found:
        paginator = page = None
        entries = found
        note = "Job id match."
    else:
        paginator, page = paginate(queue, state, counts[state], page_number)
        entries = list(page.object_list)
        if query:
            needle = query.casefold()
            entries = [e for e in entries if needle in e.func.casefold()]
            note = (f"No job has the id “{query}”; {len(entries)} of the "
                    f"{len(page.object_list)} jobs on this page have a function name "
                    f"containing it.")
    now = int(time.time() * 1000)
    rows = [job_row(model_admin, e, now) for e in entries]
    can_change = model_admin.has_change_permission(request)
    can_delete = model_admin.has_delete_permission(request)
    actions = [(k, v) for k, v in ACTIONS.items()
               if (can_delete if k == "delete" else can_change)]
    total = counts[state]
    return render(request, "jobs.html", context(
        request, model_admin, f"{state.capitalize()} jobs of queue “{queue.name}”",
        queue=queue.name, state=state, query=query, note=note, rows=rows,
        total=total, page=page, is_search=found is not None and bool(found),
        page_links=page_links(paginator, page, {**base, **({"q": query} if query else {})})
        if paginator and page else [],
        queue_choices=[{"name": n, "selected": n == queue.name,
                        "url": "?" + urlencode({"queue": n, "state": state})}
                       for n in queue_names()],
        state_choices=[{"name": s, "count": counts[s], "selected": s == state,
                        "url": "?" + urlencode({"queue": queue.name, "state": s})}
                       for s in STATES],
        actions=actions, terminal=state in TERMINAL_STATES,
        selectable=sum(1 for row in rows if row.select),
        page_number=page.number if page else 1,
        per_page=PER_PAGE,
    ))


def _selected(request: HttpRequest) -> tuple[list[tuple[Queue, str]], list[str]]:
    """The selected jobs, and the selected values that name no job of a configured queue
    (a selection where only some are refused still acts on the others)."""
    values = request.POST.getlist("_selected_action")
    if len(values) > MAX_SELECTED:
        raise BadParameter(f"At most {MAX_SELECTED} jobs can be changed at once.")
    names = set(queue_names())
    out, refused = [], []
    for value in values:
        queue_part, sep, id_part = value.partition("/")
        queue_name, job_id = unq(queue_part), unq(id_part)
        if not sep or queue_name not in names or not valid_job_id(job_id):
            refused.append(value)
        else:
            out.append((get_queue(queue_name), job_id))
    if refused and not out:
        raise BadParameter("The selection names a job that cannot exist.")
    return out, refused


def _back_to_list(model_admin: AnyAdmin, request: HttpRequest) -> HttpResponseRedirect:
    params: dict[str, str] = {}
    queue = request.POST.get("queue", "")
    if queue in queue_names():
        params["queue"] = queue
    state = request.POST.get("state", "")
    if state in STATES:
        params["state"] = state
    page = request.POST.get("page", "")
    if _PAGE_RE.fullmatch(page):
        params["page"] = page
    query = request.POST.get("q", "")
    if query:
        params["q"] = query[:MAX_JOB_ID]
    url = admin_url(model_admin, "job_changelist")
    return HttpResponseRedirect(url + ("?" + urlencode(params) if params else ""))


def _plural(n: int, word: str = "job") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _bulk_action(request: HttpRequest, model_admin: AnyAdmin) -> HttpResponse:
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        messages.warning(request, "No action selected.")
        return _back_to_list(model_admin, request)
    if action == "delete":
        require(model_admin.has_delete_permission(request))
    else:
        require(model_admin.has_change_permission(request))
    selected, refused = _selected(request)
    if not selected:
        messages.warning(request, "Items must be selected in order to perform actions on "
                                  "them. No items have been changed.")
        return _back_to_list(model_admin, request)
    by_queue: dict[str, tuple[Queue, list[str]]] = {}
    for queue, job_id in selected:
        by_queue.setdefault(queue.name, (queue, []))[1].append(job_id)
    done = skipped = stopping = unreadable = 0
    for queue, ids in by_queue.values():
        if action != "delete":
            # Requeue and cancel read the job's hash (a script fails on a key of another
            # type); delete removes any key. One TYPE each, in one round trip.
            types = queue.run(_batch_steps([Cmd(("TYPE", queue.keys.job(i))) for i in ids]))
            not_jobs = {i for i, t in zip(ids, types) if _text(t) not in ("hash", "none")}
            unreadable += len(not_jobs)
            ids = [i for i in ids if i not in not_jobs]
        if action == "requeue":
            n = queue.requeue(*ids)
            done, skipped = done + n, skipped + len(ids) - n
        elif action == "delete":
            n = queue.delete(*ids)
            done, skipped = done + n, skipped + len(ids) - n
        else:
            for job_id in ids:
                status = queue.cancel(job_id)
                if status == "canceled":
                    done += 1
                elif status == "started":
                    stopping += 1
                else:
                    skipped += 1
        log.info("admin: %s ran %s on %d jobs of queue %s", request.user, action, len(ids),
                 queue.name)
    verb = {"requeue": "Requeued", "cancel": "Canceled", "delete": "Deleted"}[action]
    if done:
        messages.success(request, f"{verb} {_plural(done)}.")
    if stopping:
        messages.info(request, f"Asked the workers running {_plural(stopping)} to stop them.")
    if skipped:
        why = {"requeue": "were not failed or canceled",
               "cancel": "had already ended or no longer exist",
               "delete": "no longer existed"}[action]
        messages.warning(request, f"{_plural(skipped)} {why} and were left as they were.")
    if unreadable:
        messages.warning(request, f"{_plural(unreadable)} could not be read (a malformed "
                                  f"job record) and were left as they were; they can be "
                                  f"deleted.")
    if refused:
        shown = ", ".join(f"“{_clip(_visible(v), 60)}”" for v in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        messages.warning(request, f"{_plural(len(refused), 'selected value')} named no job "
                                  f"of a configured queue and were ignored: {shown}{more}.")
    return _back_to_list(model_admin, request)


@guarded
def job_view(request: HttpRequest, model_admin: AnyAdmin, queue: str,
             job_id: str) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    q = path_queue(queue)
    jid = path_job_id(job_id)
    entry = next(iter(read_jobs(q, [jid])), None)
    if entry is None:
        raise NotFound(f"Job “{_visible(jid)}” is not in queue “{q.name}”: it never existed, "
                       f"was deleted, or expired after its time to live.")
    row = job_row(model_admin, entry)
    can_change = model_admin.has_change_permission(request)
    can_delete = model_admin.has_delete_permission(request)
    actions = {
        "can_delete": can_delete,
        "requeue_url": job_url(model_admin, q.name, jid, "requeue"),
        "cancel_url": job_url(model_admin, q.name, jid, "cancel"),
        "delete_url": job_url(model_admin, q.name, jid, "delete"),
        "queue_name": q.name,
        "list_url": admin_url(model_admin, "job_changelist") + "?" + urlencode(
            {"queue": q.name, "state": entry.status if entry.status in STATES else "queued"}),
    }
    rec = entry.record
    if rec is None:
        # Shown as stored, so that it can be understood and deleted; canceling takes a
        # waiting one off its queue (the script reads only the status).
        return render(request, "job_detail.html", context(
            request, model_admin, f"Job {row.id}", job=row, malformed=row.malformed,
            raw_fields=[{"name": _visible(name), "value": _raw_value(value)}
                        for name, value in sorted(entry.fields.items())],
            can_requeue=False, refresh_seconds=0,
            can_cancel=bool(entry.fields) and can_change and entry.status in CANCELABLE,
            **actions))
    mismatch = ""
    if (rec.id, rec.queue) != (jid, q.name):
        mismatch = (f"This record's own fields name job “{_visible(rec.id)}” of queue "
                    f"“{_visible(rec.queue)}”; it is shown, and acted on, as job "
                    f"“{row.id}” of queue “{q.name}”, the key it is stored under.")
    why_not = _decodable(rec, q)
    args_text = kwargs_text = result_text = ""
    args_error = result_error = why_not or ""
    if not why_not:
        try:
            args, kwargs = rec.call(q.serializer.name)
            args_text, kwargs_text = pretty(args), pretty(kwargs)
        except RedisQError as exc:
            args_error = f"The arguments cannot be decoded: {plain(str(exc))}"
        if rec.result is not None:
            try:
                result_text = pretty(codec(rec.serializer, q.serializer.name).loads(rec.result))
            except Exception as exc:
                result_error = f"The result cannot be decoded: {plain(str(exc))}"
    errors = []
    for i, err in enumerate(rec.errors or ([rec.error] if rec.error else []), 1):
        if not isinstance(err, dict):
            continue
        errors.append({
            "attempt": _text(err.get("attempt", i)),
            "at": stamp(err.get("at")),
            "type": _text(err.get("type")),
            "message": _cut(_text(err.get("message")), 2000),
            "traceback": _cut(_text(err.get("traceback"))),
            "outcome": _text(err.get("outcome")),
        })
    return render(request, "job_detail.html", context(
        request, model_admin, f"Job {row.id}", mismatch=mismatch,
        job=row, rec_priority=rec.priority, timeout=rec.timeout,
        worker=plain(rec.worker or ""), deaths=rec.deaths,
        cancel_requested=rec.cancel_requested,
        retry_text=pretty(rec.retry) if rec.retry else "",
        limits_text=plain(rec.limits_text),
        meta_text=pretty(rec.meta) if rec.meta else "",
        progress_percent=None if rec.progress is None else round(rec.progress * 100, 1),
        progress_message=_cut(rec.progress_message or "", 1000),
        refresh_seconds=JOB_REFRESH_SECONDS if rec.status == "started" else 0,
        args_text=args_text, kwargs_text=kwargs_text, args_error=args_error,
        result_text=result_text, result_error=result_error if rec.result is not None else "",
        has_result=rec.result is not None, errors=list(reversed(errors)),
        serializer=plain(rec.serializer), version=rec.version,
        result_ttl=duration_text(rec.result_ttl / 1000) if rec.result_ttl > 0 else
        ("forever" if rec.result_ttl < 0 else "none"),
        failure_ttl=duration_text(rec.failure_ttl / 1000) if rec.failure_ttl > 0 else
        ("forever" if rec.failure_ttl < 0 else "none"),
        can_requeue=can_change and rec.status in REQUEUEABLE,
        can_cancel=can_change and rec.status in CANCELABLE and not rec.cancel_requested,
        **actions,
    ))


def _raw_value(value: bytes, limit: int = 2000) -> str:
    """A hash field as stored, for a malformed job's page: bytes that are not UTF-8 and
    control characters (but line breaks and tabs) escaped, cut to ``limit`` characters."""
    text = value[:limit * 4].decode("utf-8", "backslashreplace")
    shown = "\n".join("\t".join(_visible(part) for part in line.split("\t"))
                      for line in text.split("\n"))
    if len(shown) <= limit and len(value) <= limit * 4:
        return shown
    return f"{shown[:limit]}\n… ({len(value):,} bytes in all; the start is shown)"


def _status(queue: Queue, job_id: str) -> tuple[str | None, str]:
    """A job's status, or None when it has none; and, for a key that is not a hash, its
    Redis type."""
    try:
        return queue.job_status(job_id), ""
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        return None, _text(queue.run(one(Cmd(("TYPE", queue.keys.job(job_id))))))


def _job_action(request: HttpRequest, model_admin: AnyAdmin, queue: str, job_id: str,
                action: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse("This action needs a POST request.", status=405,
                            headers={"Allow": "POST"}, content_type="text/plain")
    if action == "delete":
        require(model_admin.has_delete_permission(request))
    else:
        require(model_admin.has_change_permission(request))
    q = path_queue(queue)
    jid = path_job_id(job_id)
    shown = _visible(jid)
    detail = job_url(model_admin, q.name, jid)
    log.info("admin: %s asked to %s job %s of queue %s", request.user, action, shown, q.name)
    if action == "delete":
        # Read first, for the list to go back to; DELETE removes a key of any type.
        status, _ = _status(q, jid)
        if q.delete(jid):
            messages.success(request, f"Job “{shown}” was deleted.")
        else:
            messages.warning(request, f"Job “{shown}” was not deleted: it no longer exists.")
        return HttpResponseRedirect(admin_url(model_admin, "job_changelist") + "?" + urlencode(
            {"queue": q.name, "state": status if status in STATES else "queued"}))
    verb = "requeued" if action == "requeue" else "canceled"
    status, kind = _status(q, jid)
    if kind:
        messages.warning(request, f"Job “{shown}” was not {verb}: its key holds a Redis "
                                  f"{_visible(kind)}, not a job record. It can be deleted.")
    elif action == "requeue":
        if q.requeue(jid):
            messages.success(request, f"Job “{shown}” was requeued.")
        else:
            status, _ = _status(q, jid)
            messages.warning(request, f"Job “{shown}” was not requeued: " + (
                f"it is {_visible(status)}; only failed or canceled jobs can be requeued."
                if status else "it no longer exists."))
    else:
        status = q.cancel(jid)
        if status == "canceled":
            messages.success(request, f"Job “{shown}” was canceled.")
        elif status == "started":
            messages.info(request, f"Job “{shown}” is running; its worker was asked to stop "
                                   f"it.")
        elif status:
            messages.warning(request, f"Job “{shown}” was not canceled: it is already "
                                      f"{_visible(status)}.")
        else:
            messages.warning(request, f"Job “{shown}” was not canceled: it no longer exists.")
    return HttpResponseRedirect(detail)


@guarded
def requeue_job_view(request: HttpRequest, model_admin: AnyAdmin, queue: str,
                     job_id: str) -> HttpResponse:
    return _job_action(request, model_admin, queue, job_id, "requeue")


@guarded
def cancel_job_view(request: HttpRequest, model_admin: AnyAdmin, queue: str,
                    job_id: str) -> HttpResponse:
    return _job_action(request, model_admin, queue, job_id, "cancel")


@guarded
def delete_job_view(request: HttpRequest, model_admin: AnyAdmin, queue: str,
                    job_id: str) -> HttpResponse:
    return _job_action(request, model_admin, queue, job_id, "delete")


@guarded
def workers_view(request: HttpRequest, model_admin: AnyAdmin) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    data = overview([], with_workers=True)
    jobs_admin = sibling(model_admin, "job")
    can_view_jobs = jobs_admin.has_view_permission(request)
    for w in data.workers:
        for j in w.jobs:
            if can_view_jobs and j["queue"]:
                j["url"] = job_url(model_admin, j["queue"], j["id"])
    heartbeat = redisq_settings().heartbeat
    return render(request, "workers.html", context(
        request, model_admin, "Workers", workers=data.workers, total=data.workers_total,
        shown=len(data.workers), stale_after=duration_text(heartbeat * 3),
        alive=sum(1 for w in data.workers if w.alive)))


@dataclass
class CronRow:
    name: str
    func: str
    queue: str
    when: str
    timezone: str
    last: Stamp | None
    next: Stamp | None
    last_job_url: str = ""


def cron_rows(queues: Sequence[Queue]) -> tuple[list[CronRow], str, str]:
    """The periodic schedules (``REDISQ["CRON"]`` and ``@job(cron=...)`` functions imported
    by this process), each with its last enqueued tick and next due time; the error that
    stops them from loading; and the scheduler leading cron now. One pipeline per Redis."""
    from .engine.cron import CronError
    from .engine.keys import cron_leader_key
    from .schedules import load_schedules

    try:
        schedules = load_schedules()
    except CronError as exc:
        return [], plain(str(exc)), ""
    if not schedules:
        return [], "", ""
    by_name = {q.name: q for q in queues}
    now = datetime.now(tz=timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    last: dict[str, Any] = {}
    leader = ""
    for group in _by_connection([by_name[s.queue] for s in schedules if s.queue in by_name]):
        names = {q.name for q in group}
        mine = [s for s in schedules if s.queue in names]
        ops = [Cmd(("GET", by_name[s.queue].keys.cron_last(s.name))) for s in mine]
        ops.append(Cmd(("GET", cron_leader_key(group[0].prefix))))
        replies = group[0].run(_batch_steps(ops))
        for s, raw in zip(mine, replies):
            last[s.name] = raw  # shown as stored when it is not a time
        leader = leader or _text(replies[-1])
    rows = []
    for s in schedules:
        tick = last.get(s.name)
        when = s.cron.text if s.cron is not None else f"every {duration_text(s.every)}"
        rows.append(CronRow(
            name=plain(s.name), func=plain(s.func), queue=plain(s.queue), when=plain(when),
            timezone=plain(str(s.tz)), last=stamp(tick, now_ms),
            next=stamp(int(s.next_due(now).timestamp() * 1000), now_ms),
        ))
    return rows, "", plain(leader)


def _batch_steps(ops: Sequence[Cmd]) -> Steps[list[Any]]:
    replies = yield Batch(ops)
    return list(replies)


@guarded
def schedules_view(request: HttpRequest, model_admin: AnyAdmin) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    queue = param_queue(request.GET.get("queue"))
    page_number = param_page(request.GET.get("page"))
    queues = _configured()
    counts = overview(queues, with_workers=False).counts
    paginator, page = paginate(queue, "scheduled", counts[queue.name]["scheduled"], page_number)
    now = int(time.time() * 1000)
    rows = [job_row(model_admin, e, now) for e in page.object_list]
    cron, cron_error, leader = cron_rows(queues)
    return render(request, "schedules.html", context(
        request, model_admin, f"Scheduled jobs of queue “{queue.name}”",
        queue=queue.name, rows=rows, total=counts[queue.name]["scheduled"], page=page,
        page_links=page_links(paginator, page, {"queue": queue.name}),
        queue_choices=[{"name": q.name, "count": counts[q.name]["scheduled"],
                        "selected": q.name == queue.name,
                        "url": "?" + urlencode({"queue": q.name})} for q in queues],
        cron=cron, cron_error=cron_error, leader=leader,
        manage_url=admin_url(model_admin, "job_changelist") + "?"
        + urlencode({"queue": queue.name, "state": "scheduled"}),
    ))

