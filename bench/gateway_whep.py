"""Benchmark: what the gateway's WHEP proxy adds to a WHEP offer/answer round trip.

    python -m bench.gateway_whep [--rounds 100]

Starts `python -m gateway` (local spawner, the real session agent streaming a light
application: no GIMP needed for signalling), then alternates POST /whep straight to the agent
and POST /streaming/{id}/whep through the gateway with the same offer, ending each peer with
DELETE. Reports both distributions and the difference of their medians. Prints one JSON object.
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

from tests.gateway.conftest import sdp_offer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def agent_of(session_id: str) -> tuple[str, str]:
    """The session's agent URL and token, read from /proc (the bench runs on the same machine)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
            env = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args[1:3] == ["-m", "session_agent"] and f"SESSION_ID={session_id}" in env:
            token = Path(args[args.index("--token-file") + 1]).read_text()  # the spawner's 0600 file
            return f"http://127.0.0.1:{args[args.index('--port') + 1]}", token
    raise SystemExit("no agent found")


async def timed_post(http: aiohttp.ClientSession, url: str, sdp: str, headers: dict[str, str],
                     delete_base: str) -> float:
    start = time.perf_counter()
    async with http.post(url, data=sdp, headers={**headers, "Content-Type": "application/sdp"}) as r:
        await r.read()
        elapsed = time.perf_counter() - start
        assert r.status == 201, r.status
        location = r.headers["Location"]
    async with http.delete(delete_base + location, headers=headers) as r:
        assert r.status == 200, r.status
    return elapsed


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=100)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "GATEWAY_TOKEN": TOKEN, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0",
               "GATEWAY_DATA_DIR": data, "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_APP_GIMP": "sleep 3600"}
        gw = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE)
        try:
            base = gw.stdout.readline().split("open ", 1)[1].split("/?", 1)[0]
            user = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/api/sessions", json={"application": "gimp"}, headers=user) as r:
                    sid = (await r.json())["id"]
                while True:
                    async with http.get(f"{base}/api/sessions/{sid}", headers=user) as r:
                        if (await r.json())["phase"] == "running":
                            break
                    await asyncio.sleep(0.1)
                agent_url, agent_token = agent_of(sid)
                pc, sdp = await sdp_offer()
                direct: list[float] = []
                proxied: list[float] = []
                for _ in range(5):  # warm both paths (connections, code paths)
                    await timed_post(http, f"{agent_url}/whep", sdp, {"Authorization": f"Bearer {agent_token}"}, agent_url)
                    await timed_post(http, f"{base}/streaming/{sid}/whep", sdp, user, base)
                for _ in range(args.rounds):
                    direct.append(await timed_post(http, f"{agent_url}/whep", sdp,
                                                   {"Authorization": f"Bearer {agent_token}"}, agent_url))
                    proxied.append(await timed_post(http, f"{base}/streaming/{sid}/whep", sdp, user, base))
                await pc.close()
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(60)

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"median_ms": round(statistics.median(xs) * 1000, 2),
                "p90_ms": round(xs[int(0.9 * len(xs))] * 1000, 2)}
    paired = [p - d for p, d in zip(proxied, direct)]
    print(json.dumps({"benchmark": "gateway_whep", "rounds": args.rounds,
                      "direct_to_agent": summary(direct), "through_gateway": summary(proxied),
                      "added_median_ms": round((statistics.median(proxied) - statistics.median(direct)) * 1000, 2),
                      "added_paired_median_ms": round(statistics.median(paired) * 1000, 2),
                      "note": "POST offer -> 201 answer round trip on loopback; the agent runs a light app"}))


if __name__ == "__main__":
    asyncio.run(main())
