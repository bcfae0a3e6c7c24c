"""Queue counts, the worker registry and suspension, for the operator commands.

``snapshot()`` reads, per Redis deployment, every queue's counts per state, the server time,
the worker registry and the suspension key in one pipeline, then the worker hashes in a second
one. ``suspend()`` / ``resume()`` set or delete the suspension key on every deployment and
tell the workers at once (a ``b"p"`` message on each queue's wake channel), so they need not
wait for their next heartbeat to notice.

A worker is *live* when its last heartbeat (Redis server time) is at most 4 x ``HEARTBEAT``
old (idle workers beat every 2 x ``HEARTBEAT``) and its hash has not expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .conf import all_queues, get_queue, redisq_settings
from .engine.keys import STATES, suspended_key, worker_key, workers_key
from .engine.ops import Batch, Cmd, Steps
from .engine.queue import Queue
from .engine.worker import IDLE_BEAT

#: Most workers read per Redis deployment (the most recent heartbeats first).
MAX_WORKERS = 1000
#: The message on a queue's wake channel that makes workers re-read the suspension key.
SUSPEND_MESSAGE = b"p"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass
class WorkerStatus:
    """One entry of the worker registry, as its last heartbeat described it."""

    name: str
    alive: bool
    last_beat_ms: int
    #: Seconds since the last heartbeat (Redis server time).
    age: float
    host: str = ""
    pid: int | None = None
    queues: list[str] = field(default_factory=list)
    concurrency: int | None = None
    started_ms: int | None = None
    #: idle, busy or suspended as the worker reported it; "dead" when it is not live.
    state: str = "dead"
    processed: int = 0
    failed: int = 0
    #: Running jobs as ``queue/id``.
    jobs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Snapshot:
    """What ``rqstats`` shows."""

    #: Redis server time of the read, in ms.
    time_ms: int
    #: Queue name -> state -> number of jobs.
    queues: dict[str, dict[str, int]]
    #: Most recent heartbeats first; live workers before dead ones.
    workers: list[WorkerStatus]
    #: Workers registered in all (``workers`` may be capped at ``MAX_WORKERS`` per Redis).
    workers_total: int
    suspended: bool
    #: Seconds until a timed suspension ends, or None (until ``rqresume``, or not suspended).
    suspended_for: float | None
    #: A worker whose last heartbeat is older than this many seconds is dead.
    stale_after: float

    def serving(self, queue: str) -> list[WorkerStatus]:
        """Live workers that serve ``queue``."""
        return [w for w in self.workers if w.alive and queue in w.queues]

    def unserved(self, queues: Iterable[str]) -> list[str]:
        """Those of ``queues`` that no live worker serves."""
        return [q for q in queues if not self.serving(q)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_ms": self.time_ms,
            "suspended": self.suspended,
            "suspended_for": self.suspended_for,
            "stale_after": self.stale_after,
            "queues": {name: {**counts, "workers": len(self.serving(name))}
                       for name, counts in self.queues.items()},
            "workers": [w.to_dict() for w in self.workers],
            "workers_total": self.workers_total,
        }


def by_connection(queues: Sequence[Queue]) -> list[list[Queue]]:
    """``queues`` grouped by Redis deployment, in order of first appearance."""
    groups: dict[int, list[Queue]] = {}
    for q in queues:
        groups.setdefault(id(q.connection), []).append(q)
    return list(groups.values())


def _server_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _worker(name: str, beat_ms: int, now_ms: int, stale_ms: int,
            raw: dict[Any, Any]) -> WorkerStatus:
    h = {_text(k): _text(v) for k, v in raw.items()}
    # The set's score is the latest beat; the hash's last_beat is when its fields last
    # changed (an idle worker's beat does not rewrite them).
    last = max(_int(h.get("last_beat"), beat_ms), beat_ms)
    alive = bool(h) and now_ms - last <= stale_ms
    w = WorkerStatus(name=name, alive=alive, last_beat_ms=last,
                     age=max(0, now_ms - last) / 1000)
    if h:
        w.host = h.get("host", "")
        w.pid = _int(h.get("pid"), -1) if "pid" in h else None
        w.queues = [q for q in h.get("queues", "").split(",") if q]
        w.concurrency = _int(h.get("concurrency"), -1) if "concurrency" in h else None
        w.started_ms = _int(h.get("started"), -1) if "started" in h else None
        w.processed = _int(h.get("processed"))
        w.failed = _int(h.get("failed"))
        w.jobs = [j for j in h.get("jobs", "").split(",") if j]
        if alive:
            w.state = h.get("state", "") or "idle"
    return w


def _snapshot_steps(queues: Sequence[Queue], prefix: str, stale_ms: int,
                    limit: int) -> Steps[Snapshot]:
    wkey = workers_key(prefix)
    ops = [Cmd(("ZCARD", q.keys.state(s))) for q in queues for s in STATES]
    ops += [Cmd(("TIME",)), Cmd(("PTTL", suspended_key(prefix))), Cmd(("ZCARD", wkey)),
            Cmd(("ZREVRANGE", wkey, 0, limit - 1, "WITHSCORES"), options={"withscores": True})]
    replies = yield Batch(ops)
    counts: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queues):
        row = replies[i * len(STATES):(i + 1) * len(STATES)]
        counts[q.name] = {s: int(n) for s, n in zip(STATES, row)}
    time_reply, pttl, total, pairs = replies[-4:]
    now = _server_ms(time_reply)
    seen = [(_text(name), int(score)) for name, score in pairs]
    hashes = (yield Batch([Cmd(("HGETALL", worker_key(prefix, n))) for n, _ in seen])
              ) if seen else []
    workers = [_worker(n, score, now, stale_ms, h or {}) for (n, score), h in zip(seen, hashes)]
    pttl = int(pttl)
    return Snapshot(time_ms=now, queues=counts, workers=workers, workers_total=int(total),
                    suspended=pttl != -2, suspended_for=pttl / 1000 if pttl >= 0 else None,
                    stale_after=stale_ms / 1000)


def snapshot(queue_names: Sequence[str] | None = None, *,
             limit: int = MAX_WORKERS) -> Snapshot:
    """Counts of ``queue_names`` (default: every configured queue) and the workers and
    suspension of every configured Redis deployment: two round trips per deployment."""
    conf = redisq_settings()
    # Idle workers beat every IDLE_BEAT heartbeats: dead after two of those missed.
    stale_ms = int(conf.heartbeat * IDLE_BEAT * 2 * 1000)
    wanted = [get_queue(n) for n in queue_names] if queue_names is not None else all_queues()
    out = Snapshot(time_ms=0, queues={}, workers=[], workers_total=0, suspended=False,
                   suspended_for=None, stale_after=stale_ms / 1000)
    names: set[str] = set()
    for group in by_connection(all_queues()):
        part = group[0].run(_snapshot_steps([q for q in group if q in wanted],
                                            conf.key_prefix, stale_ms, limit))
        out.time_ms = max(out.time_ms, part.time_ms)
        out.queues.update(part.queues)
        for w in part.workers:
            if w.name not in names:
                names.add(w.name)
                out.workers.append(w)
        out.workers_total += part.workers_total
        if part.suspended:  # the longest suspension wins; None is "until rqresume"
            if part.suspended_for is None or (out.suspended and out.suspended_for is None):
                out.suspended_for = None
            else:
                out.suspended_for = max(out.suspended_for or 0.0, part.suspended_for)
            out.suspended = True
    out.queues = {q.name: out.queues[q.name] for q in wanted}
    out.workers.sort(key=lambda w: (not w.alive, -w.last_beat_ms))
    return out


def _announce(queues: Sequence[Queue]) -> list[Cmd]:
    return [Cmd(("PUBLISH", q.keys.channel, SUSPEND_MESSAGE)) for q in queues]


def suspend(duration: float | None = None) -> int:
    """Suspend every worker of every configured queue: running jobs finish, no new job is
    taken until ``resume()`` (or until ``duration`` seconds pass). Listening workers are told
    at once; the others notice at their next heartbeat. Returns how many Pub/Sub subscriptions
    received the notice (a worker counts once per queue it serves)."""
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    prefix = redisq_settings().key_prefix
    told = 0
    for group in by_connection(all_queues()):
        ttl = ("PX", max(1, int(duration * 1000))) if duration is not None else ()
        replies = group[0].run(_batch([Cmd(("SET", suspended_key(prefix), "1", *ttl)),
                                       *_announce(group)]))
        told += sum(int(n) for n in replies[1:])
    return told


def resume() -> bool:
    """End a suspension; False when workers were not suspended."""
    prefix = redisq_settings().key_prefix
    was = False
    for group in by_connection(all_queues()):
        replies = group[0].run(_batch([Cmd(("DEL", suspended_key(prefix))),
                                       *_announce(group)]))
        was = was or bool(int(replies[0]))
    return was


def _batch(ops: list[Cmd]) -> Steps[list[Any]]:
    replies = yield Batch(ops)
    return list(replies)


__all__ = ["MAX_WORKERS", "Snapshot", "WorkerStatus", "by_connection", "resume", "snapshot",
           "suspend"]
