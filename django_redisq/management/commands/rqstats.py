"""``manage.py rqstats``: jobs per queue and state, the workers, and a health check."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import queue_names
from ...engine.errors import RedisQError
from ...engine.keys import STATES
from ...stats import Snapshot, WorkerStatus, snapshot


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join((c.rjust(w) if i in right else c.ljust(w))
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def render(snap: Snapshot) -> str:
    """The text report: queues x states, then the workers."""
    rows = [["queue", *STATES, "workers"]]
    for name, counts in snap.queues.items():
        rows.append([name, *(str(counts[s]) for s in STATES), str(len(snap.serving(name)))])
    lines = _table(rows, right=set(range(1, len(STATES) + 2)))
    when = datetime.fromtimestamp(snap.time_ms / 1000, timezone.utc).strftime("%H:%M:%S UTC")
    live = sum(1 for w in snap.workers if w.alive)
    lines += ["", f"workers: {live} live, {snap.workers_total - live} dead "
                  f"(dead = no heartbeat for {snap.stale_after:g} s); at {when}"]
    if snap.suspended:
        until = ("until rqresume" if snap.suspended_for is None
                 else f"for {snap.suspended_for:.0f} s more")
        lines.append(f"SUSPENDED {until}: workers take no new jobs")
    if snap.workers:
        lines.append("")
        lines += _table([["name", "state", "queues", "running", "processed", "failed",
                          "host", "pid", "last beat"],
                         *(_worker_row(w) for w in snap.workers)], right={3, 4, 5, 7})
    return "\n".join(lines)


def _worker_row(w: WorkerStatus) -> list[str]:
    return [w.name, w.state, ",".join(w.queues) or "-", str(len(w.jobs)), str(w.processed),
            str(w.failed), w.host or "-", "-" if w.pid is None else str(w.pid), _ago(w.age)]


class Command(BaseCommand):
    help = (
        "Show jobs per queue and state, and the workers with their last heartbeat. With "
        "--check, exit non-zero when a queue has no live worker (for health checks)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", metavar="QUEUE",
                            help="queues to show (default: every configured queue)")
        parser.add_argument("--json", action="store_true",
                            help="print JSON (one object per line with --interval)")
        parser.add_argument("--interval", type=float, default=None, metavar="S",
                            help="print again every S seconds until interrupted")
        parser.add_argument("--count", type=int, default=None, metavar="N",
                            help="with --interval: stop after N reports")
        parser.add_argument("--check", nargs="*", default=None, metavar="QUEUE",
                            help="exit 1 unless each QUEUE (default: the queues shown) is "
                                 "served by a live worker (heartbeat within 4 x HEARTBEAT)")

    def handle(self, *args: Any, **options: Any) -> None:
        configured = queue_names()
        shown = options["queues"] or configured
        check = options["check"]
        if check is not None:
            check = check or shown
        unknown = [n for n in [*shown, *(check or [])] if n not in configured]
        if unknown:
            raise CommandError(
                f"unknown queue(s): {', '.join(dict.fromkeys(unknown))}; configured queues: "
                f"{', '.join(configured)} (see REDISQ['QUEUES'] in settings)")
        interval, count = options["interval"], options["count"]
        if interval is not None and not 0 < interval < math.inf:  # also NaN
            raise CommandError(f"--interval must be a positive number of seconds, got {interval}")
        if count is not None and count < 1:
            raise CommandError(f"--count must be at least 1, got {count}")
        if check is not None:
            self._check(check, options["json"])
            return
        done = 0
        try:
            while True:
                self._report(shown, options["json"], interval is not None)
                done += 1
                if interval is None or (count is not None and done >= count):
                    return
                time.sleep(interval)  # a display refresh, not a synchronisation
        except KeyboardInterrupt:
            return

    def _snapshot(self, names: list[str]) -> Snapshot:
        try:
            return snapshot(names)
        except RedisQError as exc:
            raise CommandError(str(exc)) from exc

    def _report(self, names: list[str], as_json: bool, repeat: bool) -> None:
        snap = self._snapshot(names)
        if as_json:
            self.stdout.write(json.dumps(snap.to_dict(), indent=None if repeat else 2))
        else:
            if repeat:
                self.stdout.write("")
            self.stdout.write(render(snap))
        self.stdout.flush()

    def _check(self, names: list[str], as_json: bool) -> None:
        snap = self._snapshot(names)
        missing = snap.unserved(names)
        serving = {n: [w.name for w in snap.serving(n)] for n in names}
        if as_json:
            self.stdout.write(json.dumps({"ok": not missing, "unserved": missing,
                                          "serving": serving, "suspended": snap.suspended}))
        note = " (workers are suspended: rqresume)" if snap.suspended else ""
        if missing:
            raise CommandError(
                f"no live worker serves queue(s) {', '.join(missing)}: no heartbeat within "
                f"{snap.stale_after:g} s (4 x HEARTBEAT){note}. Start one with: "
                f"manage.py rqworker {' '.join(missing)}")
        if not as_json:
            self.stdout.write("ok: " + ", ".join(
                f"{n} ({len(ws)} live worker{'s' if len(ws) != 1 else ''})"
                for n, ws in serving.items()) + note)
