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
