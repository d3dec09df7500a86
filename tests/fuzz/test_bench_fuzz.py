"""bench/fuzz.py (the fuzz benchmark, atheris harnesses included) runs as `python -m bench`
calls it, and counts nothing against the platform on a small run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_run_is_clean() -> None:
    run = subprocess.run([sys.executable, "bench/fuzz.py", "--cases", "200", "--seed", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["cases"] >= 200 and report["all_rejections_clear"]
    assert report["crashes"] == report["server_errors"] == report["unclear_rejections"] == 0
    assert all(target["cases"] > 0 for target in report["targets"].values()), report["targets"]
