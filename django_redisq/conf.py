"""Settings: ``settings.REDISQ`` (or a django-rq ``RQ_QUEUES``) turned into engine queues.

Read the Redis URL from the environment with django-environ, so secrets stay out of code::

    import environ
    env = environ.Env()
    REDISQ = {
        "QUEUES": {
            "default": {"URL": env("REDIS_URL", default="redis://127.0.0.1:6379/0")},
            "high": {"URL": env.str("REDIS_URL"), "DEFAULT_TIMEOUT": 30},
        },
        "SERIALIZER": "json",
    }

A URL may also be the ``ParseResult`` that ``env.url(...)`` returns. Instead of a URL, a queue
may give ``SENTINEL`` (a master found through Redis Sentinel) or ``CLUSTER`` (a Redis Cluster);
see ``SENTINEL_KEYS`` and ``CLUSTER_KEYS``. When ``REDISQ`` has no
``QUEUES``, a django-rq ``RQ_QUEUES`` dict is read instead (HOST/PORT/DB/PASSWORD or URL
entries), so a project migrates by changing ``INSTALLED_APPS``; top-level ``REDISQ`` options
still apply.

All validation lives in ``validate()``: the system check reports every problem it finds, and
``redisq_settings()`` raises ``ImproperlyConfigured`` with the same messages. Reading settings
never connects to Redis; clients are made on first use by the engine.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import ParseResult, SplitResult, parse_qs, quote, urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from redis.connection import parse_url

from .engine.connection import ClusterConfig, RedisConnection, SentinelConfig, join_url, mask_url
from .engine.errors import QueueNotFound
from .engine.queue import (
    DEFAULT_FAILURE_TTL,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_RESULT_TTL,
    DEFAULT_TIMEOUT,
    Queue,
)
from .engine.serializers import SERIALIZERS

MODES = ("normal", "eager")
URL_SCHEMES = ("redis", "rediss", "unix")
URL_EXAMPLE = ('"redis://:password@127.0.0.1:6379/0", "rediss://host:6380/0" (TLS) or '
               '"unix:///run/redis/redis.sock?db=0"')


# -- value specifications ---------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """What one setting must be: a test, its description and an example for the hint."""

    what: str
    ok: Callable[[Any], bool]
    example: str
    id: str = "E007"
    secret: bool = False  # never echo the value (passwords, URLs, client kwargs)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_like(v: Any) -> bool:
    """An int, or a string of digits (``os.getenv`` returns strings; redis-py accepts both)."""
    return _int(v) or (isinstance(v, str) and v.isdigit())


def _dotted(v: Any) -> bool:
    return isinstance(v, str) and all(part.isidentifier() for part in v.split("."))


def _kwargs(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


SECONDS = Spec("a positive number of seconds", lambda v: _num(v) and v > 0, "30")
GRACE = Spec("a number of seconds, 0 or more", lambda v: _num(v) and v >= 0, "30")
RESULT_TTL = Spec("a number of seconds: positive, 0 to keep no result, or -1 to keep it forever",
                  lambda v: _num(v) and (v >= 0 or v == -1), "86400")
FAILURE_TTL = Spec("a positive number of seconds, or -1 to keep failed jobs forever",
                   lambda v: _num(v) and (v > 0 or v == -1), "604800")
POS_INT = Spec("a positive integer", lambda v: _int(v) and v > 0, "3")
BOOL = Spec("True or False", lambda v: isinstance(v, bool), "True")
KWARGS = Spec("a dict of redis-py client keyword arguments", _kwargs,
              '{"socket_timeout": 5}', secret=True)
DICT = Spec("a dict", lambda v: isinstance(v, dict), "{...}", secret=True)
OPT_STR = Spec("a string or None", lambda v: v is None or isinstance(v, str), '"name"',
               secret=True)
ANY = Spec("anything", lambda v: True, "")
URL = Spec("a Redis URL string", lambda v: isinstance(v, (str, ParseResult, SplitResult)),
           URL_EXAMPLE, "E004", secret=True)
HOST = Spec("a non-empty host name", lambda v: isinstance(v, str) and bool(v), '"127.0.0.1"',
            "E004")
PORT = Spec("a port number from 1 to 65535", lambda v: _int_like(v) and 0 < int(v) < 65536,
            "6379", "E004")
DB = Spec("a database number, 0 or more", lambda v: _int_like(v) and int(v) >= 0, "0", "E004")

TOP_LEVEL: dict[str, tuple[Any, Spec]] = {
    "SERIALIZER": ("json", Spec("one of " + ", ".join(f'"{n}"' for n in sorted(SERIALIZERS)),
                                lambda v: isinstance(v, str) and v in SERIALIZERS, '"json"',
                                "E008")),
    "RESULT_TTL": (DEFAULT_RESULT_TTL, RESULT_TTL),
    "FAILURE_TTL": (DEFAULT_FAILURE_TTL, FAILURE_TTL),
    "DEFAULT_TIMEOUT": (DEFAULT_TIMEOUT, SECONDS),
    "ENQUEUE_ON_COMMIT": (True, BOOL),
    "KEY_PREFIX": ("redisq", Spec(
        "a non-empty string without { or }",
        lambda v: isinstance(v, str) and bool(v) and "{" not in v and "}" not in v, '"redisq"')),
    "IMPORTS": ([], Spec("a list of dotted module paths",
                         lambda v: isinstance(v, (list, tuple)) and all(_dotted(m) for m in v),
                         '["myapp.jobs"]')),
    "MAX_PAYLOAD_BYTES": (DEFAULT_MAX_PAYLOAD, POS_INT),
    "LEASE": (30.0, SECONDS),
    "MAX_DEATHS": (3, POS_INT),
    "SHUTDOWN_GRACE": (30.0, GRACE),
    "HEARTBEAT": (5.0, SECONDS),
    "CONCURRENCY": (10, POS_INT),
    "CRON": ([], Spec("a list", lambda v: isinstance(v, (list, tuple)), "[]")),
    "MODE": ("normal", Spec('"normal" or "eager"', lambda v: v in MODES, '"normal"', "E010")),
    "OUTBOX_POLL_INTERVAL": (1.0, SECONDS),
    "OUTBOX_RELAY_AFTER": (5.0, GRACE),
    "METRICS_TOKEN": (None, Spec("a non-empty string or None",
                                 lambda v: v is None or (isinstance(v, str) and bool(v)),
                                 'env("REDISQ_METRICS_TOKEN")', secret=True)),
}

#: Keys of one ``REDISQ["QUEUES"]`` entry.
QUEUE_KEYS: dict[str, Spec] = {
    "URL": URL, "HOST": HOST, "PORT": PORT, "DB": DB, "USERNAME": OPT_STR, "PASSWORD": OPT_STR,
    "SSL": BOOL, "DEFAULT_TIMEOUT": SECONDS, "RESULT_TTL": RESULT_TTL,
    "FAILURE_TTL": FAILURE_TTL, "CONNECTION_KWARGS": KWARGS, "SENTINEL": DICT, "CLUSTER": DICT,
    "OUTBOX": BOOL,
    "WAIT_REPLICAS": Spec("a number of replicas, 0 or more", lambda v: _int(v) and v >= 0, "1"),
    "WAIT_TIMEOUT_MS": Spec("a positive number of milliseconds", lambda v: _int(v) and v > 0,
                            "500"),
}

SENTINEL_EXAMPLE = ('{"SENTINELS": [("10.0.0.1", 26379), ("10.0.0.2", 26379)], '
                    '"SERVICE_NAME": "mymaster"}')
CLUSTER_EXAMPLE = '{"NODES": ["10.0.0.1:7000", "10.0.0.2:7000"]}'


def _address(v: Any) -> bool:
    """A (host, port) pair or a "host:port" string."""
    if isinstance(v, str):
        host, _, port = v.rpartition(":")
        return bool(host) and port.isdigit() and 0 < int(port) < 65536
    return (isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], str)
            and bool(v[0]) and _int_like(v[1]) and 0 < int(v[1]) < 65536)


def _addresses(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(_address(a) for a in v)


def _parse_address(v: Any) -> tuple[str, int]:
    if isinstance(v, str):
        host, _, port = v.rpartition(":")
        return host.strip("[]"), int(port)
    return str(v[0]), int(v[1])


ADDRESSES = Spec('a non-empty list of (host, port) pairs or "host:port" strings', _addresses,
                 '[("10.0.0.1", 26379), "10.0.0.2:26379"]', "E013")
#: Keys of a queue's ``SENTINEL`` dict.
SENTINEL_KEYS: dict[str, Spec] = {
    "SENTINELS": ADDRESSES,
    "SERVICE_NAME": Spec("a non-empty string: the master's name in the sentinels' "
                         "configuration", lambda v: isinstance(v, str) and bool(v),
                         '"mymaster"', "E013"),
    "DB": DB, "USERNAME": OPT_STR, "PASSWORD": OPT_STR, "SENTINEL_KWARGS": KWARGS,
}
#: Keys of a queue's ``CLUSTER`` dict.
CLUSTER_KEYS: dict[str, Spec] = {
    "NODES": Spec('a non-empty list of "host:port" strings or (host, port) pairs', _addresses,
                  '["10.0.0.1:7000", "10.0.0.2:7000"]', "E013"),
    "USERNAME": OPT_STR, "PASSWORD": OPT_STR,
}

#: Keys django-rq documents for an ``RQ_QUEUES`` entry.
RQ_QUEUE_KEYS: dict[str, Spec] = {
    "URL": URL, "HOST": HOST, "PORT": PORT, "DB": DB, "USERNAME": OPT_STR, "PASSWORD": OPT_STR,
    "SSL": BOOL, "SSL_CERT_REQS": ANY, "UNIX_SOCKET_PATH": HOST,
    "SOCKET_TIMEOUT": Spec("a positive number of seconds or None",
                           lambda v: v is None or (_num(v) and v > 0), "5"),
    "CONNECTION_KWARGS": KWARGS, "REDIS_CLIENT_KWARGS": KWARGS,
    "SENTINELS": Spec("a list of (host, port) pairs", lambda v: isinstance(v, (list, tuple)),
                      '[("localhost", 26379)]'),
    "MASTER_NAME": Spec("a string", lambda v: isinstance(v, str), '"mymaster"'),
    "SENTINEL_KWARGS": KWARGS, "DEFAULT_TIMEOUT": SECONDS, "DEFAULT_RESULT_TTL": RESULT_TTL,
    "USE_REDIS_CACHE": ANY, "ASYNC": BOOL, "QUEUE_CLASS": ANY,
}

#: django-rq spellings used inside ``REDISQ["QUEUES"]``: what to write instead.
RQ_SPELLINGS = {
    "DEFAULT_RESULT_TTL": '"RESULT_TTL"',
    "REDIS_CLIENT_KWARGS": '"CONNECTION_KWARGS"',
    "SOCKET_TIMEOUT": '"CONNECTION_KWARGS": {"socket_timeout": ...}',
    "SSL_CERT_REQS": '"CONNECTION_KWARGS": {"ssl_cert_reqs": ...}',
    "UNIX_SOCKET_PATH": '"URL": "unix:///path/to/redis.sock?db=0"',
    "SENTINELS": '"SENTINEL": {...}',
    "MASTER_NAME": '"SENTINEL": {...}',
}
#: django-rq spellings inside a ``SENTINEL`` dict.
SENTINEL_SPELLINGS = {"MASTER_NAME": '"SERVICE_NAME"'}


# -- parsed settings --------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueSettings:
    """One configured queue: where its Redis is and its per-queue defaults."""

    name: str
    url: str
    connection_kwargs: dict[str, Any]
    default_timeout: float
    result_ttl: float
    failure_ttl: float
    setting: str  # where it was configured, e.g. 'REDISQ["QUEUES"]["high"]'
    #: Jobs enqueued inside a transaction go through the transactional outbox table.
    outbox: bool = False
    #: The master found through these sentinels (``url`` is then empty).
    sentinel: SentinelConfig | None = None
    #: The Redis Cluster of these startup nodes (``url`` is then empty).
    cluster: ClusterConfig | None = None
    #: After each enqueue, wait until this many replicas have it (``WAIT``); 0: do not wait.
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000

    @property
    def masked_url(self) -> str:
        """Where the queue's Redis is, without secrets."""
        if self.sentinel is not None:
            return self.sentinel.describe()
        if self.cluster is not None:
            return self.cluster.describe()
        return mask_url(self.url)


