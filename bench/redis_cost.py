"""What the Redis server does per job, counted in instructions (callgrind) rather than timed.

Usage::

    python bench/redis_cost.py              # 2,000 jobs, claims and finishes of 50 (~20 s)
    python bench/redis_cost.py --n 5000 --batch 20

Starts a private ``redis-server`` under valgrind's callgrind (a free loopback port, its own
temporary directory, no persistence; stopped by PID at the end) with counting off, and
counts only around each phase, as the server sees it:

* ``enqueue``: N jobs enqueued one by one onto a queue that is not empty (ENQUEUE; the calls
  go in one pipeline, but each is its own script call, as from N separate ``.delay()``);
* ``claim xB`` and ``finish xB``: the jobs claimed, then finished, B per call (CLAIM and
  FINISH, as a busy worker's prefetch and outcome batches make them);
* ``claim x1`` and ``finish x1``: as above, one job per call (a worker that is not busy);
* ``hand-off`` and ``finish waited``: the Redis side of a latency trip to an idle worker (L1):
  the enqueue that hands the job to a worker's offer, and the finish of that one job, with a
  client waiting in ``get()`` and the worker's next offer.

The server's work includes reading the requests and writing the replies. Prints instructions
per job for each phase. An instruction count is repeatable to about 1% however busy the
machine is, where timings of the same code move by 20% and more from run to run on a small
virtual machine, so this is the figure to compare before and after a change to a script.
Valgrind slows the server about 50 times; nothing here is timed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import RedisServer  # noqa: E402  (bench/, this script's directory)

from django_redisq.engine import Queue, RedisConnection, scripts  # noqa: E402
from django_redisq.engine.ops import Call  # noqa: E402

WORKER = "bench-worker"


class CallgrindRedis:
    """A private redis-server (see run.RedisServer) under callgrind, counting only inside
    ``count()``."""

    def __init__(self, redis_server: str, valgrind: str, workdir: Path) -> None:
        self.out = workdir / "redis" / "callgrind.out"
        self.server = RedisServer(
            redis_server, workdir, start_timeout=120,
            prefix=(valgrind, "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={self.out}"))

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.server.p.pid)], check=True,
                       capture_output=True, timeout=120)

    def count(self, work: Callable[[], Any]) -> int:
        """Instructions the server executed while ``work()`` ran."""
        before = set(self.out.parent.glob("callgrind.out*"))
        self._control("-z")
        self._control("-i", "on")
        work()
        self._control("-i", "off")
        self._control("-d")
        dumps = sorted(set(self.out.parent.glob("callgrind.out*")) - before,
                       key=lambda p: p.stat().st_mtime)
        for line in dumps[-1].read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dumps[-1]}")

    def close(self) -> None:
        self.server.stop()


def measure(server: CallgrindRedis, n: int, batch: int) -> dict[str, float]:
    r = server.server.client
    q = Queue("default", RedisConnection(server.server.url))
    for s in scripts.ALL_SCRIPTS:
        r.script_load(s.source)
    q.enqueue("bench.noop")  # the queue is not empty: no wake-up, no hand-off
    per_job: dict[str, float] = {}

    def pipeline(calls: list[Any]) -> list[Any]:
        p = r.pipeline(transaction=False)
        for c in calls:
            p.execute_command(*c.command())
        return p.execute()  # type: ignore[no-any-return]

    enqueues = [q.prepare("bench.noop").call for _ in range(n)]
    per_job["enqueue"] = server.count(lambda: pipeline(enqueues)) / n

    for size in (batch, 1):
        ids: list[str] = []
        claims = [q.claim_call(WORKER, size, 30_000) for _ in range(-(-(n + 1) // size))]
        instructions = server.count(
            lambda claims=claims, ids=ids: ids.extend(
                job_id.decode() for _, claimed in pipeline(claims) for job_id, _ in claimed))
        per_job[f"claim x{size}"] = instructions / len(ids)
        finishes = [q.finish_many_call(WORKER, [(i, b"null") for i in ids[k:k + size]])
                    for k in range(0, len(ids), size)]
        codes: list[int] = []
        instructions = server.count(lambda finishes=finishes, codes=codes: codes.extend(
            code for reply in pipeline(finishes) for code in reply))
        assert codes == [1] * len(ids), "a finish was refused"
        per_job[f"finish x{size}"] = instructions / len(ids)
        q.enqueue_many([("bench.noop", (), {})] * (n + 1))  # again, for the next batch size
    per_job.update(measure_trip(server, q, n, pipeline))
    return per_job


def measure_trip(server: CallgrindRedis, q: Queue, n: int,
                 pipeline: Callable[[list[Any]], list[Any]]) -> dict[str, float]:
    """The scripts of n trips to idle workers, phase by phase: n workers offer to take a job
    (not counted); each enqueue hands its job to one of them; a client waits on each (WATCH,
    not counted); each worker finishes its job and offers again."""
    r, k = server.server.client, q.keys
    r.flushall()
    for s in scripts.ALL_SCRIPTS:
        r.script_load(s.source)
    pubsub = r.pubsub()  # a receiver for the hand-off messages, as a worker subscribes
    pubsub.psubscribe(k.handoff("*"))
    pubsub.get_message(timeout=10)  # subscribed
    pipeline([q.offer_call(f"{WORKER}-{i}", 30_000, 60_000) for i in range(n)])
    prepared = [q.prepare("bench.noop") for _ in range(n)]
    replies: list[Any] = []
    handed = server.count(lambda: replies.extend(pipeline([p.call for p in prepared])))
    assert all(reply[1] == b"started" for reply in replies), "a job was not handed off"
    pipeline([Call(scripts.WATCH_SCRIPT, [k.job(p.id), k.done(p.id)], []) for p in prepared])
    owners = [r.hget(k.job(p.id), "worker") for p in prepared]
    finishes = [q.finish_many_call(owner.decode(), [(p.id, b"null")], offer=(30_000, 60_000))
                for owner, p in zip(owners, prepared)]
    codes: list[list[int]] = []
    finished = server.count(lambda: codes.extend(pipeline(finishes)))
    assert codes == [[1, 1]] * n, "a finish was refused, or made no offer"
    pubsub.close()
    return {"hand-off": handed / n, "finish waited": finished / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="jobs (default 2,000)")
    ap.add_argument("--batch", type=int, default=50,
                    help="jobs per claim and per finish call in the batched phases (default 50)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    args = ap.parse_args()
    if not shutil.which(args.valgrind) or not shutil.which("callgrind_control"):
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory(prefix="redisq-cost-") as tmp:
        server = CallgrindRedis(args.redis_server, args.valgrind, Path(tmp))
        try:
            version = server.server.version
            per_job = measure(server, args.n, args.batch)
        finally:
            server.close()
    print(f"Redis server instructions per job (redis-server {version}, callgrind, "
          f"{args.n:,} jobs):")
    for phase, value in per_job.items():
        print(f"  {phase:<12} {value:>10,.0f}")


if __name__ == "__main__":
    main()
