"""Side-by-side benchmark of django-redisq and other Redis job queues.

Usage::

    python bench/run.py                      # every installed system, 3 repetitions
    python bench/run.py --quick              # one repetition
    python bench/run.py --systems redisq,rq --scenarios E1,D1,L1
    python bench/run.py --profile            # pyinstrument profiles of our E1 and D1 runs
    python bench/run.py --report bench/results/<stamp>.json   # re-render .md and .png

The script starts its own ``redis-server`` on a free loopback port (no persistence, its own
temporary directory) and stops it by PID at the end. Every measurement runs in fresh
subprocesses (``bench/child.py``) after ``FLUSHALL`` and ``CONFIG RESETSTAT``; children report
READY once set up and are timed from the parent's GO line, so interpreter start-up and imports
are not counted. Within each repetition the systems alternate (the order rotates between
repetitions). Every subprocess has a timeout and runs in its own process group, which is ended
when its measurement ends; a failed run is reported with its system and scenario and the others
go on.

Scenarios (N = 10,000 unless said otherwise):

* E1  enqueue N no-op jobs one by one from one client.
* E2  the same through the system's bulk or concurrent API (ours: ``enqueue_many`` in chunks
      of 500; rq ``enqueue_many``; streaq ``enqueue_many``; arq and saq ``asyncio.gather`` of
      100 at a time; dramatiq and huey have none: n/a).
* D1  drain N pre-enqueued no-op jobs with one worker process; D2 with two. Ours has a sync
      and an async no-op row. Systems with a burst mode (ours, rq, arq, streaq) run in it and
      are timed until the last process exits; dramatiq, huey and saq (whose burst mode needs a
      dequeue timeout that would add idle time) count finished jobs in-process (after ack or
      after the result is written) in a small shared file, so no Redis polling is added.
* S1  2,000 jobs sleeping 10 ms (``asyncio.sleep`` in async systems, ``time.sleep`` in sync
      ones), one worker process, at the system's default concurrency and at 10.
* L1  200 sequential enqueue-and-wait-for-result trips to an idle worker after 5 warm-ups
      (at most 20 s of trips); median and p95. Each system's own way to wait for a result.
* I1  commands per second sent by one idle worker over 10 s (5 s with ``--quick``).
* R1  Redis commands and round trips per job, enqueue side (from E1) and worker side (from
      D1): INFO commandstats calls (commands run inside Lua scripts or functions included)
      and ``total_reads_processed`` (one read per request or pipeline: round trips).
* P1  the floor: raw redis-py LPUSH one by one -> BRPOP in another process (items/s), and a
      PING round trip (ms).

Peers run at their defaults. Extra rows, labelled "tuned", change one documented knob: arq
``poll_delay=0.01`` (worker and result polling), dramatiq ``dramatiq_queue_prefetch=100``, huey
``notify_result=True``. Library logging stays at WARNING everywhere.

Output: a Markdown table printed and written with the raw JSON to
``bench/results/<timestamp>.{md,json}`` plus a PNG bar chart of jobs/s per scenario (needs
matplotlib; skipped without it). ``--quick --systems redisq`` needs only the base package.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
RESULTS = HERE / "results"

N_JOBS = 10_000
N_SLEEP = 2_000
CHUNK = 500
L1_TRIPS, L1_WARMUP, L1_BUDGET = 200, 5, 20.0
READY_TIMEOUT = 180.0  # a loaded machine can take long to start an interpreter
RUN_TIMEOUT = 600.0  # rq's forking worker needs minutes for D2 on a small machine
SCENARIOS = ("E1", "E2", "D1", "D2", "S1", "L1", "I1", "R1", "P1")


# -- what runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    key: str  # row name
    system: str  # adapter name
    label: str
    scenarios: tuple[str, ...]
    mode: str = "sync"  # job body: sync or async
    default_conc: int = 10
    opts: dict[str, Any] = field(default_factory=dict, hash=False)
    hook: bool = False  # end of a drain detected in-process (no burst mode)


ALL = ("E1", "E2", "D1", "D2", "S1", "L1", "I1")
VARIANTS = [
    Variant("redisq", "redisq", "django-redisq (engine, sync job)", ALL),
    Variant("redisq-async", "redisq", "django-redisq (engine, async job)",
            ("D1", "D2", "S1", "L1"), mode="async"),
    Variant("redisq-django", "redisq", "django-redisq (Django @job.delay)", ("E1", "E2"),
            opts={"django": True}),
    Variant("redisq-rqworker", "redisq", "django-redisq (rqworker, sync job)",
            ("D1", "D2", "S1", "L1", "I1"),
            opts={"rqworker": True}),
    Variant("redisq-rqworker-async", "redisq", "django-redisq (rqworker, async job)",
            ("D1", "D2", "S1", "L1"), mode="async", opts={"rqworker": True}),
    Variant("rq", "rq", "rq (forking Worker)", ALL, default_conc=1),
    Variant("rq-simple", "rq", "rq (SimpleWorker)", ("D1", "D2", "S1", "L1", "I1"),
            default_conc=1, opts={"simple": True}),
    Variant("arq", "arq", "arq (defaults)", ALL, mode="async"),
    Variant("arq-tuned", "arq", "arq tuned: poll_delay=0.01", ("D1", "D2", "S1", "L1", "I1"),
            mode="async", opts={"tuned": True}),
    Variant("saq", "saq", "saq (defaults)", ALL, mode="async", hook=True),
    Variant("streaq", "streaq", "streaq (defaults)", ALL, mode="async", default_conc=16),
    Variant("dramatiq", "dramatiq", "dramatiq (Redis broker, defaults)",
            ("E1", "E2", "D1", "D2", "S1", "L1", "I1"), default_conc=8, hook=True),
    Variant("dramatiq-tuned", "dramatiq", "dramatiq tuned: prefetch=100", ("D1", "D2", "S1"),
            default_conc=8, hook=True, opts={"prefetch": 100}),
    Variant("huey", "huey", "huey (RedisHuey defaults)",
            ("E1", "E2", "D1", "D2", "S1", "L1", "I1"), default_conc=1, hook=True),
    Variant("huey-tuned", "huey", "huey tuned: notify_result=True", ("L1",), default_conc=1,
            hook=True, opts={"notify_result": True}),
]
MODULES = {"redisq": "django_redisq", "rq": "rq", "arq": "arq", "saq": "saq",
           "streaq": "streaq", "dramatiq": "dramatiq", "huey": "huey"}
DISTS = {"redisq": "django-redisq", "rq": "rq", "arq": "arq", "saq": "saq", "streaq": "streaq",
         "dramatiq": "dramatiq", "huey": "huey"}


@dataclass(frozen=True)
class Case:
    id: str  # column name
    scenario: str
    unit: str
    higher_is_better: bool = True
    conc10: bool = False


CASES = [
    Case("E1", "E1", "jobs/s"),
    Case("E2", "E2", "jobs/s"),
    Case("D1", "D1", "jobs/s"),
    Case("D2", "D2", "jobs/s"),
    Case("S1", "S1", "jobs/s"),
    Case("S1@10", "S1", "jobs/s", conc10=True),
    Case("L1", "L1", "ms", higher_is_better=False),
    Case("I1", "I1", "cmds/s", higher_is_better=False),
]


class Failed(Exception):
    pass


class NA(Exception):
    pass


# -- processes ----------------------------------------------------------------------------------
LIVE: set[Proc] = set()


class Proc:
    """A child in its own process group, talking line by line."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.spec = spec
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed in kill()
        self.p = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            start_new_session=True, cwd=str(HERE), env=_child_env(),
        )
        LIVE.add(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.finished = False

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def name(self) -> str:
        return f"{self.spec['variant']} {self.spec['role']}#{self.spec.get('index', 0)}"

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise Failed(f"{self.name()}: no {tag} within {timeout:g} s{self.tail()}") from None
        if line is None:
            self.p.wait(timeout=5)
            raise Failed(f"{self.name()}: exited (code {self.p.returncode}) before {tag}"
                         f"{self.tail()}")
        word, _, rest = line.partition(" ")
        payload = json.loads(rest) if rest else {}
        if word == "NA":
            raise NA(payload.get("reason", "not applicable"))
        if word == "ERROR":
            raise Failed(f"{self.name()}: error in {payload.get('where')}:\n"
                         f"{payload.get('traceback', '').rstrip()}")
        if word != tag:
            raise Failed(f"{self.name()}: expected {tag}, got {line[:200]!r}")
        if tag == "DONE":
            self.finished = True
        return payload

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.p.stdin.write((line + "\n").encode())
            self.p.stdin.flush()

    def tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            self._err.flush()
            text = self.log.read_text(errors="replace")[-n:].strip()
            if text:
                return "\n  stderr: ..." + text.replace("\n", "\n  ")
        return ""

    def kill(self) -> None:
        """End the child's whole process group. The measurement is over, so nothing needs a
        graceful shutdown: a child that reported DONE may leave by itself, the rest are
        killed (with any processes they forked)."""
        if self.finished and self.p.poll() is None:
            self.send("EXIT")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout=0.5)
        if self.p.returncode is None:  # not reaped yet, so its group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout=5)
        for s in (self.p.stdin, self.p.stdout):
            with contextlib.suppress(OSError):
                if s is not None:
                    s.close()
        self._err.close()
        LIVE.discard(self)


