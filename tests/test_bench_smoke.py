"""The benchmark runs (ours only, quick): a smoke test that bench/run.py works, not a timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_run_for_redisq(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--systems", "redisq",
         "--scenarios", "E1,D1,L1,R1", "--n", "500", "--no-chart", "--outdir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables = list(tmp_path.glob("*.md"))
    assert len(tables) == 1
    text = tables[0].read_text()
    assert "django-redisq (engine, sync job)" in text
    assert "django-redisq (engine, async job)" in text
    assert "failed" not in text.split("## Summary", 1)[1].split("###", 1)[0]


def test_redis_cost_counts_instructions_per_job():
    """bench/redis_cost.py (the README's command) runs and reports every phase. It needs
    valgrind, which scripts/test installs with the other system packages."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "redis_cost.py"), "--n", "100", "--batch", "10"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = {}
    for line in proc.stdout.splitlines()[1:]:
        phase, _, value = line.strip().rpartition(" ")
        counts[phase.strip()] = int(value.replace(",", ""))
    assert set(counts) == {"enqueue", "claim x10", "finish x10", "claim x1", "finish x1",
                           "hand-off", "finish waited"}
    # A job's script calls run thousands of instructions on the server: the counting worked.
    assert all(value > 10_000 for value in counts.values()), counts


def test_enqueue_models_times_and_counts_every_way():
    """bench/enqueue_models.py (the README's command) times every way and counts the Redis
    instructions of the raw ones. Without huey (not in the test env), no huey rows."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "enqueue_models.py"), "--rounds", "1", "--n", "50",
         "--instructions"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.rsplit(None, 4)
        if len(parts) == 5 and parts[1].replace(".", "").isdigit():
            rows[parts[0].strip()] = parts[4]
    raw = {"redisq script", "MULTI HSET script", "MULTI HSET ZADD", "HSET + LPUSH",
           "SET + LPUSH", "LPUSH record"}
    assert raw | {"Queue.enqueue()"} <= set(rows), proc.stdout
    # Every raw way's commands reached the server, which did real work for them; the script,
    # which also writes the record, did more than a lone LPUSH.
    counts = {name: int(rows[name].replace(",", "")) for name in raw}
    assert all(c > 1_000 for c in counts.values()), counts
    assert counts["redisq script"] > counts["LPUSH record"], counts
    assert rows["Queue.enqueue()"] == "-"
