"""Unmanaged models: no tables, only admin index entries and Django permissions.

The admin's "Queues" section lists these models; their pages are custom views that read Redis
(see ``admin_views``). Being models gives them content types and permissions, so a site grants
``django_redisq.view_job``, ``change_job`` (requeue, cancel) and ``delete_job`` (delete, empty
a queue) like any other admin permission. The app has no migrations: Django treats it as an
unmigrated app, creates the permissions after ``migrate`` and never creates tables for
``managed = False`` models.
"""

from __future__ import annotations

from django.db import models


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
