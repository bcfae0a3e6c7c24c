"""Retry policy: how many times, how long to wait, and for which exceptions."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def class_path(cls: type) -> str:
    """``module.QualName`` of a class; builtins are named plainly (``ValueError``)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class Retry:
    """Retry a failed job up to ``max`` more times.

    The n-th retry waits ``delay * backoff ** (n - 1)`` seconds (at most ``max_delay``), spread
    by ``jitter`` (a fraction: 0.1 means +/-10%) so that jobs failing together do not retry in
    lock-step. ``on`` limits retries to those exception types (and their subclasses).
    """

    max: int = 3
    delay: float = 1.0
    backoff: float = 2.0
    jitter: float = 0.1
    max_delay: float = 3600.0
    on: tuple[type[BaseException], ...] | tuple[str, ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if not isinstance(self.max, int) or self.max < 0:
            raise ValueError(f"Retry(max=...) must be an integer >= 0, got {self.max!r}")
        for name in ("delay", "backoff", "jitter", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Retry({name}=...) must be a number >= 0, got {value!r}")
        on = self.on if isinstance(self.on, tuple) else tuple(self.on)  # type: ignore[arg-type]
        object.__setattr__(self, "on", on)

    def to_dict(self) -> dict[str, Any]:
        names = [c if isinstance(c, str) else class_path(c) for c in self.on]
        return {"max": self.max, "delay": self.delay, "backoff": self.backoff,
                "jitter": self.jitter, "max_delay": self.max_delay, "on": names}


def retry_delay(policy: dict[str, Any], attempt: int, exc: BaseException) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` when the job should fail now.

    ``attempt`` counts the attempts made so far (1 after the first failure).
    """
    try:
        if attempt > int(policy.get("max", 0)):
            return None
        names: Iterable[str] = policy.get("on") or ["Exception"]
        mro = {class_path(c) for c in type(exc).__mro__}
        if not any(n in mro for n in names):
            return None
        delay = float(policy.get("delay", 1.0)) * float(policy.get("backoff", 2.0)) ** (attempt - 1)
        delay = min(delay, float(policy.get("max_delay", 3600.0)))
        jitter = float(policy.get("jitter", 0.0))
        if jitter:
            delay *= 1 + random.uniform(-jitter, jitter)
        return max(0.0, delay)
    except (TypeError, ValueError, OverflowError):
        return None
