"""Concurrency and rate limits of jobs: checked when they are declared, resolved at enqueue.

A job's limits are decided in the caller, never in the worker: the limit key (a fixed string,
or a function of the job's arguments) is computed at enqueue time and stored in the job hash
with the limit values, so the claim script enforces them across every worker without running
user code. The Redis side (slots, waiting jobs, token buckets) lives in ``scripts.py``.

Limit keys are per queue: ``<prefix>:{<queue>}:limit:<key>:...``, in the queue's hash-tag slot,
so every script stays on one Redis Cluster slot.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Longest limit key, in characters (it is part of Redis key names).
MAX_KEY_LENGTH = 200

_UNITS = {"s": 1000, "sec": 1000, "second": 1000,
          "m": 60_000, "min": 60_000, "minute": 60_000,
          "h": 3_600_000, "hour": 3_600_000}
_RATE = re.compile(r"^\s*([0-9]+)\s*/\s*([a-z]+)\s*$")
RATE_FORMAT = '"N/s", "N/m" or "N/h" (N jobs per second, minute or hour), e.g. "100/m"'


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` job starts per ``period_ms``, with bursts of up to ``burst``.

    A token bucket: it holds up to ``burst`` tokens and refills at ``count / period``; each
    start takes one. The default burst is the rate per second, rounded up (``count`` for
    ``"N/s"``, 2 for ``"100/m"``), so starts stay smooth over long periods.
    """

    count: int
    period_ms: int
    burst: int

    @classmethod
    def parse(cls, spec: str, burst: int | None = None) -> RateLimit:
        """``"100/m"`` -> ``RateLimit(100, 60000, 2)``; ``ValueError`` naming the format."""
        if not isinstance(spec, str):
            raise TypeError(f"rate_limit must be a string like {RATE_FORMAT}; got {spec!r}")
        m = _RATE.match(spec.lower())
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"rate_limit {spec!r} is not a rate; use {RATE_FORMAT}")
        count, period_ms = int(m.group(1)), _UNITS[m.group(2)]
        if count < 1:
            raise ValueError(f"rate_limit {spec!r} allows no job at all; use N >= 1 in "
                             f"{RATE_FORMAT}")
        if burst is None:
            burst = min(count, math.ceil(count * 1000 / period_ms))
        elif isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"rate_burst must be a positive integer (jobs that may start at "
                             f"once), got {burst!r}")
        return cls(count, period_ms, burst)

    def __str__(self) -> str:
        unit = {1000: "s", 60_000: "m", 3_600_000: "h"}.get(self.period_ms)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period_ms}ms"


KeySpec = str | Callable[..., Any]


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where} must be a str, got {key!r} ({type(key).__name__})")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{where} must be a non-empty string of at most {MAX_KEY_LENGTH} "
                         f"characters, got {key!r}")
    return key


@dataclass(frozen=True)
class Limits:
    """The limits of one job function; ``fields()`` turns them into job hash fields."""

    #: A fixed key, or a function called with (some of) the job's arguments, by name.
    key: KeySpec
    max_concurrency: int | None = None
    rate: RateLimit | None = None
    #: For a key function: the job's signature (to name its arguments), the names of the
    #: job's parameters the key function takes, and whether it takes them all (``**kwargs``).
    signature: inspect.Signature | None = None
    key_params: tuple[str, ...] = ()
    key_takes_all: bool = False
    #: For messages: the job's name.
    job_name: str = ""

    def key_for(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The limit key of one call: the fixed key, or the key function's result (``TypeError``
        unless it is a str). The key function gets the job's arguments by parameter name,
        defaults applied."""
        if isinstance(self.key, str):
            return self.key
        bound: dict[str, Any] = {}
        if self.signature is not None:
            ba = self.signature.bind(*args, **kwargs)
            ba.apply_defaults()
            bound = dict(ba.arguments)
        call = {name: bound[name] for name in self.key_params}
        if self.key_takes_all:
            call = {**bound, **call}
        value = self.key(**call)
        if not isinstance(value, str):
            raise TypeError(f"the limit_key function of {self.job_name} returned {value!r} "
                            f"({type(value).__name__}); it must return a str")
        return _check_key(value, f"the limit_key of {self.job_name}")

    def fields(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Job hash fields of one call, which the claim script reads."""
        out: dict[str, Any] = {"limit_key": self.key_for(args, kwargs)}
        if self.max_concurrency is not None:
            out["max_concurrency"] = self.max_concurrency
        if self.rate is not None:
            out.update(rate_n=self.rate.count, rate_ms=self.rate.period_ms,
                       rate_burst=self.rate.burst)
        return out


