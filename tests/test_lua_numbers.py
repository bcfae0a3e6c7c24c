"""TTLs leave the Lua scripts as whole-number strings, whatever the Redis version.

Redis 7.2.0 to 7.2.4 turn a Lua number passed to ``redis.call`` into its shortest form, so
100000000 (a result TTL of 100,000 s) goes as ``'1e+08'``, and PEXPIRE refuses it: the script
fails half-way, after its earlier writes (redis#13113). The test server is another version, so
the rule is checked on the scripts' text: every TTL a script computes goes through
``intstr()``; TTLs taken from ARGV are strings already."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from django_redisq import get_queue
from django_redisq.engine import scripts

# A TTL argument that is safe on every version: intstr(...), an ARGV string, or a literal
# short enough never to be written in exponent form (fewer than 8 trailing zeros).
_SAFE = re.compile(r"^(intstr\(.*\)|ARGV\[\d+\]|\d{1,7})$")


def _call_args(source: str, start: int) -> list[str]:
    """The top-level, comma-separated arguments of the call whose '(' is at ``start``."""
    depth, args, current = 0, [], ""
    for ch in source[start:]:
        if ch in "([{":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return args
        elif ch == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += ch
    raise AssertionError(f"unbalanced call at {start}")


def _ttl_arguments() -> list[tuple[str, str]]:
    found = []
    for script in scripts.ALL_SCRIPTS:
        for m in re.finditer(r"redis\.call\(", script.source):
            args = _call_args(script.source, m.end() - 1)
            command = args[0].strip("'\"").upper()
            if command == "PEXPIRE":
                found.append((script.name, args[2]))
            elif command == "SET" and "'PX'" in args:
                found.append((script.name, args[args.index("'PX'") + 1]))
    return found


def test_every_ttl_leaves_a_script_as_a_whole_number_string():
    ttls = _ttl_arguments()
    # The scripts that set TTLs are all seen: the check is not vacuous.
    assert {name for name, _ in ttls} >= {"finish", "fail", "offer", "claim", "lead",
                                          "heartbeat", "watch"}
    unsafe = [(name, arg) for name, arg in ttls if not _SAFE.match(arg)]
    assert not unsafe, f"TTLs passed as Lua numbers (wrap them in intstr()): {unsafe}"


@pytest.mark.parametrize("ttl_s", [100_000, 1_000_000_000])
def test_a_ttl_of_a_power_of_ten_keeps_a_finished_job(r, ttl_s):
    """A result TTL of 100,000 s is 1e8 ms, and 1,000,000,000 s is capped at 1e12 ms: the job
    finishes, stays in the finished registry, and its hash expires after that long."""
    q = get_queue("default")
    job = q.enqueue("tests.jobs.add", [1, 2], result_ttl=ttl_s)
    call_command("rqworker", "default", "--burst", verbosity=0)
    assert q.job_status(job.id) == "finished"
    expected_ms = min(ttl_s * 1000, 10**12)
    pttl = r.pttl(q.keys.job(job.id))
    assert expected_ms - 60_000 < pttl <= expected_ms
    assert q.job_ids("finished") == [job.id]