def kill_all() -> None:
    for p in list(LIVE):
        p.kill()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


# -- redis-server -------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a free loopback port, in ``workdir``/redis, no persistence.
    ``prefix`` runs it under another program (bench/redis_cost.py: valgrind), which may need
    ``start_timeout`` seconds to start it."""

    def __init__(self, binary: str, workdir: Path, prefix: Sequence[str] = (),
                 start_timeout: float = 10) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.log = self.dir / "redis.log"
        self.p = subprocess.Popen(
            [*prefix, binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.log),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd=self.dir,
        )
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (see {self.log})") from None
                time.sleep(0.05)  # start-up: polled with a deadline
        self.version = self.client.info("server")["redis_version"]

    def fresh(self) -> None:
        self.client.flushall()
        self.client.config_resetstat()

    def snap(self) -> dict[str, Any]:
        info = self.client.info("all")
        return {
            "t": time.monotonic(),
            "reads": int(info["total_reads_processed"]),
            "total": int(info["total_commands_processed"]),
            "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "cmds": {k[8:]: int(v["calls"]) for k, v in info.items()
                     if k.startswith("cmdstat_")},
        }

    def cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.p.poll() is None:
            self.p.terminate()  # by PID: this server only
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)


OWN_COMMANDS = {"info", "config|resetstat", "config", "flushall"}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    cmds = {k: v - a["cmds"].get(k, 0) for k, v in b["cmds"].items()}
    cmds = {k: v for k, v in cmds.items() if v and k not in OWN_COMMANDS}
    return {"commands": sum(cmds.values()), "reads": b["reads"] - a["reads"] - 1,
            "cpu": b["cpu"] - a["cpu"],
            "seconds": b["t"] - a["t"], "by_command": dict(sorted(cmds.items(),
                                                                  key=lambda kv: -kv[1]))}


# -- one measurement ----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, server: RedisServer, workdir: Path) -> None:
        self.args = args
        self.server = server
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.seq = 0

    def spec(self, v: Variant, role: str, **kw: Any) -> dict[str, Any]:
        base = {"system": v.system, "variant": v.key, "variant_opts": v.opts, "role": role,
                "url": self.server.url, "mode": v.mode, "job": "noop", "n": N_JOBS,
                "conc": None, "bulk": False, "chunk": CHUNK, "burst": False,
                "run_timeout": RUN_TIMEOUT, "trips": L1_TRIPS, "warmup": L1_WARMUP,
                "max_seconds": L1_BUDGET}
        if v.opts.get("django"):
            base["django"] = True
        base.update(kw)
        return base

    def start(self, spec: dict[str, Any]) -> Proc:
        self.seq += 1
        name = f"{self.seq:04d}-{spec['variant']}-{spec['role']}{spec.get('index', 0)}.log"
        return Proc(spec, self.logs / name)

    def run_case(self, v: Variant, case: Case) -> dict[str, Any]:
        procs: list[Proc] = []
        try:
            self.server.fresh()
            s = case.scenario
            if s in ("E1", "E2"):
                return self._enqueue(v, s == "E2", procs)
            if s in ("D1", "D2"):
                return self._drain(v, 1 if s == "D1" else 2, "noop", self.args.n, None, procs)
            if s == "S1":
                conc = 10 if case.conc10 else None
                return self._drain(v, 1, "sleep", self.args.sleep_jobs, conc, procs)
            if s == "L1":
                return self._latency(v, procs)
            if s == "I1":
                return self._idle(v, procs)
            raise ValueError(s)
        finally:
            for p in procs:
                p.kill()

    def _enqueue(self, v: Variant, bulk: bool, procs: list[Proc]) -> dict[str, Any]:
        profile = None
        if self.args.profile and v.system == "redisq":
            profile = str(self.args.outdir / f"{self.args.stamp}-profile-{v.key}-"
                          f"{'E2' if bulk else 'E1'}")
        p = self.start(self.spec(v, "enqueue", bulk=bulk, n=self.args.n, profile=profile))
        procs.append(p)
        p.expect("READY", READY_TIMEOUT)
        a = self.server.snap()
        p.send("GO")
        res = p.expect("DONE", RUN_TIMEOUT)
        b = self.server.snap()
        secs = res["t_end"] - res["t_go"]
        n = self.args.n
        d = delta(a, b)
        return {"seconds": secs, "value": n / secs, "jobs": n, **_per_job(d, n)}

    def _pre_enqueue(self, v: Variant, n: int, job: str, procs: list[Proc]) -> None:
        spec = self.spec(v, "enqueue", n=n, job=job, bulk=True)
        p = self.start(spec)
        procs.append(p)
        try:
            p.expect("READY", READY_TIMEOUT)
        except NA:  # no bulk API: one by one
            p.kill()
            p = self.start({**spec, "bulk": False})
            procs.append(p)
            p.expect("READY", READY_TIMEOUT)
        p.send("GO")
        p.expect("DONE", RUN_TIMEOUT)
        p.kill()

    def _drain(self, v: Variant, nprocs: int, job: str, n: int, conc: int | None,
               procs: list[Proc]) -> dict[str, Any]:
        if conc is not None and conc == v.default_conc:
            raise SameAsDefault()
        shared = None
        if v.hook:
            shared = self.workdir / f"count-{self.seq}.bin"
            shared.write_bytes(b"\0" * 8 * nprocs)
        workers = [
            self.start(self.spec(v, "worker", job=job, n=n, conc=conc, burst=not v.hook,
                                 procs=nprocs, index=i,
                                 shared=str(shared) if shared else None,
                                 profile=self._profile_path(v, job, nprocs)))
            for i in range(nprocs)
        ]
        procs.extend(workers)
        self._pre_enqueue(v, n, job, procs)
        for w in workers:
            w.expect("READY", READY_TIMEOUT)
        a = self.server.snap()
        t0 = time.monotonic()
        for w in workers:
            w.send("GO")
        ends, processed, total = [], 0, 0
        deadline = time.monotonic() + RUN_TIMEOUT
        if v.hook:  # the first child to see the shared count reach n reports for all
            res = _first_done(workers, deadline)
            ends.append(res["t_end"])
            processed = n
        else:
            for w in workers:
                res = w.expect("DONE", max(1.0, deadline - time.monotonic()))
                ends.append(res["t_end"])
                processed += int(res.get("processed") or 0)
                total = max(total, int(res.get("processed_total") or 0))
        b = self.server.snap()
        processed = processed or total
        if processed != n:
            raise Failed(f"{v.key}: the workers ran {processed} of {n} jobs")
        secs = max(ends) - t0
        return {"seconds": secs, "value": n / secs, "jobs": n, **_per_job(delta(a, b), n)}

    def _profile_path(self, v: Variant, job: str, nprocs: int) -> str | None:
        if not self.args.profile or v.system != "redisq" or job != "noop" or nprocs != 1:
            return None
        return str(self.args.outdir / f"{self.args.stamp}-profile-{v.key}-D1")

    def _latency(self, v: Variant, procs: list[Proc]) -> dict[str, Any]:
        w = self.start(self.spec(v, "worker", job="echo"))
        c = self.start(self.spec(v, "latency", job="echo"))
        procs += [w, c]
        w.expect("READY", READY_TIMEOUT)
        c.expect("READY", READY_TIMEOUT)
        w.send("GO")
        time.sleep(1.0)  # let the worker connect and go idle
        a = self.server.snap()
        c.send("GO")
        res = c.expect("DONE", RUN_TIMEOUT)
        b = self.server.snap()
        lat = res["latencies_ms"]
        trips = len(lat) + L1_WARMUP
        return {"value": statistics.median(lat), "p95": _pct(lat, 95), "trips": len(lat),
                **_per_job(delta(a, b), trips)}

    def _idle(self, v: Variant, procs: list[Proc]) -> dict[str, Any]:
        w = self.start(self.spec(v, "worker"))
        procs.append(w)
        w.expect("READY", READY_TIMEOUT)
        w.send("GO")
        time.sleep(1.5)  # start-up traffic is not idle traffic
        a = self.server.snap()
        time.sleep(self.args.idle_seconds)
        b = self.server.snap()
        if w.p.poll() is not None:
            raise Failed(f"{v.key}: the idle worker exited{w.tail()}")
        d = delta(a, b)
        return {"value": d["commands"] / d["seconds"], "reads_per_s": d["reads"] / d["seconds"],
                "by_command": d["by_command"], "seconds": d["seconds"]}

    def floor(self) -> dict[str, Any]:
        v = Variant("floor", "floor", "Redis floor (raw redis-py)", ("P1",))
        procs: list[Proc] = []
        try:
            self.server.fresh()
            pop = self.start(self.spec(v, "floor_pop", n=self.args.n))
            push = self.start(self.spec(v, "floor_push", n=self.args.n))
            procs += [pop, push]
            pop.expect("READY", READY_TIMEOUT)
            push.expect("READY", READY_TIMEOUT)
            t0 = time.monotonic()
            pop.send("GO")
            push.send("GO")
            res = pop.expect("DONE", RUN_TIMEOUT)
            pp = self.start(self.spec(v, "ping", n=2000))
            procs.append(pp)
            pp.expect("READY", READY_TIMEOUT)
            pp.send("GO")
            lat = pp.expect("DONE", RUN_TIMEOUT)["latencies_ms"]
            return {"value": self.args.n / (res["t_end"] - t0),
                    "ping_ms": statistics.median(lat), "ping_p95_ms": _pct(lat, 95)}
        finally:
            for p in procs:
                p.kill()


class SameAsDefault(Exception):
    """S1 at concurrency 10 for a system whose default is 10: the S1 figure stands for both."""


def _first_done(workers: list[Proc], deadline: float) -> dict[str, Any]:
    while True:
        for w in workers:
            try:
                line = w.lines.get(timeout=0.01)
            except queue.Empty:
                continue
            if line is None:
                raise Failed(f"{w.name()}: exited before DONE{w.tail()}")
            word, _, rest = line.partition(" ")
            payload = json.loads(rest) if rest else {}
            if word == "DONE":
                w.finished = True
            if word == "DONE" and payload.get("complete"):
                return payload  # type: ignore[no-any-return]
            if word == "ERROR":
                raise Failed(f"{w.name()}: {payload.get('traceback', '').rstrip()}")
        if time.monotonic() > deadline:
            raise Failed(f"no worker reported the last job within {RUN_TIMEOUT:g} s"
                         f"{workers[0].tail()}")


def _per_job(d: dict[str, Any], jobs: int) -> dict[str, Any]:
    return {"cmds_per_job": d["commands"] / jobs, "reads_per_job": d["reads"] / jobs,
            "redis_cpu_us_per_job": d["cpu"] * 1e6 / jobs, "by_command": d["by_command"]}


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# -- the run ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    ap.add_argument("--systems", default="", help="comma list of systems or rows "
                    f"({', '.join(MODULES)}); default all")
    ap.add_argument("--scenarios", default="", help=f"comma list of {', '.join(SCENARIOS)}")
    ap.add_argument("--n", type=int, default=N_JOBS, help="jobs for E and D scenarios")
    ap.add_argument("--sleep-jobs", type=int, default=N_SLEEP, help="jobs for S1")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="I1 window (10 s, also with --quick: an idle worker of ours beats "
                    "every 2 x HEARTBEAT, 10 s by default)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--outdir", type=Path, default=RESULTS)
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="re-render the Markdown and the chart of an earlier run's JSON")
    ap.add_argument("--profile", action="store_true",
                    help="profile our E1/E2 enqueuer and D1 workers with pyinstrument "
                    "(<stamp>-profile-*.html/.txt next to the results)")
    args = ap.parse_args(argv)
    args.reps = args.reps or (1 if args.quick or args.profile else 3)
    if args.profile:
        if importlib.util.find_spec("pyinstrument") is None:
            ap.error("--profile needs pyinstrument (pip install pyinstrument)")
        args.systems = args.systems or "redisq"
        args.scenarios = args.scenarios or "E1,D1"
    args.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return args


def select(args: argparse.Namespace) -> tuple[list[Variant], list[Case], bool, list[str]]:
    wanted = {s.strip() for s in args.systems.split(",") if s.strip()}
    known = set(MODULES) | {v.key for v in VARIANTS}
    if wanted - known:
        sys.exit(f"unknown system(s): {', '.join(sorted(wanted - known))}; "
                 f"choose from {', '.join(sorted(known))}")
    variants = [v for v in VARIANTS if not wanted or v.system in wanted or v.key in wanted]
    scen = {s.strip().upper() for s in args.scenarios.split(",") if s.strip()}
    if scen - set(SCENARIOS):
        sys.exit(f"unknown scenario(s): {', '.join(sorted(scen - set(SCENARIOS)))}; "
                 f"choose from {', '.join(SCENARIOS)}")
    if "R1" in scen:  # derived from E1 (enqueue side) and D1 (worker side)
        scen |= {"E1", "D1"}
    cases = [c for c in CASES if not scen or c.scenario in scen]
    floor = not scen or "P1" in scen
    missing = []
    for system, module in MODULES.items():
        if any(v.system == system for v in variants) and not importlib.util.find_spec(module):
            missing.append(system)
    return variants, cases, floor, missing


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "redis-py": importlib.metadata.version("redis")}
    for system, dist in DISTS.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[system] = importlib.metadata.version(dist)
    return out


def rerender(path: Path) -> int:
    """Write <run>.md and <run>.png again from <run>.json (e.g. after the report changed)."""
    data = json.loads(path.read_text())
    meta, raw = data["meta"], data["runs"]
    seen = {r["row"] for r in raw} | {n["row"] for n in data["notes"]}
    variants = [v for v in VARIANTS if v.key in seen]
    ids = {r["case"] for r in raw} | {n["case"] for n in data["notes"]}
    cases = [c for c in CASES if c.id in ids]
    notes = {(n["row"], n["case"]): n["note"] for n in data["notes"]}
    report = build_report(meta, variants, cases, raw, notes, data["floor"])
    path.with_suffix(".md").write_text(report)
    chart(path.with_suffix(".png"), variants, cases, raw)
    print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return rerender(args.report)
    variants, cases, floor, missing = select(args)
    args.outdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="redisq-bench-"))
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    server = RedisServer(args.redis_server, workdir)
    raw: list[dict[str, Any]] = []
    notes: dict[tuple[str, str], str] = {}
    floor_runs: list[dict[str, Any]] = []

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench = Bench(args, server, workdir)
        print(f"redis-server {server.version} on port {server.port}; {args.reps} repetition(s); "
              f"{len(variants)} rows; results in {args.outdir}", flush=True)
        for v in variants:
            if v.system in missing:
                for c in cases:
                    if c.scenario in v.scenarios:
                        notes[(v.key, c.id)] = "not installed"
        for rep in range(args.reps):
            for case in cases:
                rows = [v for v in variants if case.scenario in v.scenarios
                        and v.system not in missing]
                if not rows:
                    continue
                shift = rep % len(rows)
                for v in rows[shift:] + rows[:shift]:
                    if notes.get((v.key, case.id)) in ("n/a", "same"):
                        continue
                    _one(bench, v, case, rep, raw, notes)
            if floor:
                try:
                    r = bench.floor()
                    floor_runs.append(r)
                    print(f"  [rep {rep + 1}] P1 floor: {r['value']:,.0f} items/s, "
                          f"PING {r['ping_ms']:.3f} ms", flush=True)
                except Exception as exc:
                    print(f"  [rep {rep + 1}] P1 floor FAILED: {exc}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; writing what was measured", flush=True)
    finally:
        kill_all()
        server.stop()
    elapsed = time.monotonic() - started
    meta = {"stamp": args.stamp, "redis": server.version, "versions": versions(),
            "cpus": os.cpu_count(), "platform": platform.platform(), "reps": args.reps,
            "n": args.n, "sleep_jobs": args.sleep_jobs, "idle_seconds": args.idle_seconds,
            "elapsed_s": elapsed, "argv": sys.argv[1:] if argv is None else argv,
            "load_at_start": load_at_start, "load_at_end": os.getloadavg()[0]}
    report = build_report(meta, variants, cases, raw, notes, floor_runs)
    md_path = args.outdir / f"{args.stamp}.md"
    md_path.write_text(report)
    (args.outdir / f"{args.stamp}.json").write_text(json.dumps(
        {"meta": meta, "runs": raw, "floor": floor_runs,
         "notes": [{"row": k[0], "case": k[1], "note": n} for k, n in notes.items()]},
        indent=1, default=str))
    charted = not args.no_chart and chart(args.outdir / f"{args.stamp}.png", variants, cases,
                                          raw)
    print()
    print(report)
    print(f"written: {md_path} (+ .json{', .png' if charted else ''}); elapsed {elapsed:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)
    failures = [r for r in raw if r.get("error")]
    return 1 if failures and not any(r.get("value") for r in raw) else 0


def cpu_marks(server: RedisServer) -> tuple[float, float, float] | None:
    """(time, machine busy CPU seconds, CPU seconds of this benchmark: parent, reaped children,
    redis-server). Their differences tell how much CPU other processes took meanwhile."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
            resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + server.cpu()
    except (OSError, ValueError, IndexError, redis.RedisError):
        return None
    return time.monotonic(), busy, ours