@dataclass(frozen=True)
class Settings:
    """``REDISQ`` with defaults filled in and every value checked."""

    queues: dict[str, QueueSettings]
    serializer: str = "json"
    result_ttl: float = DEFAULT_RESULT_TTL
    failure_ttl: float = DEFAULT_FAILURE_TTL
    default_timeout: float = DEFAULT_TIMEOUT
    enqueue_on_commit: bool = True
    key_prefix: str = "redisq"
    imports: list[str] = field(default_factory=list)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    lease: float = 30.0
    max_deaths: int = 3
    shutdown_grace: float = 30.0
    heartbeat: float = 5.0
    concurrency: int = 10
    cron: list[Any] = field(default_factory=list)
    mode: str = "normal"
    outbox_poll_interval: float = 1.0
    outbox_relay_after: float = 5.0
    #: Bearer token that lets a scraper read the metrics view without a staff session.
    metrics_token: str | None = None
    source: str = 'REDISQ["QUEUES"]'  # or "RQ_QUEUES"


@dataclass(frozen=True)
class Problem:
    """One finding of ``validate()``; the system check turns it into an Error or a Warning."""

    level: str  # "error" or "warning"
    id: str  # "E004"; the check id is "django_redisq.E004"
    msg: str
    hint: str

    def __str__(self) -> str:
        return f"django_redisq.{self.id}: {self.msg} HINT: {self.hint}"


