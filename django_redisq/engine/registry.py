"""Which callables a worker may run: registered name -> function.

A worker looks names up here and never imports a module because a payload named it, so a job
can only run code the project registered (by decorating it, or by ``register``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownFunction


def function_name(func: Callable[..., Any]) -> str:
    """The name a function is registered under: ``module.qualname``.

    Raises ``ValueError`` for functions a worker could not find by name: lambdas and functions
    defined inside other functions.
    """
    qualname = getattr(func, "__qualname__", None)
    module = getattr(func, "__module__", None)
    if not qualname or not module:
        raise ValueError(f"{func!r} has no module-level name; decorate a plain function")
    if "<lambda>" in qualname:
        raise ValueError(
            f"cannot register a lambda ({module}.{qualname}): a worker finds jobs by name; "
            f"define a module-level function with def"
        )
    if "<locals>" in qualname:
        raise ValueError(
            f"cannot register {module}.{qualname}: it is defined inside another function, so a "
            f"worker cannot find it by name; move it to module level"
        )
    return f"{module}.{qualname}"


@dataclass
class Registered:
    name: str
    func: Callable[..., Any]
    is_async: bool
    options: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self._entries: dict[str, Registered] = {}

    def register(self, func: Callable[..., Any], name: str | None = None,
                 **options: Any) -> Registered:
        name = name or function_name(func)
        existing = self._entries.get(name)
        if existing is not None and existing.func is not func:
            # Re-importing a module (autoreload, tests) re-registers the same name: newest wins.
            pass
        entry = Registered(name, func, inspect.iscoroutinefunction(func), options)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Registered:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownFunction(
                f"function {name!r} is not registered in this worker; decorate it with @job in "
                f"a module the worker imports (an app's tasks.py, or REDISQ['IMPORTS'])"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)


#: The process-wide registry that ``@job`` fills and workers read by default.
registry = Registry()
