"""App configuration: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class RedisQConfig(AppConfig):
    name = "django_redisq"
    verbose_name = "Queues"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)


def autodiscover() -> list[str]:
    """Import every installed app's ``tasks`` and ``jobs`` module and ``REDISQ["IMPORTS"]``, so
    that their ``@job`` functions are registered. Workers call this at start; web processes
    need not (they import the functions they enqueue)."""
    from importlib import import_module

    from django.utils.module_loading import autodiscover_modules

    from .conf import redisq_settings

    autodiscover_modules("tasks")
    autodiscover_modules("jobs")
    for path in redisq_settings().imports:
        import_module(path)
    from .engine.registry import registry

    return registry.names()