# -- validation -------------------------------------------------------------------------------
def _key(key: Any) -> str:
    return f'["{key}"]' if isinstance(key, str) else f"[{key!r}]"


def _show(value: Any, spec: Spec) -> str:
    if spec.secret:
        return f"a value of type {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    known = sorted(known)
    match = difflib.get_close_matches(key.upper(), known, n=1) if isinstance(key, str) else []
    guess = f'Did you mean "{match[0]}"? ' if match else ""
    return f"{guess}Valid keys: {', '.join(known)}."


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL redis-py can use, or None. Never connects."""
    if not url:
        return "is empty (is the environment variable set?)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    if parts.scheme not in URL_SCHEMES:
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"has {scheme}, not redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        if not parts.path:
            return "names no socket path"
    elif not parts.hostname:
        return "names no host"
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return f"has database {parts.path.strip('/')!r}, which is not a number"
    db = parse_qs(parts.query).get("db")
    if db and not db[0].isdigit():
        return "has a db= query value that is not a number"
    try:
        parse_url(url)
    except ValueError as exc:
        return f"is rejected by redis-py ({exc})"
    return None


def _env_url(parts: ParseResult | SplitResult) -> str:
    """The URL django-environ's ``env.url()`` parsed, as written: ``geturl()`` drops the ``//``
    of a scheme Python does not know when the URL names no host (``unix:///run/redis.sock``
    comes back as ``unix:/run/redis.sock``, which redis-py refuses)."""
    url = parts.geturl()
    scheme = parts.scheme
    if scheme and not parts.netloc and not url.startswith(f"{scheme}://"):
        url = f"{scheme}://{url[len(scheme) + 1:]}"
    return url


def _with_db(url: str, db: int) -> str:
    """django-rq's ``DB`` next to ``URL``: it passes ``from_url(url, db=DB)``, where a database
    the URL names (its path, or a ``db`` query argument) wins. So does it here; otherwise the
    database goes where the URL's scheme takes it (a unix socket's only in the query)."""
    parts = urlsplit(url)
    if "db" in parse_qs(parts.query):
        return url
    if parts.scheme == "unix":
        query = f"{parts.query}&db={db}" if parts.query else f"db={db}"
        return join_url(parts._replace(query=query))
    if parts.path in ("", "/"):
        return join_url(parts._replace(path=f"/{db}"))
    return url


def _host_url(scheme: str, host: str, port: Any, db: Any, user: str | None,
              password: str | None) -> str:
    """A redis-py URL from django-rq style HOST/PORT/DB/USERNAME/PASSWORD parts."""
    auth = ""
    if user or password:
        auth = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password else "")
        auth += "@"
    if scheme == "unix":
        return f"unix://{auth}{host}?db={int(db)}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{scheme}://{auth}{host}:{int(port)}/{int(db)}"


class _Validator:
    """Walks the raw settings once, collecting problems and building ``Settings``."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, id: str, msg: str, hint: str) -> None:
        self.problems.append(Problem("error", id, msg, hint))

    def warning(self, id: str, msg: str, hint: str) -> None:
        self.problems.append(Problem("warning", id, msg, hint))

    def check(self, label: str, value: Any, spec: Spec) -> bool:
        if spec.ok(value):
            return True
        self.error(spec.id, f"{label} must be {spec.what}, got {_show(value, spec)}.",
                   f"Set {label} to {spec.what}, e.g. {spec.example}.")
        return False

    def run(self, redisq: Any, rq_queues: Any) -> Settings:
        if redisq is None:
            redisq = {}
        elif not isinstance(redisq, dict):
            self.error("E002", f"REDISQ must be a dict, got a {type(redisq).__name__}.",
                       'Write REDISQ = {"QUEUES": {"default": {"URL": env("REDIS_URL")}}}.')
            redisq = {}
        top: dict[str, Any] = {key: default for key, (default, _) in TOP_LEVEL.items()}
        for key, value in redisq.items():
            if key == "QUEUES":
                continue
            if not isinstance(key, str) or key not in TOP_LEVEL:
                self.error("E005", f"REDISQ{_key(key)} is not a django-redisq setting.",
                           _did_you_mean(key, [*TOP_LEVEL, "QUEUES"]))
            elif self.check(f"REDISQ{_key(key)}", value, TOP_LEVEL[key][1]):
                top[key] = value
        if top["SERIALIZER"] == "pickle":
            self.warning(
                "W001",
                'REDISQ["SERIALIZER"] is "pickle": a worker unpickling job data runs whatever '
                "code the bytes name, so anyone who can write to Redis can run code on workers.",
                'Use "json" (the default) unless Redis is reachable only by trusted clients '
                "(private network, password or ACL, TLS).")
        if top["HEARTBEAT"] >= top["LEASE"]:
            self.error(
                "E007", f'REDISQ["HEARTBEAT"] ({top["HEARTBEAT"]:g} s) must be less than '
                f'REDISQ["LEASE"] ({top["LEASE"]:g} s), or leases of running jobs expire '
                "between renewals and the jobs run twice.",
                'Keep HEARTBEAT a small fraction of LEASE, e.g. "HEARTBEAT": 5, "LEASE": 30.')

        raw = redisq.get("QUEUES")
        source, rq = 'REDISQ["QUEUES"]', False
        if (raw is None or raw == {}) and rq_queues is not None:
            raw, source, rq = rq_queues, "RQ_QUEUES", True
        queues: dict[str, QueueSettings] = {}
        if raw is None or raw == {}:
            self.error("E001", 'No queue is configured: REDISQ["QUEUES"] and RQ_QUEUES are '
                       "both missing or empty.",
                       'Add to settings.py: REDISQ = {"QUEUES": {"default": {"URL": '
                       'env("REDIS_URL", default="redis://127.0.0.1:6379/0")}}}.')
        elif not isinstance(raw, dict):
            self.error("E002", f"{source} must be a dict of queue name to options, got a "
                       f"{type(raw).__name__}.",
                       f'Write {source} = {{"default": {{"URL": env("REDIS_URL")}}}}.')
        else:
            for name, conf in raw.items():
                queue = self.queue(source, name, conf, rq, top)
                if queue is not None:
                    queues[name] = queue
        return Settings(
            queues=queues, serializer=top["SERIALIZER"], result_ttl=float(top["RESULT_TTL"]),
            failure_ttl=float(top["FAILURE_TTL"]), default_timeout=float(top["DEFAULT_TIMEOUT"]),
            enqueue_on_commit=top["ENQUEUE_ON_COMMIT"], key_prefix=top["KEY_PREFIX"],
            imports=list(top["IMPORTS"]), max_payload_bytes=top["MAX_PAYLOAD_BYTES"],
            lease=float(top["LEASE"]), max_deaths=top["MAX_DEATHS"],
            shutdown_grace=float(top["SHUTDOWN_GRACE"]), heartbeat=float(top["HEARTBEAT"]),
            concurrency=top["CONCURRENCY"], cron=list(top["CRON"]), mode=top["MODE"],
            outbox_poll_interval=float(top["OUTBOX_POLL_INTERVAL"]),
            outbox_relay_after=float(top["OUTBOX_RELAY_AFTER"]),
            metrics_token=top["METRICS_TOKEN"], source=source,
        )

    def queue(self, source: str, name: Any, conf: Any, rq: bool,
              top: dict[str, Any]) -> QueueSettings | None:
        label = f"{source}{_key(name)}"
        if not isinstance(name, str) or not name or "{" in name or "}" in name:
            self.error("E009", f"{label}: {name!r} is not a valid queue name.",
                       "Use a non-empty string without { or } (braces delimit the Redis "
                       'Cluster hash tag in key names), e.g. "default" or "high".')
            return None
        if not isinstance(conf, dict):
            self.error("E002", f"{label} must be a dict of queue options, got a "
                       f"{type(conf).__name__}.",
                       f'Write {label} = {{"URL": env("REDIS_URL")}}.')
            return None
        known = RQ_QUEUE_KEYS if rq else QUEUE_KEYS
        vals: dict[str, Any] = {}
        for key, value in conf.items():
            if not isinstance(key, str) or key not in known:
                hint = _did_you_mean(key, known)
                if not rq and key in RQ_SPELLINGS:
                    hint = (f"{key} is django-rq's RQ_QUEUES spelling; in REDISQ write "
                            f"{RQ_SPELLINGS[key]}. " + hint)
                self.error("E006", f"{label}{_key(key)} is not a queue option.", hint)
            elif self.check(f"{label}{_key(key)}", value, known[key]):
                vals[key] = value

        if "USE_REDIS_CACHE" in vals:
            self.error(
                "E011", f'{label}["USE_REDIS_CACHE"] is not supported: django-redisq makes its '
                "own sync client and one async client per event loop from a URL, so it cannot "
                "borrow a cache backend's client.",
                'Replace it with "URL" pointing at the same Redis as that cache (its LOCATION), '
                'e.g. "URL": env("REDIS_URL").')
            return None
        if vals.get("ASYNC") is False:
            self.warning("W002", f'{label}["ASYNC"] = False is ignored: jobs always go through '
                         "Redis from this setting.",
                         'Remove it; to run jobs in the caller (e.g. in tests), set '
                         'REDISQ["MODE"] = "eager".')
        if "QUEUE_CLASS" in vals:
            self.warning("W002", f'{label}["QUEUE_CLASS"] is ignored: django-redisq queues are '
                         "not RQ queue classes.", "Remove it.")

        server_keys = [k for k in ("URL", "HOST", "UNIX_SOCKET_PATH") if k in conf]
        deployments = [k for k in (("SENTINELS",) if rq else ("SENTINEL", "CLUSTER"))
                       if k in conf]
        if rq and deployments and server_keys:
            self.warning("W002", f"{label} has SENTINELS, so {', '.join(server_keys)} is "
                         "ignored: the master is found through the sentinels (as django-rq "
                         "does).", f"Remove {', '.join(server_keys)} from {label}.")
            server_keys = []
        if (server_keys and deployments) or len(deployments) > 1:
            both = [*server_keys, *deployments]
            self.error("E013", f"{label} names its Redis in more than one way: "
                       f"{', '.join(both)}.",
                       "Keep one: URL (or HOST) for a single server, SENTINEL for a master "
                       "watched by Redis Sentinel, or CLUSTER for a Redis Cluster.")
            return None
        if "URL" in conf and not rq:
            # Ignored next to a URL (redis-py takes the URL alone): a PASSWORD set there would
            # silently connect without it, an SSL without TLS.
            misplaced = [k for k in ("PORT", "DB", "USERNAME", "PASSWORD", "SSL") if k in vals]
            if misplaced:
                self.error("E013", f"{label} has {', '.join(misplaced)} next to URL; those go "
                           f"with HOST only, and a URL carries them itself.",
                           "Put them in the URL: rediss://user:password@host:port/db (rediss:// "
                           "for TLS), or replace URL with HOST.")
                return None
        sentinel = cluster = None
        url: str | None = ""
        if deployments and not rq:
            misplaced = [k for k in ("PORT", "DB", "USERNAME", "PASSWORD", "SSL") if k in conf]
            if misplaced:
                self.error("E013", f"{label} has {', '.join(misplaced)} next to "
                           f"{deployments[0]}; those go with HOST only.",
                           f"Move USERNAME, PASSWORD (and DB for SENTINEL) inside "
                           f'{label}["{deployments[0]}"]; for TLS set "CONNECTION_KWARGS": '
                           '{"ssl": True}. A Redis Cluster has database 0 only.')
                return None
        if rq and "SENTINELS" in vals:
            sentinel = self.rq_sentinel(label, vals)
        elif "SENTINEL" in vals:
            sentinel = self.sentinel(label, vals["SENTINEL"])
        elif "CLUSTER" in vals:
            cluster = self.cluster(label, vals["CLUSTER"])
        elif not deployments:
            url = self.url(label, vals, rq)
            if url is None:
                if not server_keys:
                    self.error("E003", f"{label} has no URL (or HOST), so it names no Redis "
                               "server.",
                               f'Add "URL": env("REDIS_URL", default="redis://127.0.0.1:6379/0")'
                               f' to {label}, or "SENTINEL" or "CLUSTER" (see the README).')
                return None
        if url is None or (deployments and sentinel is None and cluster is None):
            return None  # its problems are reported
        if vals.get("WAIT_REPLICAS") and cluster is not None:
            self.error("E013", f'{label}["WAIT_REPLICAS"] is not supported with CLUSTER: WAIT '
                       "counts the replicas of one node, and a queue's node can change.",
                       f'Remove "WAIT_REPLICAS" from {label}, or use SENTINEL.')
            return None

        options: dict[str, Any] = {}
        if vals.get("SOCKET_TIMEOUT") is not None:
            options["socket_timeout"] = vals["SOCKET_TIMEOUT"]
        if "SSL_CERT_REQS" in vals and url.startswith("rediss:"):
            options["ssl_cert_reqs"] = vals["SSL_CERT_REQS"]
        options.update(vals.get("REDIS_CLIENT_KWARGS", {}))
        options.update(vals.get("CONNECTION_KWARGS", {}))
        result_ttl = vals.get("DEFAULT_RESULT_TTL" if rq else "RESULT_TTL", top["RESULT_TTL"])
        return QueueSettings(
            name=name, url=url or "", connection_kwargs=options, setting=label,
            default_timeout=float(vals.get("DEFAULT_TIMEOUT", top["DEFAULT_TIMEOUT"])),
            result_ttl=float(result_ttl),
            failure_ttl=float(vals.get("FAILURE_TTL", top["FAILURE_TTL"])),
            sentinel=sentinel, cluster=cluster, outbox=bool(vals.get("OUTBOX")),
            wait_replicas=vals.get("WAIT_REPLICAS", 0),
            wait_timeout_ms=vals.get("WAIT_TIMEOUT_MS", 1000),
        )

    def _sub(self, label: str, raw: Any, known: dict[str, Spec], example: str,
             spellings: dict[str, str]) -> dict[str, Any] | None:
        """The checked keys of a SENTINEL or CLUSTER dict, or None after reporting."""
        ok = True
        vals: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or key not in known:
                hint = _did_you_mean(key, known)
                if key in spellings:
                    hint = f"Write {spellings[key]} instead of {key}. " + hint
                self.error("E013", f"{label}{_key(key)} is not an option here.", hint)
                ok = False
            elif self.check(f"{label}{_key(key)}", value, known[key]):
                vals[key] = value
            else:
                ok = False
        required = next(iter(known))
        if ok and required not in vals:
            self.error("E013", f'{label} has no "{required}".', f"Write {label} = {example}.")
            ok = False
        return vals if ok else None

    def sentinel(self, label: str, raw: Any) -> SentinelConfig | None:
        label = f'{label}["SENTINEL"]'
        vals = self._sub(label, raw, SENTINEL_KEYS, SENTINEL_EXAMPLE, SENTINEL_SPELLINGS)
        if vals is None:
            return None
        if "SERVICE_NAME" not in vals:
            self.error("E013", f'{label} has no "SERVICE_NAME" (the master\'s name in the '
                       "sentinels' configuration).", f"Write {label} = {SENTINEL_EXAMPLE}.")
            return None
        return SentinelConfig(
            sentinels=tuple(_parse_address(a) for a in vals["SENTINELS"]),
            service_name=vals["SERVICE_NAME"], db=int(vals.get("DB", 0)),
            username=vals.get("USERNAME"), password=vals.get("PASSWORD"),
            sentinel_kwargs=dict(vals.get("SENTINEL_KWARGS", {})))

    def rq_sentinel(self, label: str, vals: dict[str, Any]) -> SentinelConfig | None:
        """django-rq's SENTINELS/MASTER_NAME/SENTINEL_KWARGS next to DB/USERNAME/PASSWORD."""
        if "SENTINELS" not in vals:
            return None  # reported by check()
        if not _addresses(vals["SENTINELS"]):
            self.error("E013", f'{label}["SENTINELS"] must be {ADDRESSES.what}.',
                       f"Set it to e.g. {ADDRESSES.example}.")
            return None
        if not vals.get("MASTER_NAME"):
            self.error("E013", f'{label} has SENTINELS but no "MASTER_NAME".',
                       f'Add "MASTER_NAME": "mymaster" (the name the sentinels monitor) to '
                       f"{label}.")
            return None
        return SentinelConfig(
            sentinels=tuple(_parse_address(a) for a in vals["SENTINELS"]),
            service_name=vals["MASTER_NAME"], db=int(vals.get("DB", 0)),
            username=vals.get("USERNAME"), password=vals.get("PASSWORD") or None,
            sentinel_kwargs=dict(vals.get("SENTINEL_KWARGS", {})))

    def cluster(self, label: str, raw: Any) -> ClusterConfig | None:
        label = f'{label}["CLUSTER"]'
        vals = self._sub(label, raw, CLUSTER_KEYS, CLUSTER_EXAMPLE, {})
        if vals is None:
            return None
        return ClusterConfig(nodes=tuple(_parse_address(a) for a in vals["NODES"]),
                             username=vals.get("USERNAME"), password=vals.get("PASSWORD"))

    def url(self, label: str, vals: dict[str, Any], rq: bool) -> str | None:
        """The queue's Redis URL from URL, UNIX_SOCKET_PATH or HOST/PORT/..., or None."""
        if "URL" in vals:
            url = vals["URL"]
            if isinstance(url, (ParseResult, SplitResult)):  # env.url("REDIS_URL")
                url = _env_url(url)
            problem = _url_problem(url)
            if problem:
                self.error("E004", f'{label}["URL"] {problem}: {mask_url(url)!r}.',
                           f"Use a URL like {URL_EXAMPLE}.")
                return None
            if rq and "DB" in vals:
                url = _with_db(str(url), int(vals["DB"]))
            return str(url)
        parts = (vals.get("DB", 0), vals.get("USERNAME"), vals.get("PASSWORD"))
        if "UNIX_SOCKET_PATH" in vals:
            key, url = "UNIX_SOCKET_PATH", _host_url("unix", vals["UNIX_SOCKET_PATH"], 0, *parts)
        elif "HOST" in vals:
            scheme = "rediss" if vals.get("SSL") else "redis"
            key, url = "HOST", _host_url(scheme, vals["HOST"], vals.get("PORT", 6379), *parts)
        else:
            return None
        problem = _url_problem(url)
        if problem:
            self.error("E004", f"{label}[\"{key}\"] gives a Redis URL that {problem}: "
                       f"{mask_url(url)!r}.",
                       f'Check {key}, PORT, DB, USERNAME and PASSWORD, or set "URL" to a URL '
                       f"like {URL_EXAMPLE}.")
            return None
        return url


