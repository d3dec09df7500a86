"""`python -m gateway`: serve until SIGINT/SIGTERM, then end every session cleanly."""
from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from gateway.app import create_app
from gateway.config import Config, load_config
from gateway.logs import setup_logging
from gateway.runner import JsonErrorRunner
from gateway.spawners.base import SpawnerError


def _address(runner: web.AppRunner, config: Config) -> str:
    """The URL to open (with the token in token mode); with --port 0, the port that was picked."""
    port = next((a[1] for a in runner.addresses if isinstance(a, tuple)), config.port)
    url = Config(host=config.host, port=port).public_url
    return f"{url}?token={config.token}" if config.auth == "token" else url


async def serve(config: Config) -> int:
    runner = JsonErrorRunner(create_app(config), access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except SpawnerError as exc:
        print(f"gateway: the {config.spawner} spawner cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        await web.TCPSite(runner, config.host, config.port).start()
    except OSError as exc:
        print(f"gateway: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        await runner.cleanup()
        return 1
    print(f"Gateway ready: open {_address(runner, config)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def main() -> int:
    config = load_config()
    setup_logging(config.log_level)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
