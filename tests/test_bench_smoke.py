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
    assert set(counts) == {"enqueue", "claim x10", "finish x10", "claim x1", "finish x1"}
    # A job's script calls run thousands of instructions on the server: the counting worked.
    assert all(value > 10_000 for value in counts.values()), counts