def other_cpus(a: tuple[float, float, float] | None,
               b: tuple[float, float, float] | None) -> float | None:
    """CPUs' worth of work done by processes outside the benchmark between two marks."""
    if a is None or b is None or b[0] - a[0] <= 0:
        return None
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


def _one(bench: Bench, v: Variant, case: Case, rep: int, raw: list[dict[str, Any]],
         notes: dict[tuple[str, str], str]) -> None:
    t = time.monotonic()
    entry: dict[str, Any] = {"row": v.key, "case": case.id, "rep": rep,
                             "load_before": os.getloadavg()[0]}
    try:
        mark = cpu_marks(bench.server)
        entry.update(bench.run_case(v, case))
        entry["other_cpus"] = other_cpus(mark, cpu_marks(bench.server))
        raw.append(entry)
        extra = f" p95 {entry['p95']:.2f}" if "p95" in entry else ""
        other = ("" if entry["other_cpus"] is None
                 else f", other processes {entry['other_cpus']:.2f} CPUs")
        print(f"  [rep {rep + 1}] {case.id:6} {v.key:15} {entry['value']:12,.2f} {case.unit}"
              f"{extra}  ({time.monotonic() - t:.1f} s{other})", flush=True)
    except NA as exc:
        notes[(v.key, case.id)] = "n/a"
        entry["na"] = str(exc)
        raw.append(entry)
        print(f"  [rep {rep + 1}] {case.id:6} {v.key:15} n/a: {exc}", flush=True)
    except SameAsDefault:
        notes[(v.key, case.id)] = "same"
    except Exception as exc:
        msg = str(exc) if isinstance(exc, Failed) else traceback.format_exc()
        entry["error"] = msg
        raw.append(entry)
        print(f"  [rep {rep + 1}] {case.id:6} {v.key:15} FAILED ({v.system}, {case.id}): "
              f"{msg.strip()[:1500]}", flush=True)
    finally:
        kill_all()


