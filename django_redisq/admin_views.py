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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import wraps
from typing import TYPE_CHECKING, Any, cast

import redis
from django.contrib import messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone as dj_timezone
from django.utils.http import urlencode

from .conf import get_queue, queue_names, redisq_settings
from .engine.errors import RedisQError
from .engine.job import JobRecord, codec, ms_to_datetime
from .engine.keys import ACTIVE_STATES, STATES, TERMINAL_STATES, worker_key, workers_key
from .engine.ops import Batch, Cmd, Steps
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
    try:
        return int(float(_text(value)))
    except ValueError:
        return None


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
    value: datetime

    def __str__(self) -> str:
        return self.text


def stamp(ms: int | None, now_ms: int | None = None) -> Stamp | None:
    when = ms_to_datetime(ms)
    if when is None or ms is None:
        return None
    local = dj_timezone.localtime(when) if dj_timezone.is_aware(when) else when
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    delta = (now_ms - ms) / 1000
    ago = (f"{duration_text(delta)} ago" if delta >= 0 else f"in {duration_text(-delta)}")
    return Stamp(local.strftime("%Y-%m-%d %H:%M:%S"), local.isoformat(), ago, when)


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
def admin_url(model_admin: AnyAdmin, name: str, *args: str) -> str:
    site = model_admin.admin_site.name
    return reverse(f"{site}:django_redisq_{name}", args=args, current_app=site)


def job_url(model_admin: AnyAdmin, queue: str, job_id: str, action: str = "change") -> str:
    return admin_url(model_admin, f"job_{action}", quote(queue), quote(job_id))


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
    name = unquote(value)
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
    return 0 < len(value) <= MAX_JOB_ID and value.isprintable()


def path_job_id(value: str) -> str:
    job_id = unquote(value)
    if not valid_job_id(job_id):
        raise BadParameter("That is not a job id: job ids are 1 to 200 printable characters.")
    return job_id


# -- reading Redis ------------------------------------------------------------------------------
@dataclass
class WorkerInfo:
    name: str
    alive: bool
    last_beat: Stamp | None
    seconds_ago: float
    host: str = ""
    pid: str = ""
    queues: list[str] = field(default_factory=list)
    concurrency: str = ""
    started: Stamp | None = None
    state: str = ""
    processed: str = ""
    failed: str = ""
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
    workers = [_worker(name, int(score), now, stale_ms, h or {})
               for (name, score), h in zip(seen, hashes)]
    return Overview(counts, workers, int(total))


def _worker(name: str, beat_ms: int, now_ms: int, stale_ms: int,
            raw: dict[Any, Any]) -> WorkerInfo:
    h = {_text(k): _text(v) for k, v in raw.items()}
    last = _int(h.get("last_beat")) or beat_ms
    info = WorkerInfo(name=plain(name), alive=bool(h) and now_ms - last <= stale_ms,
                      last_beat=stamp(last, now_ms), seconds_ago=max(0, now_ms - last) / 1000,
                      known=bool(h))
    if h:
        info.host = h.get("host", "")
        info.pid = h.get("pid", "")
        info.queues = [q for q in h.get("queues", "").split(",") if q]
        info.concurrency = h.get("concurrency", "")
        info.started = stamp(_int(h.get("started")), now_ms)
        info.state = h.get("state", "")
        info.processed = h.get("processed", "")
        info.failed = h.get("failed", "")
        for item in h.get("jobs", "").split(","):
            queue, sep, job_id = item.partition("/")
            if sep and job_id:
                info.jobs.append({"queue": queue, "id": job_id})
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


def find_job(job_id: str, queues: Sequence[Queue]) -> list[JobRecord]:
    """The jobs with this exact id in any of ``queues``: one pipeline per Redis deployment."""

    def steps(group: Sequence[Queue]) -> Steps[list[JobRecord]]:
        hashes = yield Batch([Cmd(("HGETALL", q.keys.job(job_id))) for q in group])
        return JobRecord.decode_many(hashes)

    found: list[JobRecord] = []
    for group in _by_connection(queues):
        found += group[0].run(steps(group))
    return found


