"""``manage.py demo``: enqueue sync, async, delayed, retried, failing and limited jobs, run a
worker in burst mode, and print what happened to each job."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from demo_app.tasks import (
    build_report,
    fetch_title,
    notify_partner,
    resize_image,
    send_welcome_email,
    sync_inventory,
    sync_mailbox,
)
from django_redisq import Job

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
QUEUES = ("high", "default", "low")  # strict priority: high first
URLS = ("https://www.djangoproject.com/", "https://redis.io/", "https://docs.python.org/3/")


class Command(BaseCommand):
    help = "Run the django-redisq demo: enqueue jobs, run a burst worker, print the outcomes."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--wait", type=float, default=20.0,
                            help="seconds to wait for every job to end (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        out = self.stdout
        out.write(self.style.MIGRATE_HEADING(f"Redis: {settings.REDIS_URL}"))
        call_command("migrate", interactive=False, verbosity=0)
        out.write("Database migrated (SQLite, example_project/db.sqlite3).")
        user = self.ensure_admin()

        jobs = self.enqueue(user.pk)
        out.write(self.style.MIGRATE_HEADING(
            f"\nEnqueued {len(jobs)} jobs; running a worker in burst mode on "
            f"{' '.join(QUEUES)} ..."))
        started = time.monotonic()
        self.run_worker(jobs, options["wait"])
        out.write(f"Worker done in {time.monotonic() - started:.1f} s.\n")

        self.report(jobs)
        self.leave_jobs_in_every_state(user.pk)
        self.where_to_look()
        pending = [j.id for _, j in jobs if not j.record.is_terminal]
        if pending:
            raise CommandError(f"{len(pending)} job(s) did not end within {options['wait']:g} s: "
                               f"{', '.join(pending)}")

    # -- steps ----------------------------------------------------------------------------------
    def ensure_admin(self) -> Any:
        users = get_user_model()
        user = users.objects.filter(username=ADMIN_USER).first()
        if user is None:
            user = users.objects.create_superuser(ADMIN_USER, "admin@example.com", ADMIN_PASSWORD)
        else:  # keep the printed credentials true
            user.set_password(ADMIN_PASSWORD)
            user.is_staff = user.is_superuser = user.is_active = True
            user.save()
        self.stdout.write(f"Superuser: {ADMIN_USER} / password {ADMIN_PASSWORD}")
        return user

    def enqueue(self, user_id: int) -> list[tuple[str, Job[Any]]]:
        """(how it was enqueued, job handle) for each job of the demo."""
        jobs: list[tuple[str, Job[Any]]] = [
            ("send_welcome_email.delay(...)", send_welcome_email.delay(user_id)),
            ("  .using(priority=10, job_id=...)",
             send_welcome_email.using(priority=10, job_id=f"welcome-{uuid.uuid4().hex[:8]}")
             .delay(user_id)),
            ("build_report.using(delay=1s)",
             build_report.using(delay=timedelta(seconds=1)).delay(10_000)),
            ("sync_inventory (Retry)", sync_inventory.delay("SKU-42")),
            ("resize_image (fails)", resize_image.delay("/nonexistent/photo.jpg")),
        ]

        async def enqueue_async() -> list[Job[str]]:
            # In an async view this is just: job = await fetch_title.adelay(url)
            return [await fetch_title.adelay(url) for url in URLS]

        jobs += [("await fetch_title.adelay(...)", j) for j in asyncio.run(enqueue_async())]
        jobs += [(f"sync_mailbox (1 per user at once), {folder}",
                  sync_mailbox.delay(user_id, folder)) for folder in ("inbox", "sent", "spam")]
        jobs += [("notify_partner (rate 5/s)", notify_partner.delay(order))
                 for order in range(1001, 1009)]
        return jobs

    def run_worker(self, jobs: list[tuple[str, Job[Any]]], wait: float) -> None:
        """Run ``manage.py rqworker high default low --burst`` (a separate process, as in
        production) until every job has ended: a burst worker exits once the queues are empty,
        while the delayed job and the retry may still be waiting for their time."""
        deadline = time.monotonic() + wait
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stdout.flush()
            worker = subprocess.Popen([*manage, "rqworker", *QUEUES, "--burst", "-v", "0"])
            try:
                worker.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"The worker did not exit within {wait:g} s; stopping it.")
                worker.terminate()
                try:
                    worker.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
                return
            if all(j.record.is_terminal for _, j in jobs):
                return
            time.sleep(0.2)

    def report(self, jobs: list[tuple[str, Job[Any]]]) -> None:
        style = {"finished": self.style.SUCCESS, "failed": self.style.ERROR}
        self.stdout.write(self.style.MIGRATE_HEADING(
            f"{'job id':<34} {'queue':<8} {'function':<38} {'status':<9} result"))
        for how, j in jobs:
            rec = j.record
            status = style.get(rec.status, self.style.WARNING)(f"{rec.status:<9}")
            if rec.status == "finished":
                outcome = repr(j.result)
            elif rec.status == "failed":
                lines = (j.exc_info or "").strip().splitlines()
                outcome = lines[-1] if lines else "(no traceback)"
            else:
                outcome = "(not ended yet)"
            if rec.attempts > 1:
                outcome += f"  [{rec.attempts} attempts]"
            self.stdout.write(f"{j.id:<34} {rec.queue:<8} {rec.func:<38} {status} {outcome}")
            self.stdout.write(f"{'':<34} {'':<8} {how}")

    def leave_jobs_in_every_state(self, user_id: int) -> None:
        """Leave something to see in the admin: one job in each state the run above did not
        produce (it left finished and failed ones)."""
        from django_redisq import get_queue
        from django_redisq.engine.ops import one

        waiting = build_report.delay(10)                                   # queued
        build_report.using(depends_on=[waiting]).delay(20)                 # deferred
        send_welcome_email.using(delay=timedelta(hours=1)).delay(user_id)  # scheduled
        build_report.delay(30).cancel()                                    # canceled
        # started: held by a worker that "stopped" mid-job; a live worker would put it back
        # on its queue when its one-hour lease runs out.
        held = get_queue("default")
        send_welcome_email.delay(user_id)
        held.run(one(held.claim_call("demo-stopped-worker", 1, 3600 * 1000)))
        counts: dict[str, int] = {}
        for name in QUEUES:
            for state, n in get_queue(name).counts().items():
                counts[state] = counts.get(state, 0) + n
        self.stdout.write(self.style.MIGRATE_HEADING("\nJobs left for the admin, by state"))
        self.stdout.write("  " + ", ".join(f"{state} {n}" for state, n in counts.items()))

    def where_to_look(self) -> None:
        w = self.stdout.write
        w(self.style.MIGRATE_HEADING("\nWhere to look"))
        w("  Admin:   http://127.0.0.1:8000/admin/  "
          f"(user {ADMIN_USER}, password {ADMIN_PASSWORD})")
        w("  Web:     python example_project/manage.py runserver")
        w(f"  Worker:  python example_project/manage.py rqworker {' '.join(QUEUES)}")
        w("  (use .venv-demo/bin/python, and the same REDIS_URL as this run)")
