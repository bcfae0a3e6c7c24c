"""Retry policy: how many times, how long to wait, and for which exceptions."""

from __future__ import annotations

import math
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
    lock-step. ``on`` limits retries to those exception types (and their subclasses): one
    class, or a tuple or list of them (dotted names, as ``to_dict()`` writes them, are accepted
    inside the tuple).
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
            if not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"Retry({name}=...) must be a finite number >= 0, "
                                 f"got {value!r}")
        object.__setattr__(self, "on", _exception_types(self.on))

    def to_dict(self) -> dict[str, Any]:
        names = [c if isinstance(c, str) else class_path(c) for c in self.on]
        return {"max": self.max, "delay": self.delay, "backoff": self.backoff,
                "jitter": self.jitter, "max_delay": self.max_delay, "on": names}


def _exception_types(on: Any) -> tuple[type[BaseException], ...] | tuple[str, ...]:
    """``Retry(on=...)`` as a tuple. A bare class is wrapped (iterating it fails); a bare
    string is refused, since ``tuple("ValueError")`` would be its letters, matching nothing."""
    if isinstance(on, str):
        raise TypeError(f"Retry(on=...) takes exception classes, e.g. on=(ValueError,), not "
                        f"the string {on!r}")
    if isinstance(on, type):
        on = (on,)
    try:
        items = tuple(on)
    except TypeError:
        raise TypeError(f"Retry(on=...) takes an exception class or a tuple of them, "
                        f"got {on!r}") from None
    for item in items:
        if not ((isinstance(item, str) and item)
                or (isinstance(item, type) and issubclass(item, BaseException))):
            raise TypeError(f"Retry(on=...) takes exception classes, got {item!r} in {on!r}")
    return items  # type: ignore[return-value]


def backoff_delay(delay: float, backoff: float, max_delay: float, attempt: int) -> float:
    """``delay * backoff ** (attempt - 1)``, at most ``max_delay``, without overflow: the cap
    is applied before exponentiating (``2.0 ** 1024`` raises ``OverflowError``, which would
    end the retries of ``Retry(max=5000)`` at attempt 1025)."""
    exponent = max(attempt - 1, 0)
    if delay <= 0 or max_delay <= 0:
        return 0.0
    if backoff > 1 and exponent * math.log(backoff) >= math.log(max_delay / delay):
        return max_delay
    return min(delay * backoff ** exponent, max_delay)


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
        delay = backoff_delay(float(policy.get("delay", 1.0)), float(policy.get("backoff", 2.0)),
                              float(policy.get("max_delay", 3600.0)), attempt)
        jitter = float(policy.get("jitter", 0.0))
        if jitter:
            delay *= 1 + random.uniform(-jitter, jitter)
        return max(0.0, delay)
    except (TypeError, ValueError, OverflowError):
        return None
