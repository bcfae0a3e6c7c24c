"""One benchmark subprocess: ``python bench/child.py '<json spec>'``.

Protocol on stdout (the only lines written there; everything a library prints goes to
stderr): ``READY`` once set up, then the child waits for ``GO`` on stdin, runs the timed part
and writes ``DONE {json}``; it then waits for ``EXIT`` (or end of input) and leaves at once.
``NA {json}`` says the system cannot do what the scenario asks; ``ERROR {json}`` carries a
traceback. Times are ``time.monotonic()``, which is one system-wide clock on Linux, so the
parent can compare them across processes.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # stray prints from libraries land in the child's log, not in the protocol


def send(tag: str, payload: Any = None) -> None:
    PROTO.write(tag if payload is None else f"{tag} {json.dumps(payload)}")
    PROTO.write("\n")
    PROTO.flush()


def floor_plan(spec: dict[str, Any]) -> Any:
    """The Redis floor: raw redis-py, no queue library."""
    import redis
    from adapters import Plan

    r = redis.Redis.from_url(spec["url"])
    key, n = "bench:floor", spec["n"]

    def push() -> dict[str, Any]:
        for i in range(n):
            r.lpush(key, i)
        return {}

    def pop() -> dict[str, Any]:
        for _ in range(n):
            r.brpop([key], 0)
        return {"t_end": time.monotonic(), "processed": n}

    def ping() -> dict[str, Any]:
        for _ in range(200):
            r.ping()
        out = []
        for _ in range(spec["n"]):
            t0 = time.perf_counter()
            r.ping()
            out.append((time.perf_counter() - t0) * 1000)
        return {"latencies_ms": out}

    return Plan(r.ping, {"floor_push": push, "floor_pop": pop, "ping": ping}[spec["role"]])


def build(spec: dict[str, Any]) -> Any:
    if spec["role"] in ("floor_push", "floor_pop", "ping"):
        return floor_plan(spec)
    from adapters import ADAPTERS, Finish

    if spec.get("shared"):
        spec["finish"] = Finish(spec["shared"], spec["index"], spec["procs"], spec["n"])
    adapter = ADAPTERS[spec["system"]](spec)
    return {"enqueue": adapter.enqueuer, "worker": adapter.worker,
            "latency": adapter.latency}[spec["role"]]()


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from adapters import NotApplicable

    try:
        plan = build(spec)
        plan.setup()
    except NotApplicable as exc:
        send("NA", {"reason": str(exc)})
        os._exit(0)
    except BaseException:
        send("ERROR", {"where": "setup", "traceback": traceback.format_exc()})
        os._exit(1)
    send("READY")
    if sys.stdin.readline().strip() != "GO":
        os._exit(0)
    t_go = time.monotonic()
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
    try:
        result = plan.run()
    except NotApplicable as exc:
        send("NA", {"reason": str(exc)})
        os._exit(0)
    except BaseException:
        send("ERROR", {"where": "run", "traceback": traceback.format_exc()})
        os._exit(1)
    if profiler is not None:
        profiler.stop()
        with open(spec["profile"] + ".html", "w") as f:
            f.write(profiler.output_html())
        with open(spec["profile"] + ".txt", "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    result = dict(result or {})
    result.setdefault("t_end", time.monotonic())
    result["t_go"] = t_go
    send("DONE", result)
    sys.stdin.readline()
    os._exit(0)


if __name__ == "__main__":
    main()
