"""Models: unmanaged ones for the admin, and the transactional outbox's one table.

The admin's "Queues" section lists the unmanaged models; their pages are custom views that read
Redis (see ``admin_views``). Being models gives them content types and permissions, so a site
grants ``django_redisq.view_job``, ``change_job`` (requeue, cancel) and ``delete_job`` (delete,
empty a queue) like any other admin permission. ``managed = False``: no tables.

``OutboxJob`` is the only table of the app: the transactional outbox (queues with
``"OUTBOX": True``) writes a job there in the caller's transaction, and a relay pushes it to
Redis after the commit (see ``django_redisq.outbox``). ``manage.py migrate`` creates it.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class OutboxJob(models.Model):
    """A job written in a database transaction and not yet pushed to Redis.

    ``call`` holds the prepared enqueue call (keys and arguments of the ENQUEUE script) as
    JSON, so pushing it needs neither the function nor its module. Rows are deleted once
    pushed; one that stays means its push has not happened yet (or failed and is retried).
    """

    #: Client-generated token: names the Redis marker that makes a repeated push a no-op.
    token: models.CharField[str, str] = models.CharField(primary_key=True, max_length=32)
    queue: models.CharField[str, str] = models.CharField(max_length=200)
    job_id: models.CharField[str, str] = models.CharField(max_length=200)
    func: models.CharField[str, str] = models.CharField(max_length=255)
    call: models.TextField[str, str] = models.TextField()
    created_at: models.DateTimeField[Any, Any] = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "outbox job"
        verbose_name_plural = "outbox jobs"
        default_permissions = ()
        indexes = [models.Index(fields=["created_at"], name="redisq_outbox_created")]

    def __str__(self) -> str:
        return f"{self.func} ({self.job_id}) for {self.queue}"


class Queue(models.Model):
    """A configured queue (``REDISQ["QUEUES"]``); its page shows counts per state."""

    name: models.CharField[str, str] = models.CharField(primary_key=True, max_length=200)

    class Meta:
        managed = False
        verbose_name = "queue"
        verbose_name_plural = "queues"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return str(self.name)


class Job(models.Model):
    """A job in Redis. ``change`` permits requeue and cancel; ``delete`` permits delete and
    emptying a queue."""

    id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=200)

    class Meta:
        managed = False
        verbose_name = "job"
        verbose_name_plural = "jobs"
        default_permissions = ("view", "change", "delete")

    def __str__(self) -> str:
        return str(self.id)


class Worker(models.Model):
    """A worker process, known from its heartbeats."""

    name: models.CharField[str, str] = models.CharField(primary_key=True, max_length=200)

    class Meta:
        managed = False
        verbose_name = "worker"
        verbose_name_plural = "workers"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return str(self.name)


class Schedule(models.Model):
    """Delayed jobs waiting for their time, and cron schedules."""

    id: models.CharField[str, str] = models.CharField(primary_key=True, max_length=200)

    class Meta:
        managed = False
        verbose_name = "schedule"
        verbose_name_plural = "schedules"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return str(self.id)