def validate() -> tuple[Settings, list[Problem]]:
    """Check ``settings.REDISQ`` and ``settings.RQ_QUEUES`` (``None`` counts as absent).

    Returns the parsed settings and every problem found; the settings are only usable when no
    problem has level "error". Shared by the system check and ``redisq_settings()``.
    """
    validator = _Validator()
    parsed = validator.run(getattr(django_settings, "REDISQ", None),
                           getattr(django_settings, "RQ_QUEUES", None))
    return parsed, validator.problems


# -- cached access ----------------------------------------------------------------------------
_lock = threading.RLock()
_settings: Settings | None = None
_queues: dict[str, Queue] = {}
_connections: dict[tuple[str, ...], RedisConnection] = {}


def clear_cache() -> None:
    """Forget parsed settings, queues and connections (done on ``setting_changed``)."""
    global _settings
    with _lock:
        _settings = None
        _queues.clear()
        _connections.clear()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("REDISQ", "RQ_QUEUES"):
        clear_cache()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_redisq.conf")


def redisq_settings() -> Settings:
    """The checked settings, parsed once; raises ``ImproperlyConfigured`` when invalid."""
    global _settings
    current = _settings
    if current is not None:  # the common case: no lock
        return current
    with _lock:
        if _settings is None:
            parsed, problems = validate()
            errors = [str(p) for p in problems if p.level == "error"]
            if errors:
                raise ImproperlyConfigured("\n".join(errors))
            _settings = parsed
        return _settings


