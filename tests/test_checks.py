"""System checks and settings parsing (conf.py, checks.py). No Redis server needed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from django.core.checks import CheckMessage, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_redisq import conf
from django_redisq.checks import TAG, check_cron, check_settings
from django_redisq.engine.errors import QueueNotFound

URL = "redis://127.0.0.1:6379/0"

# The shape of django-rq's documented RQ_QUEUES (README), minus the Sentinel entry.
RQ_QUEUES = {
    "default": {"HOST": "localhost", "PORT": 6379, "DB": 0, "PASSWORD": "",
                "DEFAULT_TIMEOUT": 360},
    "high": {"URL": "redis://redis.example.com:6380/2", "DEFAULT_TIMEOUT": 500},
    "low": {"HOST": "cache.example.com", "PORT": "6390", "DB": 3, "USERNAME": "rq",
            "PASSWORD": "p@ss/word", "SSL": True, "SSL_CERT_REQS": None,
            "REDIS_CLIENT_KWARGS": {"health_check_interval": 30}, "SOCKET_TIMEOUT": 0.3,
            "DEFAULT_RESULT_TTL": 500},
}


def queues(**entries: Any) -> dict[str, Any]:
    return {"QUEUES": entries or {"default": {"URL": URL}}}


def check(redisq: Any = None, rq_queues: Any = None) -> list[CheckMessage]:
    with override_settings(REDISQ=redisq, RQ_QUEUES=rq_queues):
        return check_settings()


def only(redisq: Any = None, rq_queues: Any = None) -> CheckMessage:
    """The single message the settings produce."""
    messages = check(redisq, rq_queues)
    assert len(messages) == 1, [f"{m.id}: {m.msg}" for m in messages]
    return messages[0]


def test_valid_settings_have_no_problems_and_make_no_connection() -> None:
    redisq = {**queues(default={"URL": URL}, high={"URL": URL, "DEFAULT_TIMEOUT": 30}),
              "RESULT_TTL": 0, "FAILURE_TTL": -1, "IMPORTS": ["myapp.jobs"], "MODE": "eager"}
    assert check(redisq) == []
    with override_settings(REDISQ=redisq, RQ_QUEUES=None):
        s = conf.redisq_settings()
        assert (s.result_ttl, s.failure_ttl, s.mode, s.imports) == (0, -1, "eager", ["myapp.jobs"])
        high = conf.get_queue("high")
        assert high.default_timeout == 30 and conf.get_queue().default_timeout == 180
        assert high.connection._client is None  # reading settings never connects


def test_check_is_registered_under_its_tag() -> None:
    with override_settings(REDISQ={"QUEUES": {}}, RQ_QUEUES=None):
        assert [m.id for m in run_checks(tags=[TAG])] == ["django_redisq.E001"]


@pytest.mark.parametrize(("redisq", "rq_queues"), [
    (None, None), ({}, None), ({"QUEUES": {}}, None), ({"QUEUES": None}, {}),
])
def test_e001_no_queue(redisq: Any, rq_queues: Any) -> None:
    m = only(redisq, rq_queues)
    assert m.id == "django_redisq.E001" and m.is_serious()
    assert 'REDISQ["QUEUES"]' in m.msg and "RQ_QUEUES" in m.msg
    assert "redis://" in m.hint


@pytest.mark.parametrize(("redisq", "rq_queues", "setting"), [
    (["default"], {"default": {"URL": URL}}, "REDISQ must be a dict"),
    ({"QUEUES": [URL]}, None, 'REDISQ["QUEUES"] must be a dict'),
    (queues(default=URL), None, 'REDISQ["QUEUES"]["default"] must be a dict'),
    (None, {"default": URL}, 'RQ_QUEUES["default"] must be a dict'),
])
def test_e002_not_a_dict(redisq: Any, rq_queues: Any, setting: str) -> None:
    m = only(redisq, rq_queues)
    assert m.id == "django_redisq.E002"
    assert setting in m.msg


def test_e003_queue_without_url() -> None:
    m = only(queues(default={"DEFAULT_TIMEOUT": 30}))
    assert m.id == "django_redisq.E003"
    assert 'REDISQ["QUEUES"]["default"]' in m.msg and '"URL": env("REDIS_URL"' in m.hint


def test_sentinel_and_cluster_settings_build_their_connections() -> None:
    redisq = queues(
        s={"SENTINEL": {"SENTINELS": [("10.0.0.1", 26379), "10.0.0.2:26380"],
                        "SERVICE_NAME": "mymaster", "PASSWORD": "s3cret", "DB": 2,
                        "SENTINEL_KWARGS": {"password": "sp"}},
           "WAIT_REPLICAS": 1, "WAIT_TIMEOUT_MS": 250},
        c={"CLUSTER": {"NODES": ["10.0.0.1:7000", ("10.0.0.2", "7001")], "PASSWORD": "pw"},
           "CONNECTION_KWARGS": {"socket_timeout": 5}})
    assert check(redisq) == []
    with override_settings(REDISQ=redisq, RQ_QUEUES=None):
        s, c = conf.get_queue("s"), conf.get_queue("c")
        sc = s.connection.sentinel
        assert sc is not None and sc.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
        assert (sc.service_name, sc.db, sc.password, sc.sentinel_kwargs) == (
            "mymaster", 2, "s3cret", {"password": "sp"})
        assert (s.wait_replicas, s.wait_timeout_ms) == (1, 250)
        cc = c.connection.cluster
        assert cc is not None and cc.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
        assert c.connection.options == {"socket_timeout": 5} and c.wait_replicas == 0
        # Where they are, for messages and the admin; never a password.
        assert conf.masked_url("s") == "sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
        assert conf.masked_url("c") == "cluster://10.0.0.1:7000,10.0.0.2:7001"
        assert "s3cret" not in repr(s) and "pw" not in repr(c)
        assert s.connection._client is None  # reading settings never connects


def test_django_rq_sentinel_entry_maps_to_sentinel() -> None:
    rq = {"with-sentinel": {"SENTINELS": [("localhost", 26736), ("localhost", 26737)],
                            "MASTER_NAME": "redismaster", "DB": 0, "USERNAME": "redis-user",
                            "PASSWORD": "secret", "SOCKET_TIMEOUT": 0.3,
                            "SENTINEL_KWARGS": {"username": "sentinel-user", "password": "s"}}}
    assert check(None, rq) == []
    with override_settings(REDISQ=None, RQ_QUEUES=rq):
        q = conf.redisq_settings().queues["with-sentinel"]
        assert q.sentinel is not None and q.sentinel.service_name == "redismaster"
        assert (q.sentinel.username, q.sentinel.password) == ("redis-user", "secret")
        assert q.sentinel.sentinel_kwargs == {"username": "sentinel-user", "password": "s"}
        assert q.connection_kwargs == {"socket_timeout": 0.3} and q.url == ""


@pytest.mark.parametrize(("entry", "says"), [
    ({"URL": URL, "SENTINEL": {"SENTINELS": [("h", 1)], "SERVICE_NAME": "m"}},
     "more than one way: URL, SENTINEL"),
    ({"SENTINEL": {"SENTINELS": [("h", 1)], "SERVICE_NAME": "m"}, "CLUSTER": {"NODES": ["h:1"]}},
     "more than one way: SENTINEL, CLUSTER"),
    ({"SENTINEL": {"SENTINELS": [("h", 1)]}}, 'has no "SERVICE_NAME"'),
    ({"SENTINEL": {"SERVICE_NAME": "m"}}, 'has no "SENTINELS"'),
    ({"SENTINEL": {"SENTINELS": [], "SERVICE_NAME": "m"}}, '["SENTINELS"] must be a non-empty'),
    ({"SENTINEL": {"SENTINELS": ["h"], "SERVICE_NAME": "m"}}, '["SENTINELS"] must be a non-empty'),
    ({"SENTINEL": {"SENTINELS": [("h", 1)], "MASTER_NAME": "m"}}, '["MASTER_NAME"] is not an'),
    ({"SENTINEL": {"SENTINELS": [("h", 1)], "SERVICE_NAME": "m"}, "PASSWORD": "x"},
     "has PASSWORD next to SENTINEL"),
    ({"CLUSTER": {"NODES": ["h:1"]}, "DB": 1}, "has DB next to CLUSTER"),
    ({"CLUSTER": {"NODES": ["h:99999"]}}, '["NODES"] must be a non-empty'),
    ({"CLUSTER": {"NODE": ["h:1"]}}, 'Did you mean "NODES"'),
    ({"CLUSTER": {"NODES": ["h:1"]}, "WAIT_REPLICAS": 1}, "not supported with CLUSTER"),
])
def test_e013_bad_sentinel_or_cluster(entry: dict[str, Any], says: str) -> None:
    messages = check(queues(default=entry))
    assert messages, "expected a problem"
    m = messages[0]
    assert m.id == "django_redisq.E013" and m.is_serious(), (m.id, m.msg)
    assert 'REDISQ["QUEUES"]["default"]' in m.msg
    assert says in f"{m.msg} {m.hint}"
    if "MASTER_NAME" in str(entry):
        assert '"SERVICE_NAME"' in m.hint


def test_e013_django_rq_sentinels_without_master_name() -> None:
    m = only(None, {"q": {"SENTINELS": [("localhost", 26379)], "DB": 0}})
    assert m.id == "django_redisq.E013" and '"MASTER_NAME"' in m.hint


@pytest.mark.parametrize(("url", "why"), [
    ("", "is empty"),
    ("http://localhost:6379/0", "has http://, not redis://"),
    ("localhost:6379", "has localhost://"),
    ("redis://localhost:abc/0", "cannot be parsed"),
    ("redis://localhost:99999/0", "cannot be parsed"),
    ("redis:///0", "names no host"),
    ("redis://localhost:6379/zero", "is not a number"),
    ("unix://", "names no socket path"),
    ("redis://localhost/0?socket_timeout=soon", "rejected by redis-py"),
    (6379, "must be a Redis URL string"),
])
def test_e004_bad_url(url: Any, why: str) -> None:
    m = only(queues(default={"URL": url}))
    assert m.id == "django_redisq.E004"
    assert 'REDISQ["QUEUES"]["default"]["URL"]' in m.msg and why in m.msg
    assert "rediss://" in m.hint


def test_e004_message_masks_the_password() -> None:
    m = only(queues(default={"URL": "http://:hunter2@localhost:6379/0"}))
    assert m.id == "django_redisq.E004"
    assert "hunter2" not in m.msg and "***" in m.msg


def test_e004_for_a_bad_port_next_to_a_password_is_a_message_not_a_traceback() -> None:
    m = only(queues(default={"URL": "redis://:hunter2@localhost:99999/0"}))
    assert m.id == "django_redisq.E004" and "cannot be parsed" in m.msg
    assert "hunter2" not in m.msg


@pytest.mark.parametrize(("key", "value"), [("PORT", 0), ("PORT", "63a9"), ("DB", -1),
                                            ("HOST", "")])
def test_e004_bad_rq_address(key: str, value: Any) -> None:
    entry = {"HOST": "localhost", "PORT": 6379, "DB": 0, key: value}
    m = only(None, {"default": entry})
    assert m.id == "django_redisq.E004" and f'RQ_QUEUES["default"]["{key}"]' in m.msg


def test_e005_unknown_top_level_key_did_you_mean() -> None:
    m = only({**queues(), "SERIALISER": "json"})
    assert m.id == "django_redisq.E005"
    assert 'REDISQ["SERIALISER"]' in m.msg
    assert m.hint.startswith('Did you mean "SERIALIZER"?')
    assert 'Did you mean "QUEUES"?' in only({"queues": {"default": {"URL": URL}},
                                               "QUEUES": {"default": {"URL": URL}}}).hint


def test_e006_unknown_queue_key_did_you_mean() -> None:
    m = only(queues(default={"URL": URL, "DEFAULT_TIMEUOT": 30}))
    assert m.id == "django_redisq.E006"
    assert 'REDISQ["QUEUES"]["default"]["DEFAULT_TIMEUOT"]' in m.msg
    assert 'Did you mean "DEFAULT_TIMEOUT"?' in m.hint


def test_e006_django_rq_spelling_in_redisq_names_the_redisq_key() -> None:
    m = only(queues(default={"URL": URL, "DEFAULT_RESULT_TTL": 60}))
    assert m.id == "django_redisq.E006" and 'in REDISQ write "RESULT_TTL"' in m.hint


def test_e006_unknown_rq_queue_key() -> None:
    m = only(None, {"default": {"URL": URL, "PASSWRD": "x"}})
    assert m.id == "django_redisq.E006" and 'RQ_QUEUES["default"]["PASSWRD"]' in m.msg
    assert 'Did you mean "PASSWORD"?' in m.hint


@pytest.mark.parametrize(("key", "value"), [
    ("DEFAULT_TIMEOUT", 0), ("DEFAULT_TIMEOUT", -1), ("DEFAULT_TIMEOUT", "30"),
    ("DEFAULT_TIMEOUT", True), ("DEFAULT_TIMEOUT", float("inf")), ("RESULT_TTL", -2),
    ("FAILURE_TTL", 0), ("ENQUEUE_ON_COMMIT", "yes"), ("ENQUEUE_ON_COMMIT", 1),
    ("MAX_PAYLOAD_BYTES", 1.5), ("MAX_DEATHS", 0), ("CONCURRENCY", True),
    ("IMPORTS", "myapp.jobs"), ("IMPORTS", ["my-app.jobs"]), ("KEY_PREFIX", ""),
    ("KEY_PREFIX", "a{b}"), ("CRON", {}), ("SHUTDOWN_GRACE", -1), ("LEASE", 0),
    ("OUTBOX_POLL_INTERVAL", 0), ("OUTBOX_RELAY_AFTER", -1),
])
def test_e007_wrong_top_level_value(key: str, value: Any) -> None:
    m = only({**queues(), key: value})
    assert m.id == "django_redisq.E007"
    assert m.msg.startswith(f'REDISQ["{key}"] must be ')
    assert m.hint.startswith(f'Set REDISQ["{key}"] to ')


@pytest.mark.parametrize(("key", "value"), [
    ("DEFAULT_TIMEOUT", 0), ("RESULT_TTL", "1d"), ("FAILURE_TTL", 0), ("SSL", "true"),
    ("CONNECTION_KWARGS", "socket_timeout=5"), ("PASSWORD", 1234), ("WAIT_REPLICAS", -1),
    ("WAIT_TIMEOUT_MS", 0), ("OUTBOX", "yes"),
])
def test_e007_wrong_queue_value(key: str, value: Any) -> None:
    m = only(queues(default={"URL": URL, key: value}))
    assert m.id == "django_redisq.E007"
    assert f'REDISQ["QUEUES"]["default"]["{key}"] must be ' in m.msg
    assert "1234" not in m.msg  # passwords and client kwargs are never echoed


def test_e007_heartbeat_must_be_shorter_than_lease() -> None:
    m = only({**queues(), "HEARTBEAT": 30, "LEASE": 30})
    assert m.id == "django_redisq.E007"
    assert 'REDISQ["HEARTBEAT"]' in m.msg and 'REDISQ["LEASE"]' in m.msg


def test_e008_unknown_serializer() -> None:
    m = only({**queues(), "SERIALIZER": "msgpack"})
    assert m.id == "django_redisq.E008"
    assert 'REDISQ["SERIALIZER"]' in m.msg and '"json"' in m.hint and '"pickle"' in m.hint


@pytest.mark.parametrize("name", ["", "a{b}", "}", 3])
def test_e009_invalid_queue_name(name: Any) -> None:
    m = only({"QUEUES": {name: {"URL": URL}}})
    assert m.id == "django_redisq.E009" and m.msg.startswith('REDISQ["QUEUES"][')
    assert "{ or }" in m.hint


def test_e010_unknown_mode() -> None:
    m = only({**queues(), "MODE": "sync"})
    assert m.id == "django_redisq.E010"
    assert 'REDISQ["MODE"]' in m.msg and '"eager"' in m.hint


def test_e011_use_redis_cache_is_not_supported() -> None:
    m = only(None, {"default": {"USE_REDIS_CACHE": "redis-cache"}})
    assert m.id == "django_redisq.E011"
    assert 'RQ_QUEUES["default"]["USE_REDIS_CACHE"]' in m.msg and "cache backend" in m.msg
    assert '"URL"' in m.hint


def test_w001_pickle_serializer_warns() -> None:
    m = only({**queues(), "SERIALIZER": "pickle"})
    assert m.id == "django_redisq.W001" and not m.is_serious()
    assert "anyone who can write to Redis can run code on workers" in m.msg
    with override_settings(REDISQ={**queues(), "SERIALIZER": "pickle"}, RQ_QUEUES=None):
        assert conf.redisq_settings().serializer == "pickle"  # a warning does not raise
        assert conf.get_queue().serializer.name == "pickle"


def test_w002_rq_async_false_is_ignored_with_a_warning() -> None:
    m = only(None, {"default": {"URL": URL, "ASYNC": False}})
    assert m.id == "django_redisq.W002" and 'RQ_QUEUES["default"]["ASYNC"]' in m.msg
    assert '"eager"' in m.hint
    assert check(None, {"default": {"URL": URL, "ASYNC": True}}) == []


def test_all_problems_are_reported_at_once() -> None:
    redisq = {"QUEUES": {"a": {"URL": "http://x"}, "b": {}}, "MODE": "x", "TTL": 1}
    ids = sorted(m.id.rsplit(".", 1)[1] for m in check(redisq))
    assert ids == ["E003", "E004", "E005", "E010"]


def test_django_rq_queues_map_to_queues() -> None:
    assert check(None, RQ_QUEUES) == []
    with override_settings(REDISQ={"KEY_PREFIX": "app"}, RQ_QUEUES=RQ_QUEUES):
        s = conf.redisq_settings()
        assert s.source == "RQ_QUEUES" and conf.queue_names() == ["default", "high", "low"]
        assert s.queues["default"].url == "redis://localhost:6379/0"
        assert s.queues["high"].url == "redis://redis.example.com:6380/2"
        low = s.queues["low"]
        assert low.url == "rediss://rq:p%40ss%2Fword@cache.example.com:6390/3"
        assert low.connection_kwargs == {"socket_timeout": 0.3, "ssl_cert_reqs": None,
                                         "health_check_interval": 30}
        assert low.result_ttl == 500
        default = conf.get_queue("default")
        assert default.default_timeout == 360 and default.prefix == "app"
        assert conf.get_queue("high").default_timeout == 500
        assert conf.masked_url("low") == "rediss://rq:***@cache.example.com:6390/3"


def test_rq_url_takes_db_and_unix_socket() -> None:
    # As django-rq's from_url(URL, db=DB): a database the URL names wins.
    rq = {"a": {"URL": "redis://h:6379", "DB": 4}, "b": {"URL": "redis://h:6379/1", "DB": 4},
          "c": {"UNIX_SOCKET_PATH": "/run/redis.sock", "DB": 2},
          "d": {"URL": "redis://h:6379?db=2", "DB": 4},
          "e": {"URL": "redis://h:6379?socket_timeout=5", "DB": 4},
          "f": {"URL": "unix:///run/redis.sock", "DB": 3},
          "g": {"URL": "unix:///run/redis.sock?db=1", "DB": 3}}
    with override_settings(REDISQ=None, RQ_QUEUES=rq):
        qs = conf.redisq_settings().queues
        assert [qs[n].url for n in "abcdefg"] == [
            "redis://h:6379/4", "redis://h:6379/1", "unix:///run/redis.sock?db=2",
            "redis://h:6379?db=2", "redis://h:6379/4?socket_timeout=5",
            "unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=1"]


def test_redisq_queues_win_over_rq_queues() -> None:
    with override_settings(REDISQ=queues(only={"URL": URL}), RQ_QUEUES=RQ_QUEUES):
        assert conf.queue_names() == ["only"]
        assert conf.redisq_settings().source == 'REDISQ["QUEUES"]'


def test_env_url_parse_result_is_accepted() -> None:
    parsed = urlparse("redis://:pw@redis.internal:6379/5")  # what django-environ's env.url gives
    sock = urlparse("unix:///run/redis.sock?db=2")  # geturl() would drop the '//'
    with override_settings(REDISQ=queues(default={"URL": parsed}, sock={"URL": sock}),
                           RQ_QUEUES=None):
        assert check_settings() == []
        assert conf.redisq_settings().queues["default"].url == parsed.geturl()
        assert conf.redisq_settings().queues["sock"].url == "unix:///run/redis.sock?db=2"


@pytest.mark.parametrize("key, value", [("PASSWORD", "s3cret"), ("USERNAME", "app"),
                                        ("DB", 3), ("SSL", True), ("PORT", 6380)])
def test_e013_server_options_next_to_a_url_would_be_ignored(key: str, value: Any) -> None:
    m = only(queues(default={"URL": "redis://redis.internal:6379/0", key: value}))
    assert m.id == "django_redisq.E013"
    assert f"{key} next to URL" in m.msg and "rediss://user:password@host" in m.hint
    assert "s3cret" not in m.msg


def test_redisq_settings_raises_with_the_check_message() -> None:
    with override_settings(REDISQ={**queues(), "MODE": "sync"}, RQ_QUEUES=None):
        msg = check_settings()[0].msg
        with pytest.raises(ImproperlyConfigured) as exc:
            conf.redisq_settings()
        assert msg in str(exc.value) and "django_redisq.E010" in str(exc.value)
        with pytest.raises(ImproperlyConfigured):
            conf.get_queue()


def test_cache_follows_setting_changes() -> None:
    with override_settings(REDISQ=queues(a={"URL": URL}), RQ_QUEUES=None):
        first = conf.get_queue("a")
        assert conf.get_queue("a") is first
        with override_settings(REDISQ={**queues(a={"URL": URL}), "DEFAULT_TIMEOUT": 7}):
            again = conf.get_queue("a")
            assert again is not first and again.default_timeout == 7
        assert conf.get_queue("a").default_timeout == 180


def test_get_queue_unknown_name_lists_queues() -> None:
    with override_settings(REDISQ=queues(default={"URL": URL}, high={"URL": URL}),
                           RQ_QUEUES=None):
        with pytest.raises(QueueNotFound) as exc:
            conf.get_queue("nope")
        assert str(exc.value) == ("queue 'nope' is not configured; configured queues: "
                                  'default, high (in REDISQ["QUEUES"])')
        with pytest.raises(QueueNotFound):
            conf.masked_url("nope")


def test_queues_share_connections_by_url_and_options() -> None:
    other = "redis://127.0.0.1:6379/1"
    redisq = queues(a={"URL": URL}, b={"URL": URL, "DEFAULT_TIMEOUT": 5}, c={"URL": other},
                    d={"URL": URL, "CONNECTION_KWARGS": {"socket_timeout": 5}})
    with override_settings(REDISQ=redisq, RQ_QUEUES=None):
        a, b, c, d = conf.all_queues()
        assert a.connection is b.connection
        assert len({id(a.connection), id(c.connection), id(d.connection)}) == 3
        assert d.connection.options == {"socket_timeout": 5}


def test_masked_url_hides_password() -> None:
    redisq = queues(default={"URL": "redis://user:s3cret@redis.internal:6379/0"},
                    sock={"URL": "unix:///run/redis.sock?db=0&password=s3cret"},
                    query={"URL": "redis://redis.internal:6379/0?password=s3cret"},
                    v6={"URL": "redis://:s3cret@[::1]:6379/0"})
    with override_settings(REDISQ=redisq, RQ_QUEUES=None):
        masked = conf.masked_url("default")
        assert masked == "redis://user:***@redis.internal:6379/0"
        assert "s3cret" not in repr(conf.get_queue())
        # redis-py also reads a password from the query (a unix socket's only way to give one)
        assert conf.masked_url("sock") == "unix:///run/redis.sock?db=0&password=***"
        assert conf.masked_url("query") == "redis://redis.internal:6379/0?password=***"
        assert conf.masked_url("v6") == "redis://:***@[::1]:6379/0"


# -- REDISQ["CRON"] entries (E012) -------------------------------------------------------------
def cron_errors(*entries: Any) -> list[str]:
    with override_settings(REDISQ={**queues(), "CRON": list(entries)}, RQ_QUEUES=None):
        messages = check_cron()
    assert all(m.id == "django_redisq.E012" for m in messages)
    return [m.msg for m in messages]


@pytest.mark.parametrize("every", ["30", True, [30], 0, -5, float("inf"), float("nan")])
def test_e012_cron_every_must_be_a_positive_number(every: Any) -> None:
    """A string (from an environment variable) used to crash the check with a TypeError."""
    [msg] = cron_errors({"every": every, "func": "tests.jobs.add", "args": [1, 2]})
    assert msg.startswith('REDISQ["CRON"][0]["every"] must be a positive number of seconds')
    assert repr(every) in msg


@pytest.mark.parametrize(("entry", "says"), [
    ({"cron": "0 0 31 4 *"}, '["cron"]: \'0 0 31 4 *\' never matches'),
    ({"cron": "0 0 30,31 feb *"}, "never matches: its months (feb) have no day 30, 31"),
    ({"cron": "@daily", "timezone": 1}, "a time zone is a name such as 'Europe/Paris', got 1"),
    ({"cron": "@daily", "name": 7}, '["name"] must be a non-empty string, got 7'),
])
def test_e012_cron_entries_that_could_not_run(entry: dict[str, Any], says: str) -> None:
    [msg] = cron_errors({**entry, "func": "tests.jobs.add", "args": [1, 2]})
    assert msg.startswith('REDISQ["CRON"][0]') and says in msg, msg


def test_e012_cron_entries_sharing_a_name_are_both_named() -> None:
    entries = [{"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-a"]},
               {"every": 30, "func": "tests.jobs.add", "args": [1, 2]},
               {"cron": "0 3 * * *", "func": "tests.jobs.record", "args": ["site-b"]}]
    [msg] = cron_errors(*entries)
    assert msg.startswith('REDISQ["CRON"][0] and REDISQ["CRON"][2] share the name '
                          "'tests.jobs.record'") and 'distinct "name"' in msg
    entries[2]["name"] = "record-site-b"
    assert cron_errors(*entries) == []
