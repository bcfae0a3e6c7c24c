"""What a one-by-one enqueue costs under other Redis data models, against ours and huey's.

Usage::

    python bench/enqueue_models.py             # timing, 11 rounds of 5,000 calls (~1 min)
    python bench/enqueue_models.py --instructions   # also Redis instructions (needs valgrind)

Bench E1 compares our enqueue (one script call that writes the job's hash and its place in the
queue) with huey's (one LPUSH of a pickled message). This script asks what would close that
gap: it sends the same job record, one job per round trip, in each of these ways:

* ``redisq script``: our ENQUEUE, with the arguments ``Queue.prepare()`` makes;
* ``MULTI HSET script``: the record by a plain HSET, and the rest of our script's common path
  (time, sequence number, queue entry) in a small script, in one transaction;
* ``MULTI HSET ZADD``: the hash and the queue entry in a transaction, no script (the client
  supplies the time and the sequence number, so FIFO would hold per client only);
* ``HSET + LPUSH``: the hash and a list entry, pipelined but not atomic;
* ``SET + LPUSH``: the record as one JSON string, and a list entry, not atomic;
* ``LPUSH record``: the whole record as one list entry (no per-job key at all);
* ``LPUSH huey``: huey's own message for the same task;

and, for reference, both ends through their own client APIs, as bench E1 times them:
``Queue.enqueue()`` and huey's ``task()``, whose Redis work is that of the first and the last
row. Only ``redisq script`` keeps DESIGN.md's rules (an atomic state change, a hash per job,
the server's clock).

The raw ways go through one raw connection (packed, sent, replies read), so they differ in
what they ask of Redis and in building their record. Timing interleaves all the ways within
each round, in one process, against a private ``redis-server`` (as bench/run.py starts it),
and prints the median and best microseconds per job, and the median as a multiple of huey's
``task()``. ``--instructions`` also counts what the server executes per job under callgrind
(see bench/redis_cost.py), which repeats to about 1% where timings move with the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis_cost import CallgrindRedis  # noqa: E402  (bench/, this script's directory)
from run import RedisServer  # noqa: E402

from django_redisq.engine import Queue, RedisConnection  # noqa: E402
from django_redisq.engine.queue import new_job_id  # noqa: E402

FUNC = "bench.noop"
Commands = list[tuple[Any, ...]]


def _record(job_id: str) -> dict[str, Any]:
    """The fields our ENQUEUE writes for a no-op job, with the client's clock for the server's."""
    return {"id": job_id, "enqueued_at": int(time.time() * 1000), "status": "queued", "v": 1,
            "queue": "default", "func": FUNC, "payload": "[[],{}]", "timeout": 180.0,
            "result_ttl": 86_400_000, "failure_ttl": 604_800_000}


def _flat(record: dict[str, Any]) -> list[Any]:
    return [x for kv in record.items() for x in kv]


#: What our ENQUEUE does besides writing the record (its common path), for the record written
#: by a plain HSET in the same transaction.
REST_OF_ENQUEUE = """
local queued = ARGV[2] .. ':queued'
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'enqueued_at', t[1] .. string.sub('00000' .. t[2], -6, -4))
if redis.call('ZCARD', queued) > 0 then
  local n = redis.call('INCR', ARGV[2] .. ':seq')
  redis.call('ZADD', queued, string.format('%d', 100 * 17592186044416 + n), ARGV[1])
else
  redis.call('ZADD', queued, 0, ARGV[1])
end
return {1, 'queued'}
"""


def ways(url: str) -> dict[str, Callable[[], Commands]]:
    """Each way's commands for one job, all sent in one round trip."""
    q = Queue("default", RedisConnection(url))
    q.enqueue(FUNC)  # the queue is not empty: our script takes its common path
    rest = redis.Redis.from_url(url).script_load(REST_OF_ENQUEUE)
    seq = iter(range(1, 1 << 62))
    huey = _huey(url)

    def multi() -> Commands:
        job_id = new_job_id()
        return [("MULTI",), ("HSET", f"m:{{default}}:job:{job_id}", *_flat(_record(job_id))),
                ("ZADD", "m:{default}:queued", 100 * 2**44 + next(seq), job_id), ("EXEC",)]

    def multi_script() -> Commands:
        job_id = new_job_id()
        key = f"x:{{default}}:job:{job_id}"
        record = _record(job_id)
        del record["enqueued_at"]
        return [("MULTI",), ("HSET", key, *_flat(record)),
                ("EVALSHA", rest, 1, key, job_id, "x:{default}"), ("EXEC",)]

    def hset_lpush() -> Commands:
        job_id = new_job_id()
        return [("HSET", f"h:{{default}}:job:{job_id}", *_flat(_record(job_id))),
                ("LPUSH", "h:{default}:queued", job_id)]

    def set_lpush() -> Commands:
        job_id = new_job_id()
        return [("SET", f"s:{{default}}:job:{job_id}", json.dumps(_record(job_id))),
                ("LPUSH", "s:{default}:queued", job_id)]

    out: dict[str, Callable[[], Commands]] = {
        "redisq script": lambda: [q.prepare(FUNC).call.command()],
        "MULTI HSET script": multi_script,
        "MULTI HSET ZADD": multi,
        "HSET + LPUSH": hset_lpush,
        "SET + LPUSH": set_lpush,
        "LPUSH record": lambda: [("LPUSH", "l:{default}:queued",
                                  json.dumps(_record(new_job_id())))],
    }
    if huey:
        out["LPUSH huey"] = lambda: [("LPUSH", "huey.redis.bench", huey[1])]
    return out


