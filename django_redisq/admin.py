"""The admin's "Queues" section: Queues, Jobs, Workers and Schedules.

Each entry is an unmanaged model (``models.py``) registered with a ModelAdmin whose URLs are
replaced by the Redis-backed views of ``admin_views``; the standard changelist, add, change,
delete and history views are never routed. Every view goes through the admin site's
``admin_view`` (active staff login, CSRF, no caching) and then checks the model permission it
needs: ``view`` to see a page, ``change`` on Job to requeue or cancel, ``delete`` on Job to
delete jobs or empty a queue.

Subclass these admins and re-register them to change a permission rule: the views call
``has_view_permission`` and friends on the registered admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from . import admin_views as views
from .models import Job, Queue, Schedule, Worker

if TYPE_CHECKING:
    _Base = admin.ModelAdmin[Any]
else:
    _Base = admin.ModelAdmin


class RedisQAdmin(_Base):
    """A ModelAdmin with Redis-backed pages instead of database views."""

    #: ``(route, view, name suffix)``; the first is the changelist (the index links to it).
    pages: list[tuple[str, Callable[..., HttpResponse], str]] = []

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only Job has a change permission; a superuser must still see Queues as view-only.
        return ("change" in self.opts.default_permissions
                and super().has_change_permission(request, obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return ("delete" in self.opts.default_permissions
                and super().has_delete_permission(request, obj))

    def wrap(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return view(request, self, *args, **kwargs)

        inner.__name__ = inner.__qualname__ = view.__name__
        inner.__doc__ = view.__doc__
        return self.admin_site.admin_view(inner)

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [path(route, self.wrap(view), name=f"{prefix}_{name}")
                for route, view, name in self.pages]

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return self.wrap(self.pages[0][1])(request)


@admin.register(Queue)
class QueueAdmin(RedisQAdmin):
    pages = [
        ("", views.queues_view, "changelist"),
        ("<str:queue>/requeue-failed/", views.requeue_failed_view, "requeue_failed"),
        ("<str:queue>/empty/", views.empty_queue_view, "empty"),
    ]


@admin.register(Job)
class JobAdmin(RedisQAdmin):
    pages = [
        ("", views.jobs_view, "changelist"),
        ("<str:queue>/<str:job_id>/", views.job_view, "change"),
        ("<str:queue>/<str:job_id>/requeue/", views.requeue_job_view, "requeue"),
        ("<str:queue>/<str:job_id>/cancel/", views.cancel_job_view, "cancel"),
        ("<str:queue>/<str:job_id>/delete/", views.delete_job_view, "delete"),
    ]


@admin.register(Worker)
class WorkerAdmin(RedisQAdmin):
    pages = [("", views.workers_view, "changelist")]


@admin.register(Schedule)
class ScheduleAdmin(RedisQAdmin):
    pages = [("", views.schedules_view, "changelist")]
