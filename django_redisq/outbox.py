"""Transactional outbox: a job enqueued in a transaction commits or rolls back with it.

For a queue with ``"OUTBOX": True``, ``.delay()`` inside ``transaction.atomic()`` writes the
prepared job to the ``OutboxJob`` table in the caller's transaction, and registers an
on-commit hook that pushes it to Redis at once and deletes the row (the fast path). If the
process dies between the commit and the push, the row survives, and the relay of a worker
serving that queue pushes it (rows older than ``OUTBOX_RELAY_AFTER`` seconds, looked for every
``OUTBOX_POLL_INTERVAL`` seconds). A rollback removes the row: no job.

Pushes are idempotent: each row has a token, and the enqueue script records it in a marker key
(kept ``OUTBOX_MARKER_TTL``, 7 days) and enqueues nothing when the marker exists. So a row
pushed twice (the fast path and the relay racing, or a crash after the push but before the
delete) still makes one job, even if that job has already run and ended.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from .engine.job import Job
from .engine.ops import Call
from .engine.queue import ENQUEUE_FIELDS, Prepared, enqueue_options
from .engine.scripts import ENQUEUE_SCRIPT

log = logging.getLogger("django_redisq.outbox")

#: Most rows one relay pass takes (and locks).
RELAY_BATCH = 500


def new_token() -> str:
    return uuid.uuid4().hex


def _dump_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode()}
    return v


def _load_value(v: Any) -> Any:
    if isinstance(v, dict):
        return base64.b64decode(v["b64"])
    return v


#: The layout of ENQUEUE's arguments that stored calls use. Rows without one were written
#: before the layout of 2026-12 (options by position, every field as a pair) and are converted
#: when loaded, so that a row that outlives an upgrade still makes its job.
CALL_LAYOUT = 2


def dump_call(prepared: Prepared) -> str:
    """The prepared enqueue call as JSON text (payload bytes in base64)."""
    return json.dumps({"keys": list(prepared.call.keys),
                       "args": [_dump_value(a) for a in prepared.call.args],
                       "marker": prepared.marker, "layout": CALL_LAYOUT})


def load_prepared(queue_name: str, job_id: str, text: str) -> Prepared:
    """A stored call back as a ``Prepared`` of its queue (as configured now)."""
    from .conf import get_queue

    data = json.loads(text)
    args = [_load_value(a) for a in data["args"]]
    if data.get("layout") is None:
        args = _from_first_layout(args)
    call = Call(ENQUEUE_SCRIPT, data["keys"], args)
    return Prepared(get_queue(queue_name), job_id, call, data["marker"])


def _from_first_layout(args: list[Any]) -> list[Any]:
    """ENQUEUE's arguments in the first layout (id, base, at_ms, delay_ms, priority, tick,
    depends_on as JSON, flag, then every field as a pair) in the current one."""
    job_id, base, at_ms, delay_ms, priority, tick, deps, flag, *pairs = args
    fields = dict(zip(pairs[::2], pairs[1::2]))
    by_position = [fields.pop(name, "") for name in ENQUEUE_FIELDS]  # "": no timeout
    options = enqueue_options(int(at_ms), int(delay_ms), None if tick == "" else tick,
                              json.loads(deps) if deps else [])
    return [job_id, base, priority, flag, options, *by_position,
            *[x for pair in fields.items() for x in pair]]


def enqueue(prepared: Prepared, token: str, func: str,
            using: str = DEFAULT_DB_ALIAS) -> Job[Any]:
    """Write ``prepared`` to the outbox in the current transaction of ``using``; push it after
    the commit. Returns a handle whose ``status`` is ``None`` until the push."""
    from .models import OutboxJob

    OutboxJob.objects.using(using).create(
        token=token, queue=prepared.queue.name, job_id=prepared.id, func=func,
        call=dump_call(prepared))
    transaction.on_commit(lambda: push_committed(prepared, token, using), using=using)
    return Job(prepared.queue, prepared.id)


def push_committed(prepared: Prepared, token: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """The fast path, run on commit: push now and delete the row. A failure only logs: the
    row stays, and a relay pushes it later."""
    from .models import OutboxJob

    try:
        prepared.send()
    except Exception as exc:
        log.warning("outbox: could not push job %s to %s now (%s); a worker's relay will",
                    prepared.id, prepared.queue.name, exc)
        return
    try:
        OutboxJob.objects.using(using).filter(token=token).delete()
    except Exception as exc:  # the job is in Redis; the relay's repeat push is a no-op
        log.warning("outbox: job %s pushed, but its row was not deleted (%s)", prepared.id, exc)


def relay_once(queue_names: Sequence[str], older_than: float, using: str = DEFAULT_DB_ALIAS,
               limit: int = RELAY_BATCH) -> int:
    """Push outbox rows of ``queue_names`` older than ``older_than`` seconds, then delete them.

    Rows are locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, Oracle),
    so relays of several workers take disjoint rows; on SQLite, which locks the whole database
    for writes, the lock clause is left out. Returns how many rows were pushed. If Redis fails,
    the transaction rolls back and the rows wait for the next pass.
    """
    from .models import OutboxJob

    cutoff = timezone.now() - timedelta(seconds=older_than)
    with transaction.atomic(using=using):
        qs = OutboxJob.objects.using(using).filter(queue__in=list(queue_names),
                                                   created_at__lte=cutoff)
        if connections[using].features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        rows = list(qs.order_by("created_at")[:limit])
        if not rows:
            return 0
        by_queue: dict[str, list[Prepared]] = {}
        for row in rows:
            try:
                prepared = load_prepared(row.queue, row.job_id, row.call)
            except Exception as exc:
                log.error("outbox: dropping row %s (job %s of %s): cannot be read: %s",
                          row.token, row.job_id, row.queue, exc)
                continue
            by_queue.setdefault(row.queue, []).append(prepared)
        for prepared_list in by_queue.values():
            _push_many(prepared_list)
        OutboxJob.objects.using(using).filter(token__in=[r.token for r in rows]).delete()
    log.info("outbox: relayed %d job(s)", len(rows))
    return len(rows)


def _push_many(prepared: list[Prepared]) -> None:
    from .engine.errors import JobNotFound

    queue = prepared[0].queue
    try:
        queue.send_many(prepared)
    except JobNotFound as exc:
        # A dependency vanished: send the others one by one, and drop the one that cannot be
        # enqueued (it never will be).
        for p in prepared:
            try:
                queue.send(p)
            except JobNotFound as one:
                log.error("outbox: job %s not enqueued: %s", p.id, one)
        log.debug("outbox: batch retried singly after %s", exc)


class OutboxRelay(threading.Thread):
    """A worker's relay: every ``interval`` seconds, push the rows of ``queue_names`` older than
    ``older_than`` seconds. One indexed query per interval when the outbox is empty; it never
    runs while the worker has no outbox queue."""

    def __init__(self, queue_names: Sequence[str], interval: float, older_than: float,
                 using: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(name="redisq-outbox-relay", daemon=True)
        self.queue_names = list(queue_names)
        self.interval = interval
        self.older_than = older_than
        self.using = using
        self._stop_event = threading.Event()
        self.relayed = 0

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        log.info("outbox relay for %s: every %g s, rows older than %g s",
                 ", ".join(self.queue_names), self.interval, self.older_than)
        try:
            while not self._stop_event.is_set():
                try:
                    self.relayed += relay_once(self.queue_names, self.older_than, self.using)
                except Exception as exc:
                    log.error("outbox relay: %s (is the django_redisq migration applied? "
                              "run manage.py migrate)", exc)
                    connections[self.using].close()
                self._stop_event.wait(self.interval)
        finally:
            connections.close_all()