def make_limits(
    job_name: str,
    signature: inspect.Signature,
    *,
    limit_key: KeySpec | None = None,
    max_concurrency: int | None = None,
    rate_limit: str | None = None,
    rate_burst: int | None = None,
) -> Limits | None:
    """Check limit options when a job is declared; ``None`` when it has no limits.

    Raises ``TypeError``/``ValueError`` naming the option and the fix. Without ``limit_key``
    the key is the job's name: the limit applies to the function as a whole.
    """
    if max_concurrency is not None and (isinstance(max_concurrency, bool)
                                        or not isinstance(max_concurrency, int)
                                        or max_concurrency < 1):
        raise ValueError(f"@job(max_concurrency=...) of {job_name} must be a positive integer, "
                         f"got {max_concurrency!r}")
    rate = RateLimit.parse(rate_limit, rate_burst) if rate_limit is not None else None
    if rate_burst is not None and rate is None:
        raise ValueError(f"@job(rate_burst=...) of {job_name} needs rate_limit, e.g. "
                         f'rate_limit="10/s", rate_burst=20')
    if max_concurrency is None and rate is None:
        if limit_key is not None:
            raise ValueError(f"@job(limit_key=...) of {job_name} needs max_concurrency or "
                             f'rate_limit, e.g. max_concurrency=2 or rate_limit="10/s"')
        return None
    if limit_key is None:
        return Limits(job_name, max_concurrency, rate, job_name=job_name)
    if isinstance(limit_key, str):
        return Limits(_check_key(limit_key, f"@job(limit_key=...) of {job_name}"),
                      max_concurrency, rate, job_name=job_name)
    if not callable(limit_key):
        raise TypeError(f"@job(limit_key=...) of {job_name} takes a str or a function of the "
                        f"job's arguments, got {limit_key!r}")
    params, takes_all = _key_params(job_name, signature, limit_key)
    return Limits(limit_key, max_concurrency, rate, signature, params, takes_all, job_name)


def _key_params(job_name: str, job_sig: inspect.Signature,
                func: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """Which of the job's parameters a key function takes (by name): checked now, so a
    mismatch fails at decoration rather than at each enqueue."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        raise TypeError(f"@job(limit_key=...) of {job_name}: cannot read the signature of "
                        f"{func!r}; pass a def or lambda taking job parameters by name") from None
    job_params = list(job_sig.parameters)
    names: list[str] = []
    takes_all = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_all = True
        elif p.kind is p.VAR_POSITIONAL:
            raise TypeError(f"@job(limit_key=...) of {job_name}: the key function takes "
                            f"*{p.name}; name the job parameters it needs instead "
                            f"({', '.join(job_params) or 'the job takes none'})")
        elif p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"@job(limit_key=...) of {job_name}: parameter {p.name!r} of the "
                            f"key function is positional-only; it is called by parameter name")
        elif p.name in job_sig.parameters:
            names.append(p.name)
        elif p.default is p.empty:
            raise TypeError(
                f"@job(limit_key=...) of {job_name}: the key function takes {p.name!r}, which "
                f"is not a parameter of the job ({', '.join(job_params) or 'it takes none'}); "
                f"name job parameters, e.g. lambda {job_params[0] if job_params else 'x'}: ...")
    return tuple(names), takes_all