class JobWindow:
    """A state's jobs as a sequence for ``Paginator``: slicing reads one ZRANGE window."""

    def __init__(self, queue: Queue, state: str, total: int) -> None:
        self.queue = queue
        self.state = state
        self.total = total

    def count(self) -> int:
        return self.total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, window: slice) -> list[JobRecord]:
        start = window.start or 0
        stop = self.total if window.stop is None else window.stop
        if stop <= start:
            return []
        return self.queue.jobs(self.state, start, stop - start)


def paginate(queue: Queue, state: str, total: int,
             page: int) -> tuple[Paginator[JobRecord], Page[JobRecord]]:
    """The page of a state's jobs (a page past the end shows the last one)."""
    paginator: Paginator[JobRecord] = Paginator(cast(Any, JobWindow(queue, state, total)),
                                                PER_PAGE)
    number = min(page, paginator.num_pages)
    return paginator, paginator.page(number)


def page_links(paginator: Paginator[JobRecord], page: Page[JobRecord],
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
    id: str
    queue: str
    func: str
    status: str
    url: str
    select: str  # the checkbox value: quoted queue, "/", quoted id
    enqueued_at: Stamp | None
    scheduled_for: Stamp | None
    started_at: Stamp | None
    ended_at: Stamp | None
    duration: str
    attempts: int
    error: str


def job_row(model_admin: AnyAdmin, rec: JobRecord, now: int | None = None) -> JobRow:
    err = rec.error or {}
    error = f"{_text(err.get('type'))}: {_text(err.get('message'))}" if err else ""
    return JobRow(
        id=plain(rec.id), queue=plain(rec.queue), func=plain(rec.func),
        status=plain(rec.status), url=job_url(model_admin, rec.queue, rec.id),
        select=f"{quote(rec.queue)}/{quote(rec.id)}",
        enqueued_at=stamp(rec.enqueued_at, now), scheduled_for=stamp(rec.scheduled_for, now),
        started_at=stamp(rec.started_at, now), ended_at=stamp(rec.ended_at, now),
        duration=duration_text(rec.duration), attempts=rec.attempts, error=_cut(error, 200),
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
            "requeue_url": admin_url(model_admin, "queue_requeue_failed", quote(q.name)),
            "empty_url": admin_url(model_admin, "queue_empty", quote(q.name)),
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
        if action == "requeue_failed":
            n = queue.requeue_failed()
            log.info("admin: %s requeued %d failed jobs of queue %s", request.user, n, queue.name)
            messages.success(request, f"Requeued {n} failed job{'s' if n != 1 else ''} of "
                                      f"queue “{queue.name}”.")
        else:
            n = queue.empty()
            log.info("admin: %s emptied queue %s (%d jobs)", request.user, queue.name, n)
            messages.success(request, f"Deleted {n} queued job{'s' if n != 1 else ''} from "
                                      f"queue “{queue.name}”.")
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
    found: list[JobRecord] | None = None
    note = ""
    if query and valid_job_id(query):
        found = find_job(query, _configured())
    if found:
        paginator = page = None
        records = found
        note = "Job id match."
    else:
        paginator, page = paginate(queue, state, counts[state], page_number)
        records = list(page.object_list)
        if query:
            needle = query.casefold()
            records = [r for r in records if needle in r.func.casefold()]
            note = (f"No job has the id “{query}”; {len(records)} of the "
                    f"{len(page.object_list)} jobs on this page have a function name "
                    f"containing it.")
    now = int(time.time() * 1000)
    rows = [job_row(model_admin, r, now) for r in records]
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
        page_number=page.number if page else 1,
        per_page=PER_PAGE,
    ))