# -- report -------------------------------------------------------------------------------------
def summarize(raw: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in raw:
        if "value" in r:
            groups.setdefault((r["row"], r["case"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        vals = [r["value"] for r in rs]
        s: dict[str, Any] = {"n": len(rs), "median": statistics.median(vals),
                             "min": min(vals), "max": max(vals)}
        for f in ("seconds", "cmds_per_job", "reads_per_job", "redis_cpu_us_per_job", "p95",
                  "reads_per_s", "trips"):
            xs = [r[f] for r in rs if f in r]
            if xs:
                s[f] = statistics.median(xs)
                s[f + "_min"] = min(xs)
        best = min(rs, key=lambda r: r.get("seconds", 0) or -r["value"])
        s["by_command"] = rs[len(rs) // 2].get("by_command") or best.get("by_command")
        out[key] = s
    return out


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    if unit == "ms" or abs(x) < 10:
        return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3f}"
    return f"{x:,.0f}"


def build_report(meta: dict[str, Any], variants: list[Variant], cases: list[Case],
                 raw: list[dict[str, Any]], notes: dict[tuple[str, str], str],
                 floor_runs: list[dict[str, Any]]) -> str:
    summ = summarize(raw)
    for v in variants:  # S1 at the default concurrency stands for c=10 when they are the same
        if v.default_conc == 10 and (v.key, "S1") in summ and (v.key, "S1@10") not in summ:
            summ[(v.key, "S1@10")] = {**summ[(v.key, "S1")], "same": True}
    errors = {(r["row"], r["case"]) for r in raw if r.get("error")}
    labels = {v.key: v for v in variants}
    vers = meta["versions"]
    lines = [
        f"# Queue benchmark {meta['stamp']}",
        "",
        f"redis-server {meta['redis']} (loopback, no persistence), Python {vers['python']}, "
        f"redis-py {vers['redis-py']}, {meta['cpus']} CPUs, {meta['platform']}. "
        f"{meta['reps']} repetition(s), N = {meta['n']:,} (S1: {meta['sleep_jobs']:,}); "
        f"elapsed {meta['elapsed_s']:.0f} s.",
        "Versions: " + ", ".join(f"{k} {vers[k]}" for k in DISTS if k in vers) + ".",
        "",
        _load_note(meta, raw),
        "",
        "Median of the repetitions. *vs best peer*: this row's figure against the best other "
        "system's in the same run (> 1 is better; for ms and cmds/s lower is better).",
        "",
    ]

    def cell(row: str, cid: str, field_: str = "median", unit: str = "") -> str:
        s = summ.get((row, cid))
        if s is not None and field_ in s:
            return _fmt(s[field_], unit) + (" (= S1)" if s.get("same") else "")
        if (row, cid) in notes:
            n = notes[(row, cid)]
            if n == "same":
                s = summ.get((row, "S1"))
                return f"= S1 ({_fmt(s['median'])})" if s else "= S1"
            return n
        if (row, cid) in errors:
            return "failed"
        return ""

    # summary matrix
    head = ["system"]
    for c in cases:
        if c.id == "L1":
            head += ["L1 p50 ms", "L1 p95 ms"]
        elif c.id == "I1":
            head.append("I1 idle cmds/s")
        elif c.id.startswith("S1"):
            head.append(f"{c.id} jobs/s" if c.conc10 else "S1 (default c) jobs/s")
        else:
            head.append(f"{c.id} jobs/s")
    has_r1 = any(c.id == "E1" for c in cases) and any(c.id == "D1" for c in cases)
    if has_r1:
        head += ["R1 enq cmds/job", "R1 worker cmds/job"]
    lines += ["## Summary", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for v in variants:
        row = [f"{v.label}"]
        for c in cases:
            if c.id == "L1":
                row += [cell(v.key, "L1", unit="ms"), cell(v.key, "L1", "p95", "ms")]
            else:
                row.append(cell(v.key, c.id, unit=c.unit))
        if has_r1:
            row += [cell(v.key, "E1", "cmds_per_job"), cell(v.key, "D1", "cmds_per_job")]
        if any(x for x in row[1:]):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # details
    for c in cases:
        rows = [v for v in variants if (v.key, c.id) in summ]
        if not rows:
            continue
        peers = [summ[(v.key, c.id)]["median"] for v in rows if v.system != "redisq"]
        best = (max(peers) if c.higher_is_better else min(peers)) if peers else None
        best_row = next((v.label for v in rows if v.system != "redisq"
                         and summ[(v.key, c.id)]["median"] == best), None)
        lines += [f"### {c.id}: {_case_title(c)}", ""]
        if c.scenario == "L1":
            cols = ["system", "p50 ms (median)", "p50 ms (min)", "p95 ms", "trips",
                    "cmds/trip", "round trips/trip", "vs best peer"]
        elif c.scenario == "I1":
            cols = ["system", "cmds/s (median)", "cmds/s (min)", "round trips/s",
                    "commands seen", "vs best peer"]
        else:
            cols = ["system", "median s", "min s", "jobs/s (median)", "jobs/s (best)",
                    "cmds/job", "round trips/job", "Redis CPU µs/job", "vs best peer"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for v in rows:
            s = summ[(v.key, c.id)]
            ratio = ""
            if best:
                r = s["median"] / best if c.higher_is_better else (
                    best / s["median"] if s["median"] else float("inf"))
                ratio = f"{r:.2f}x"
            if c.scenario == "L1":
                vals = [_fmt(s["median"], "ms"), _fmt(s["min"], "ms"), _fmt(s.get("p95"), "ms"),
                        f"{s.get('trips', 0):.0f}", _fmt(s.get("cmds_per_job")),
                        _fmt(s.get("reads_per_job")), ratio]
            elif c.scenario == "I1":
                top = ", ".join(f"{k} {n}" for k, n in list((s.get("by_command") or {})
                                                             .items())[:4])
                vals = [_fmt(s["median"]), _fmt(s["min"]), _fmt(s.get("reads_per_s")), top,
                        ratio]
            else:
                vals = [f"{s['seconds']:.3f}", f"{s['seconds_min']:.3f}", _fmt(s["median"]),
                        _fmt(s["max"]), _fmt(s.get("cmds_per_job")),
                        _fmt(s.get("reads_per_job")), _fmt(s.get("redis_cpu_us_per_job")),
                        ratio]
            same = " (= S1: c=10 is its default)" if s.get("same") else ""
            lines.append(f"| {v.label}{same} | " + " | ".join(vals) + " |")
        if best_row:
            lines.append(f"\nBest peer: {best_row}.")
        lines.append("")

    if has_r1:
        lines += ["### R1: Redis commands and round trips per job", "",
                  "Commands include those run inside Lua scripts and functions; round trips "
                  "are `total_reads_processed` (a pipeline is one); Redis CPU is the server's "
                  "`used_cpu_user + used_cpu_sys` over the run.", "",
                  "| system | enqueue cmds/job | enqueue round trips/job "
                  "| enqueue Redis CPU µs/job | worker cmds/job | worker round trips/job "
                  "| worker Redis CPU µs/job "
                  "| worker commands (D1, per job) |",
                  "|---|---|---|---|---|---|---|---|"]
        n = meta["n"]
        for v in variants:
            e, d = summ.get((v.key, "E1")), summ.get((v.key, "D1"))
            if not e and not d:
                continue
            top = ""
            if d and d.get("by_command"):
                top = ", ".join(f"{k} {c / n:.2f}" for k, c in
                                list(d["by_command"].items())[:6])
            lines.append(f"| {v.label} | {_fmt(e and e.get('cmds_per_job'))} | "
                         f"{_fmt(e and e.get('reads_per_job'))} | "
                         f"{_fmt(e and e.get('redis_cpu_us_per_job'))} | "
                         f"{_fmt(d and d.get('cmds_per_job'))} | "
                         f"{_fmt(d and d.get('reads_per_job'))} | "
                         f"{_fmt(d and d.get('redis_cpu_us_per_job'))} | {top} |")
        lines.append("")

    if floor_runs:
        vals = [r["value"] for r in floor_runs]
        pings = [r["ping_ms"] for r in floor_runs]
        lines += ["### P1: the Redis floor", "",
                  "| measure | median | min | max |", "|---|---|---|---|",
                  f"| LPUSH -> BRPOP between two processes, items/s | "
                  f"{_fmt(statistics.median(vals))} | {_fmt(min(vals))} | {_fmt(max(vals))} |",
                  f"| PING round trip, ms | {statistics.median(pings):.3f} | {min(pings):.3f} | "
                  f"{max(pings):.3f} |", ""]

    problems = [r for r in raw if r.get("error")]
    na = sorted({(k, n) for k, n in notes.items() if n in ("n/a", "not installed")})
    if problems or na:
        lines += ["## Not measured", ""]
        reasons = {(r["row"], r["case"]): r["na"] for r in raw if "na" in r}
        for (row, cid), n in na:
            why = reasons.get((row, cid), "")
            label = labels[row].label if row in labels else row
            lines.append(f"- {label}, {cid}: {n}{': ' + why if why else ''}")
        for r in problems:
            label = labels[r["row"]].label if r["row"] in labels else r["row"]
            lines.append(f"- {label}, {r['case']} (rep {r['rep'] + 1}): FAILED: "
                         f"{_gist(r['error'])}")
        lines.append("")
    return "\n".join(lines)


def _load_note(meta: dict[str, Any], raw: list[dict[str, Any]]) -> str:
    """The machine's 1-minute load average around the measurements: other processes running
    on the same CPUs make every figure slower and noisier."""
    loads = [r["load_before"] for r in raw if "load_before" in r]
    loads += [meta[k] for k in ("load_at_start", "load_at_end") if k in meta]
    if not loads:
        return ""
    cpus = meta["cpus"] or 1
    note = (f"1-minute load average before the measurements: {min(loads):.1f} to "
            f"{max(loads):.1f} ({cpus} CPUs).")
    others = sorted(r["other_cpus"] for r in raw if r.get("other_cpus") is not None)
    if others:
        med = statistics.median(others)
        note += (f" CPU taken by processes outside the benchmark during the measurements: "
                 f"median {med:.2f}, max {others[-1]:.2f} CPUs.")
        if med > 0.25 * cpus or others[-1] > 0.5 * cpus:
            note += (" **Other processes competed for the CPUs during this run: figures are "
                     "slower and noisier than on a quiet machine; compare rows within this run "
                     "(per-measurement figures are in the JSON, `other_cpus`).**")
    return note


def _gist(error: str) -> str:
    """First line of a failure, plus the exception line when a traceback follows."""
    text = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    if not text:
        return "?"
    first = text[0]
    exc = next((ln for ln in reversed(text) if not ln.startswith(("File ", "^", "~", "stderr"))
                and ":" in ln and not ln.startswith("...")), "")
    out = first if not exc or exc == first else f"{first} {exc}"
    return out[:300]


def _case_title(c: Case) -> str:
    return {
        "E1": "enqueue one by one",
        "E2": "bulk or concurrent enqueue",
        "D1": "drain no-op jobs, one worker process",
        "D2": "drain no-op jobs, two worker processes",
        "S1": "10 ms sleeping jobs, default concurrency",
        "S1@10": "10 ms sleeping jobs, concurrency 10",
        "L1": "enqueue-and-wait round trip to an idle worker",
        "I1": "idle worker traffic",
    }[c.id]


def chart(path: Path, variants: list[Variant], cases: list[Case],
          raw: list[dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return False
    summ = summarize(raw)
    for v in variants:  # S1 at the default concurrency stands for c=10 when they are the same
        if v.default_conc == 10 and (v.key, "S1") in summ:
            summ.setdefault((v.key, "S1@10"), summ[(v.key, "S1")])
    tp = [c for c in cases if c.unit == "jobs/s"
          and any((v.key, c.id) in summ for v in variants)]
    if not tp:
        return False
    counts = [sum((v.key, c.id) in summ for v in variants) for c in tp]
    fig, axes = plt.subplots(len(tp), 1, figsize=(9, 0.8 * len(tp) + 0.3 * sum(counts)),
                             squeeze=False, gridspec_kw={"height_ratios": counts})
    for ax, c in zip(axes[:, 0], tp):
        rows = [v for v in variants if (v.key, c.id) in summ]
        vals = [summ[(v.key, c.id)]["median"] for v in rows]
        colors = ["#c0392b" if v.system == "redisq" else "#7f8c8d" for v in rows]
        ax.barh([v.label for v in rows], vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{c.id}: {_case_title(c)} (jobs/s, median)", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        for y, x in enumerate(vals):
            ax.text(x, y, f" {x:,.0f}", va="center", fontsize=7)
        ax.set_xlim(0, max(vals) * 1.18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_all()
