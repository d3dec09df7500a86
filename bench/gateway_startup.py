"""Benchmark: create -> first decoded frame, and create -> GIMP painted, through the gateway.

    python -m bench.gateway_startup [--runs 5] [--application gimp]

Starts `python -m gateway` (local spawner, real session agent, real GIMP) on a free port, then
for each run: POST /api/sessions, poll until running, WHEP through /streaming/{id}/whep with
aiortc, and time the first decoded frame and the first frame in which the application's window
is painted (a frame that is not one flat colour). The session is deleted between runs.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.whep_client import Viewer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


async def one_run(http: aiohttp.ClientSession, base: str, application: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    t0 = time.perf_counter()
    async with http.post(f"{base}/api/sessions", json={"application": application}, headers=headers) as r:
        session = await r.json()
        assert r.status == 201, session
    sid = session["id"]
    while session["phase"] == "pending":
        await asyncio.sleep(0.02)
        async with http.get(f"{base}/api/sessions/{sid}", headers=headers) as r:
            session = await r.json()
    assert session["phase"] == "running", session
    t_running = time.perf_counter()
    viewer = Viewer(base, token=TOKEN)
    try:
        await viewer.connect(f"/streaming/{sid}/whep")
        await viewer.wait_for(lambda frame: True, timeout=60)
        t_first = time.perf_counter()
        await viewer.wait_for(lambda frame: frame.to_ndarray(format="gray").std() > 10, timeout=60)
        t_painted = time.perf_counter()
    finally:
        await viewer.close()
    async with http.delete(f"{base}/api/sessions/{sid}", headers=headers):
        pass
    while True:
        async with http.get(f"{base}/api/sessions/{sid}", headers=headers) as r:
            if r.status == 404:
                break
        await asyncio.sleep(0.1)
    return {"running_s": t_running - t0, "first_frame_s": t_first - t0, "painted_s": t_painted - t0}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--application", default="gimp")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "GATEWAY_TOKEN": TOKEN, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0",
               "GATEWAY_DATA_DIR": data, "GATEWAY_LOG_LEVEL": "warning"}
        gw = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE)
        try:
            base = gw.stdout.readline().split("open ", 1)[1].split("/?", 1)[0]
            async with aiohttp.ClientSession() as http:
                runs = [await one_run(http, base, args.application) for _ in range(args.runs)]
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(60)
    summary = {key: {"median": round(statistics.median(r[key] for r in runs), 3),
                     "max": round(max(r[key] for r in runs), 3)} for key in runs[0]}
    print(json.dumps({"benchmark": "gateway_startup", "application": args.application,
                      "runs": args.runs, "seconds_from_create": summary,
                      "note": "local spawner, real session agent and application, aiortc viewer via the gateway"}))


if __name__ == "__main__":
    asyncio.run(main())