def _selected(request: HttpRequest) -> list[tuple[Queue, str]]:
    values = request.POST.getlist("_selected_action")
    if len(values) > MAX_SELECTED:
        raise BadParameter(f"At most {MAX_SELECTED} jobs can be changed at once.")
    names = set(queue_names())
    out = []
    for value in values:
        queue_part, sep, id_part = value.partition("/")
        queue_name, job_id = unquote(queue_part), unquote(id_part)
        if not sep or queue_name not in names or not valid_job_id(job_id):
            raise BadParameter("The selection names a job that cannot exist.")
        out.append((get_queue(queue_name), job_id))
    return out


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
    selected = _selected(request)
    if not selected:
        messages.warning(request, "Items must be selected in order to perform actions on "
                                  "them. No items have been changed.")
        return _back_to_list(model_admin, request)
    by_queue: dict[str, tuple[Queue, list[str]]] = {}
    for queue, job_id in selected:
        by_queue.setdefault(queue.name, (queue, []))[1].append(job_id)
    done = skipped = stopping = 0
    for queue, ids in by_queue.values():
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
    return _back_to_list(model_admin, request)


@guarded
def job_view(request: HttpRequest, model_admin: AnyAdmin, queue: str,
             job_id: str) -> HttpResponse:
    require(model_admin.has_view_permission(request))
    q = path_queue(queue)
    jid = path_job_id(job_id)
    rec = q.fetch_record(jid)
    if rec is None:
        raise NotFound(f"Job “{jid}” is not in queue “{q.name}”: it never existed, was "
                       f"deleted, or expired after its time to live.")
    row = job_row(model_admin, rec)
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
            "at": stamp(_int(err.get("at"))),
            "type": _text(err.get("type")),
            "message": _cut(_text(err.get("message")), 2000),
            "traceback": _cut(_text(err.get("traceback"))),
            "outcome": _text(err.get("outcome")),
        })
    can_change = model_admin.has_change_permission(request)
    can_delete = model_admin.has_delete_permission(request)
    list_url = admin_url(model_admin, "job_changelist") + "?" + urlencode(
        {"queue": q.name, "state": rec.status if rec.status in STATES else "queued"})
    return render(request, "job_detail.html", context(
        request, model_admin, f"Job {rec.id}",
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
        can_delete=can_delete,
        requeue_url=job_url(model_admin, q.name, rec.id, "requeue"),
        cancel_url=job_url(model_admin, q.name, rec.id, "cancel"),
        delete_url=job_url(model_admin, q.name, rec.id, "delete"),
        list_url=list_url, queue_name=q.name,
    ))


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
    detail = job_url(model_admin, q.name, jid)
    if action == "requeue":
        if q.requeue(jid):
            messages.success(request, f"Job “{jid}” was requeued.")
        else:
            status = q.job_status(jid)
            messages.warning(request, f"Job “{jid}” was not requeued: " + (
                f"it is {status}; only failed or canceled jobs can be requeued."
                if status else "it no longer exists."))
    elif action == "cancel":
        status = q.cancel(jid)
        if status == "canceled":
            messages.success(request, f"Job “{jid}” was canceled.")
        elif status == "started":
            messages.info(request, f"Job “{jid}” is running; its worker was asked to stop it.")
        elif status:
            messages.warning(request, f"Job “{jid}” was not canceled: it is already {status}.")
        else:
            messages.warning(request, f"Job “{jid}” was not canceled: it no longer exists.")
    else:
        status = q.job_status(jid)
        if q.delete(jid):
            messages.success(request, f"Job “{jid}” was deleted.")
        else:
            messages.warning(request, f"Job “{jid}” was not deleted: it no longer exists.")
        return HttpResponseRedirect(admin_url(model_admin, "job_changelist") + "?" + urlencode(
            {"queue": q.name, "state": status if status in STATES else "queued"}))
    log.info("admin: %s ran %s on job %s of queue %s", request.user, action, jid, q.name)
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
            j["url"] = job_url(model_admin, j["queue"], j["id"]) if can_view_jobs else ""
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
    last: dict[str, int | None] = {}
    leader = ""
    for group in _by_connection([by_name[s.queue] for s in schedules if s.queue in by_name]):
        names = {q.name for q in group}
        mine = [s for s in schedules if s.queue in names]
        ops = [Cmd(("GET", by_name[s.queue].keys.cron_last(s.name))) for s in mine]
        ops.append(Cmd(("GET", cron_leader_key(group[0].prefix))))
        replies = group[0].run(_batch_steps(ops))
        for s, raw in zip(mine, replies):
            last[s.name] = _int(raw) if raw is not None else None
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
    rows = [job_row(model_admin, r, now) for r in page.object_list]
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