def queue_names() -> list[str]:
    """Configured queue names, in settings order."""
    return list(redisq_settings().queues)


def _queue_settings(name: str) -> QueueSettings:
    conf = redisq_settings()
    try:
        return conf.queues[name]
    except (KeyError, TypeError):
        raise QueueNotFound(
            f"queue {name!r} is not configured; configured queues: "
            f"{', '.join(conf.queues)} (in {conf.source})"
        ) from None


def get_queue(name: str = "default") -> Queue:
    """The engine queue ``name``, made once. Queues with the same URL and client options
    share one ``RedisConnection`` (and so one connection pool)."""
    queue = _queues.get(name)
    if queue is not None:  # the common case (every delay()): no lock
        return queue
    with _lock:
        queue = _queues.get(name)
        if queue is not None:
            return queue
        conf = redisq_settings()
        qs = _queue_settings(name)
        key = (qs.url, repr(qs.sentinel), repr(qs.cluster),
               repr(sorted(qs.connection_kwargs.items(), key=lambda kv: kv[0])))
        connection = _connections.get(key)
        if connection is None:
            connection = _connections[key] = RedisConnection(
                qs.url, sentinel=qs.sentinel, cluster=qs.cluster, **qs.connection_kwargs)
        queue = _queues[name] = Queue(
            name, connection, prefix=conf.key_prefix, serializer=conf.serializer,
            default_timeout=qs.default_timeout, result_ttl=qs.result_ttl,
            failure_ttl=qs.failure_ttl, max_payload_bytes=conf.max_payload_bytes,
            wait_replicas=qs.wait_replicas, wait_timeout_ms=qs.wait_timeout_ms,
        )
        return queue


def all_queues() -> list[Queue]:
    """Every configured queue, in settings order."""
    return [get_queue(name) for name in queue_names()]


def outbox_queues() -> list[str]:
    """Names of the queues configured with ``"OUTBOX": True``."""
    return [name for name, qs in redisq_settings().queues.items() if qs.outbox]


def uses_outbox(name: str) -> bool:
    """Whether queue ``name`` sends jobs enqueued in a transaction through the outbox."""
    return _queue_settings(name).outbox


def masked_url(name: str = "default") -> str:
    """The Redis URL of queue ``name`` with its password replaced by ``***``."""
    return _queue_settings(name).masked_url


__all__ = [
    "Problem",
    "QueueSettings",
    "Settings",
    "all_queues",
    "clear_cache",
    "get_queue",
    "masked_url",
    "outbox_queues",
    "queue_names",
    "redisq_settings",
    "uses_outbox",
    "validate",
]
