"""`python -m gateway.controller [--namespace NS]`: the session controller alone, with
/metrics and /healthz on --metrics-port."""
from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.controller.service import Controller
from gateway.controller.settings import ControllerSettings, load_settings
from gateway.kube.client import Kube, KubeError, connect, resolve_namespace
from gateway.logs import setup_logging


def metrics_app(controller: Controller) -> web.Application:
    registry = CollectorRegistry()
    for collector in controller.collectors():
        registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        synced = controller.sessions.synced.is_set() and controller.pods.synced.is_set()
        return web.json_response({"synced": synced, "leader": controller.leading.is_set()},
                                 status=200 if synced else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(settings: ControllerSettings) -> None:
    kube = Kube(await connect(), resolve_namespace(settings.namespace))
    controller = Controller(kube, settings)
    runner = web.AppRunner(metrics_app(controller), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    try:
        await stop.wait()
    finally:
        await controller.stop()
        await runner.cleanup()
        await kube.close()


def main() -> None:
    settings = load_settings()
    if not settings.agent_token_key:
        print("gateway.controller: --agent-token-key (CONTROLLER_AGENT_TOKEN_KEY) is required: "
              "the key in the gimp-agent-token-key Secret", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except KubeError as exc:
        print(f"gateway.controller: cannot reach Kubernetes: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"gateway.controller: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
