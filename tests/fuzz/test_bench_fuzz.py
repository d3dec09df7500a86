"""bench/fuzz.py (the fuzz benchmark, atheris harnesses included) runs as `python -m bench`
calls it, and counts nothing against the platform on a small run."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_run_with_a_fresh_seed_is_clean() -> None:
    """A new seed every run, so the suite keeps exploring; FUZZ_SEED=N replays a failure."""
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(2**31))
    print(f"fuzz seed {seed} (replay: FUZZ_SEED={seed} or python -m bench.fuzz --seed {seed})")
    run = subprocess.run([sys.executable, "bench/fuzz.py", "--cases", "600", "--seed", str(seed)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.stdout, f"seed {seed}: {run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    failures = {name: t["first_failure"] for name, t in report["targets"].items() if t.get("first_failure")}
    assert run.returncode == 0, f"seed {seed}: {failures or run.stderr[-2000:]}"
    assert report["cases"] >= 200 and report["all_rejections_clear"]
    assert report["crashes"] == report["server_errors"] == report["unclear_rejections"] == 0
    assert all(target["cases"] > 0 for target in report["targets"].values()), report["targets"]
