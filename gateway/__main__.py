"""`python -m gateway`: serve until SIGINT/SIGTERM, then end every session cleanly."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
import sys
from dataclasses import replace

from aiohttp import web

from gateway.app import create_app
from gateway.config import Config, load_config
from gateway.logs import log_event, setup_logging
from gateway.runner import JsonErrorRunner
from gateway.spawners.base import SpawnerError
from gateway.turn import reachable_over_tcp

log = logging.getLogger("gateway")


class TlsError(Exception):
    """The certificate or key cannot be used; the message is the one line the user sees."""


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from --tls-cert/--tls-key (None: plain HTTP)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename or config.tls_cert}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise TlsError(f"--tls-cert {config.tls_cert} and --tls-key {config.tls_key} are not a PEM "
                       f"certificate chain and its private key ({exc.reason or exc})") from None
    return context


def network_warnings(config: Config) -> list[str]:
    """Settings that leave some users unable to use a session (docs/GATEWAY.md "Networks")."""
    warnings = []
    try:
        local_only = ipaddress.ip_address(config.host).is_loopback
    except ValueError:
        local_only = config.host == "localhost"
    if config.tls_cert is None and not local_only:
        warnings.append("serving plain HTTP: browsers on other hosts get no secure context "
                        "(WebCodecs, clipboard); use --tls-cert/--tls-key or a TLS proxy "
                        "(--trusted-proxies)")
    if config.turn_urls and not reachable_over_tcp(config.turn_urls):
        warnings.append("no TURN URL over TCP or TLS (turn:…?transport=tcp, turns:…): users "
                        "whose network blocks UDP cannot connect")
    return warnings


def _address(runner: web.AppRunner, config: Config) -> str:
    """The URL to open (with the token in token mode); with --port 0, the port that was picked."""
    port = next((a[1] for a in runner.addresses if isinstance(a, tuple)), config.port)
    url = replace(config, port=port).public_url
    return f"{url}?token={config.token}" if config.auth == "token" else url


async def serve(config: Config) -> int:
    try:
        context = tls_context(config)
    except TlsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    for warning in network_warnings(config):
        log_event(log, "network_warning", level=logging.WARNING, message=warning)
    runner = JsonErrorRunner(create_app(config), access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except SpawnerError as exc:
        await runner.cleanup()  # what started before the spawner (the files proxy's client) ends
        print(f"gateway: the {config.spawner} spawner cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        await web.TCPSite(runner, config.host, config.port, ssl_context=context).start()
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