def _huey(url: str) -> tuple[Callable[[], Any], bytes] | None:
    """huey's enqueue of a no-op task through its API (as bench E1 calls it), and its message;
    None without huey (``pip install -e .[bench]`` has it)."""
    try:
        from huey import RedisHuey
    except ImportError:
        return None

    huey = RedisHuey("bench", url=url)
    task = huey.task(name="noop")(_noop)
    return task, huey.serialize_task(task.s())


def _noop() -> None:
    pass


def apis(url: str) -> dict[str, Callable[[], Any]]:
    """The two ends through their own client APIs: what bench E1 times."""
    q = Queue("default", RedisConnection(url))
    q.enqueue(FUNC)
    out: dict[str, Callable[[], Any]] = {"Queue.enqueue()": lambda: q.enqueue(FUNC)}
    huey = _huey(url)
    if huey:
        out["huey task()"] = huey[0]
    return out


def _send(conn: redis.Connection, commands: Commands) -> None:
    """Send ``commands`` at once and read every reply, raw: the same client path for every
    way, so the ways differ only in what they ask of Redis."""
    conn.send_packed_command(conn.pack_commands(commands))
    for _ in commands:
        reply = conn.read_response()
        if isinstance(reply, redis.ResponseError):
            raise reply


def _connect(url: str) -> redis.Connection:
    return redis.Redis.from_url(url).connection_pool.make_connection()


def timings(url: str, rounds: int, n: int) -> dict[str, list[float]]:
    """Microseconds per job, one figure per round; the ways alternate within each round."""
    conn = _connect(url)
    per_call: dict[str, list[float]] = {}
    for _ in range(rounds):
        _send(conn, [("FLUSHALL",)])
        calls: dict[str, Callable[[], Any]] = {
            name: (lambda way=way: _send(conn, way())) for name, way in ways(url).items()}
        calls.update(apis(url))
        for name, call in calls.items():
            t = time.perf_counter()
            for _ in range(n):
                call()
            per_call.setdefault(name, []).append((time.perf_counter() - t) / n * 1e6)
    conn.disconnect()
    return per_call


def instructions(server: CallgrindRedis, n: int) -> dict[str, float]:
    """Server instructions per job for each way; one way's jobs go in one pipeline."""
    conn = _connect(server.server.url)
    out: dict[str, float] = {}
    for name, way in ways(server.server.url).items():
        commands = [c for _ in range(n) for c in way()]
        out[name] = server.count(lambda commands=commands: _send(conn, commands)) / n
    conn.disconnect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11, help="timed rounds (default 11)")
    ap.add_argument("--n", type=int, default=5000, help="calls per way per round (default 5,000)")
    ap.add_argument("--instructions", action="store_true",
                    help="also count Redis instructions per call under callgrind")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="redisq-models-") as tmp:
        server = RedisServer(args.redis_server, Path(tmp))
        try:
            per_call = timings(server.url, args.rounds, args.n)
        finally:
            server.stop()
        counts: dict[str, float] = {}
        if args.instructions:
            if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
                raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
            (Path(tmp) / "cg").mkdir()
            cg = CallgrindRedis(args.redis_server, "valgrind", Path(tmp) / "cg")
            try:
                counts = instructions(cg, min(args.n, 2000))
            finally:
                cg.close()
    if "huey task()" not in per_call:
        print("huey is not installed (pip install -e .[bench]): no huey rows, no ratios")
    huey = statistics.median(per_call.get("huey task()", [math.nan]))
    print(f"One-by-one enqueue, µs per call ({args.rounds} rounds of {args.n:,}, interleaved):")
    print(f"  {'way':<18} {'median':>8} {'best':>8} {'x huey':>7}"
          + (f" {'instructions':>13}" if counts else ""))
    for name, xs in per_call.items():
        med = statistics.median(xs)
        # The API rows' Redis work is their raw rows' (not counted again).
        count = f"{counts[name]:>13,.0f}" if name in counts else f"{'-':>13}"
        print(f"  {name:<18} {med:>8.1f} {min(xs):>8.1f} {med / huey:>7.2f}"
              + (f" {count}" if counts else ""))


if __name__ == "__main__":
    main()
