"""The gateway's configuration: every setting is a flag with a `GATEWAY_*` environment twin.

Precedence: flag, then environment, then default. `load_config()` is the one place that reads
either; everything else receives a `Config`.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.kube.tokens import check_key
from gateway.resources import DEFAULT_LIMITS, parse_limits
from gateway.spawners.base import APPLICATIONS
from gateway.turn import check_ice_url

_SIZE = re.compile(r"\d{2,5}x\d{2,5}")  # the agent checks the range

DEFAULT_APP_COMMANDS = {
    "gimp": "gimp --no-splash",
    "inkscape": "inkscape",
    "blender": "blender",
}


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 8080
    spawner: str = "local"
    data_dir: Path = Path("data")
    auth: str = "token"
    token: str = ""  # auth token mode; generated (and printed) at start when empty
    jwt_secret: str = ""
    user_header: str = "X-Forwarded-User"
    namespace: str | None = None  # kubernetes spawner
    controller: bool = False  # kubernetes spawner: run the session controller in-process
    # kubernetes spawner: agent tokens are HMAC-SHA256(key, uid) (gateway/kube/tokens.py)
    agent_token_key: str = ""
    ephemeral: bool = False  # kubernetes spawner: Sessions without a home volume (warm pool)
    region: str = "local"  # the region label of metrics and logs
    max_sessions_per_user: int = 3
    max_sessions_total: int = 20
    start_timeout: float = 60.0  # pending longer than this: failed
    default_timeout: int = 3600  # idle seconds (no viewer) before a session is terminated
    max_timeout: int = 7 * 24 * 3600
    stop_grace: float = 5.0  # SIGTERM, this long, then SIGKILL
    idle_check_interval: float = 5.0  # how often running agents are asked for their viewer count
    idle_warning: float = 60.0  # viewers are warned this long before an idle session ends
    agent_command: tuple[str, ...] = (sys.executable, "-m", "session_agent")
    # local spawner: agents forked from one process that imported them (spawners/forkserver.py)
    agent_fork_server: str = "auto"
    app_commands: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_APP_COMMANDS))
    session_size: str | None = None  # the agents' initial display size; None: the agent's default
    # The largest size a browser may resize a session to (its Xvfb framebuffer, paid in memory
    # by every session); None: the session size (docs/ARCHITECTURE.md, "Memory").
    session_max_size: str | None = None
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl: int = 24 * 3600
    log_level: str = "info"
    # Browser origins (scheme://host[:port]) allowed to call the API cross-origin; none: same-origin only.
    cors_origins: tuple[str, ...] = ()
    # Peers whose X-Forwarded-Proto is believed (CIDRs): the TLS-terminating proxy.
    trusted_proxies: tuple[str, ...] = ()
    secure_cookies: bool = False  # mark the auth cookie Secure whatever the request says
    create_limit: int = 10  # session creations per user per create_window seconds; 0: no limit
    create_window: float = 60.0
    # Largest resources a session of each user tier may ask for ("*": any other tier).
    resource_limits: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    # Local spawner, the application's sandbox (gateway/spawners/sandbox.py). auto: required
    # with several users (--auth jwt|header), used when bwrap works in token mode; on: required;
    # off: none (token mode only).
    sandbox: str = "auto"
    sandbox_uid: int = 65534  # a gateway running as root runs applications as this uid (and gid)

    @property
    def multi_user(self) -> bool:
        """Several people share this machine's sessions: they must not reach each other's."""
        return self.spawner == "local" and self.auth in ("jwt", "header")
    # TLS (SPEC "Gateway TLS"): HTTPS with this PEM certificate chain and private key.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def public_url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}/"


def _env_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = Config()

    def e(name: str, default: object) -> object:
        return env.get(f"GATEWAY_{name}", default)

    p = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Web entry point: launcher, session API, WHEP signalling proxy. "
                    "Every flag can also be set as the GATEWAY_* variable named in brackets.")
    p.add_argument("--host", default=e("HOST", d.host), help="[GATEWAY_HOST] address to listen on")
    p.add_argument("--port", type=int, default=e("PORT", d.port), help="[GATEWAY_PORT]")
    p.add_argument("--spawner", choices=("local", "kubernetes"), default=e("SPAWNER", d.spawner),
                   help="[GATEWAY_SPAWNER] where sessions run")
    p.add_argument("--data-dir", type=Path, default=e("DATA_DIR", d.data_dir),
                   help="[GATEWAY_DATA_DIR] local spawner: users' homes and session logs")
    p.add_argument("--auth", choices=("token", "jwt", "header"), default=e("AUTH", d.auth),
                   help="[GATEWAY_AUTH] how users are identified")
    p.add_argument("--token", default=e("TOKEN", d.token),
                   help="[GATEWAY_TOKEN] the secret of --auth token (generated when unset)")
    p.add_argument("--jwt-secret", default=e("JWT_SECRET", d.jwt_secret),
                   help="[GATEWAY_JWT_SECRET] HS256 key of --auth jwt")
    p.add_argument("--user-header", default=e("USER_HEADER", d.user_header),
                   help="[GATEWAY_USER_HEADER] --auth header: the header the proxy sets")
    p.add_argument("--namespace", default=e("NAMESPACE", d.namespace),
                   help="[GATEWAY_NAMESPACE] kubernetes spawner")
    p.add_argument("--controller", action="store_true",
                   default=_env_bool(str(e("CONTROLLER", ""))),
                   help="[GATEWAY_CONTROLLER] kubernetes spawner: run the controller in-process")
    p.add_argument("--agent-token-key", default=e("AGENT_TOKEN_KEY", d.agent_token_key),
                   help="[GATEWAY_AGENT_TOKEN_KEY] kubernetes spawner: the key agent tokens are "
                        "derived from (the controller's CONTROLLER_AGENT_TOKEN_KEY)")
    p.add_argument("--ephemeral", action="store_true",
                   default=_env_bool(str(e("EPHEMERAL", ""))),
                   help="[GATEWAY_EPHEMERAL] kubernetes spawner: sessions have no persistent home "
                        "(kiosk, trial) and may start from the controller's warm pool")
    p.add_argument("--region", default=e("REGION", d.region), help="[GATEWAY_REGION] metrics label")
    p.add_argument("--max-sessions-per-user", type=int,
                   default=e("MAX_SESSIONS_PER_USER", d.max_sessions_per_user),
                   help="[GATEWAY_MAX_SESSIONS_PER_USER]")
    p.add_argument("--max-sessions-total", type=int,
                   default=e("MAX_SESSIONS_TOTAL", d.max_sessions_total),
                   help="[GATEWAY_MAX_SESSIONS_TOTAL]")
    p.add_argument("--start-timeout", type=float, default=e("START_TIMEOUT", d.start_timeout),
                   help="[GATEWAY_START_TIMEOUT] seconds a session may take to start")
    p.add_argument("--default-timeout", type=int, default=e("DEFAULT_TIMEOUT", d.default_timeout),
                   help="[GATEWAY_DEFAULT_TIMEOUT] idle seconds without a viewer before a "
                        "session ends, when the request names none")
    p.add_argument("--max-timeout", type=int, default=e("MAX_TIMEOUT", d.max_timeout),
                   help="[GATEWAY_MAX_TIMEOUT] the largest timeout a request may ask for")
    p.add_argument("--stop-grace", type=float, default=e("STOP_GRACE", d.stop_grace),
                   help="[GATEWAY_STOP_GRACE] seconds between SIGTERM and SIGKILL")
    p.add_argument("--idle-check-interval", type=float,
                   default=e("IDLE_CHECK_INTERVAL", d.idle_check_interval),
                   help="[GATEWAY_IDLE_CHECK_INTERVAL] seconds between viewer counts")
    p.add_argument("--idle-warning", type=float, default=e("IDLE_WARNING", d.idle_warning),
                   help="[GATEWAY_IDLE_WARNING] seconds before an idle session ends that its "
                        "viewers are warned (at most half its timeout)")
    p.add_argument("--agent-command", default=e("AGENT_COMMAND", shlex.join(d.agent_command)),
                   help="[GATEWAY_AGENT_COMMAND] local spawner: how to run the session agent")
    p.add_argument("--agent-fork-server", choices=("auto", "off"),
                   default=e("AGENT_FORK_SERVER", d.agent_fork_server),
                   help="[GATEWAY_AGENT_FORK_SERVER] local spawner: auto: when the agent command is "
                        "`<this python> -m MODULE`, fork every agent from one process that imported "
                        "MODULE (they share its memory, and start without importing); off: run the "
                        "command for each session")
    for app in APPLICATIONS:
        p.add_argument(f"--app-{app}", dest=f"app_{app}",
                       default=e(f"APP_{app.upper()}", d.app_commands[app]),
                       help=f"[GATEWAY_APP_{app.upper()}] the command that runs {app}")
    p.add_argument("--session-size", default=e("SESSION_SIZE", d.session_size),
                   help="[GATEWAY_SESSION_SIZE] initial display size of sessions, e.g. 1280x720")
    p.add_argument("--session-max-size", default=e("SESSION_MAX_SIZE", d.session_max_size),
                   help="[GATEWAY_SESSION_MAX_SIZE] the largest size a browser may resize a session "
                        "to, e.g. 3840x2160 for HiDPI screens; each session's X server holds a "
                        "framebuffer this large (default: the session size)")
    p.add_argument("--turn-urls", default=e("TURN_URLS", ""),
                   help="[GATEWAY_TURN_URLS] comma-separated turn:/stun: URLs given to clients")
    p.add_argument("--turn-secret", default=e("TURN_SECRET", d.turn_secret),
                   help="[GATEWAY_TURN_SECRET] coturn static-auth-secret (TURN REST credentials)")
    p.add_argument("--turn-ttl", type=int, default=e("TURN_TTL", d.turn_ttl),
                   help="[GATEWAY_TURN_TTL] lifetime of TURN credentials, seconds")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=e("LOG_LEVEL", d.log_level), help="[GATEWAY_LOG_LEVEL]")
    p.add_argument("--cors-origins", default=e("CORS_ORIGINS", ""),
                   help="[GATEWAY_CORS_ORIGINS] comma-separated origins (https://app.example.com) "
                        "allowed to call the gateway from another origin; default none")
    p.add_argument("--trusted-proxies", default=e("TRUSTED_PROXIES", ""),
                   help="[GATEWAY_TRUSTED_PROXIES] comma-separated addresses/CIDRs of the "
                        "operator's proxies: their X-Forwarded-Proto is trusted (cookies become "
                        "Secure behind TLS) and, with --auth header, their user header; required "
                        "with --auth header")
    p.add_argument("--secure-cookies", action="store_true",
                   default=_env_bool(str(e("SECURE_COOKIES", ""))),
                   help="[GATEWAY_SECURE_COOKIES] always mark the auth cookie Secure")
    p.add_argument("--create-limit", type=int, default=e("CREATE_LIMIT", d.create_limit),
                   help="[GATEWAY_CREATE_LIMIT] sessions a user may create per --create-window "
                        "(then 429 with Retry-After); 0 turns the limit off")
    p.add_argument("--create-window", type=float, default=e("CREATE_WINDOW", d.create_window),
                   help="[GATEWAY_CREATE_WINDOW] seconds of the --create-limit window")
    p.add_argument("--resource-limits", default=e("RESOURCE_LIMITS", ""),
                   help="[GATEWAY_RESOURCE_LIMITS] the largest resources a session may ask for, "
                        'per user tier, as JSON: {"premium": {"cpu": "8", "memory": "16Gi", '
                        '"gpu": "1"}, "*": {"cpu": "4", "memory": "8Gi", "gpu": "1"}} ("*": other '
                        "tiers; default: the \"*\" entry shown)")
    p.add_argument("--sandbox", choices=("auto", "on", "off"), default=e("SANDBOX", d.sandbox),
                   help="[GATEWAY_SANDBOX] local spawner: run applications in bubblewrap; auto: "
                        "required with --auth jwt|header, used when available with --auth token")
    p.add_argument("--sandbox-uid", type=int, default=e("SANDBOX_UID", d.sandbox_uid),
                   help="[GATEWAY_SANDBOX_UID] local spawner run as root: the uid and gid "
                        "applications run as (never 0)")
    # TLS: browsers give a page a secure context (WebCodecs, the async clipboard) only over
    # HTTPS or on localhost.
    p.add_argument("--tls-cert", type=Path, default=e("TLS_CERT", None),
                   help="[GATEWAY_TLS_CERT] PEM certificate chain: serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=e("TLS_KEY", None),
                   help="[GATEWAY_TLS_KEY] PEM private key of --tls-cert")
    return p


def _origins(text: str) -> tuple[str, ...]:
    """Exact origins only: a wildcard would let any site drive a user's sessions."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host or "*" in host:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return origins


def _networks(text: str) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_network(n.strip(), strict=False))
                 for n in text.split(",") if n.strip())


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from flags and environment; exits with a usage message when invalid."""
    env = os.environ if env is None else env
    parser = _parser(env)
    a = parser.parse_args(argv)
    # argparse applies `type` to string defaults only, so env values that are numbers are
    # converted here again, through the parser's own error path.
    try:
        for name in ("start_timeout", "stop_grace", "idle_check_interval", "create_window",
                     "idle_warning"):
            setattr(a, name, float(getattr(a, name)))
        for name in ("port", "max_sessions_per_user", "max_sessions_total", "default_timeout",
                     "max_timeout", "turn_ttl", "create_limit", "sandbox_uid"):
            setattr(a, name, int(getattr(a, name)))
    except ValueError as exc:
        parser.error(f"invalid number: {exc}")
    if a.auth == "jwt" and not a.jwt_secret:
        parser.error("--auth jwt needs --jwt-secret (GATEWAY_JWT_SECRET)")
    if (a.auth not in ("token", "jwt", "header")) or a.spawner not in ("local", "kubernetes"):
        parser.error("invalid --auth or --spawner (from the environment)")
    if a.agent_fork_server not in ("auto", "off"):
        parser.error(f"invalid --agent-fork-server {a.agent_fork_server!r} (from the environment): auto or off")
    if a.default_timeout <= 0 or a.default_timeout > a.max_timeout:
        parser.error("--default-timeout must be positive and at most --max-timeout")
    try:
        agent_command = tuple(shlex.split(a.agent_command))
        for app in APPLICATIONS:
            shlex.split(getattr(a, f"app_{app}"))
    except ValueError as exc:
        parser.error(f"a command cannot be parsed: {exc}")
    if not agent_command:
        parser.error("--agent-command is empty")
    try:
        cors_origins = _origins(a.cors_origins)
        trusted_proxies = _networks(a.trusted_proxies)
    except ValueError as exc:
        parser.error(str(exc))
    if a.auth == "header" and not trusted_proxies:
        parser.error("--auth header needs --trusted-proxies (GATEWAY_TRUSTED_PROXIES): the "
                     "addresses of the authenticating proxy, the only peers whose "
                     f"{a.user_header} is believed")
    if a.create_limit < 0 or a.create_window <= 0:
        parser.error("--create-limit must be 0 or more and --create-window positive")
    try:
        resource_limits = parse_limits(a.resource_limits) if a.resource_limits else dict(DEFAULT_LIMITS)
    except ValueError as exc:
        parser.error(str(exc))
    if a.sandbox not in ("auto", "on", "off"):
        parser.error("invalid --sandbox (from the environment): auto, on or off")
    if a.sandbox == "off" and a.spawner == "local" and a.auth != "token":
        parser.error("--sandbox off is only allowed with --auth token: several users' sessions "
                     "must be isolated from each other")
    if not 0 < a.sandbox_uid < 2**32 - 1:
        parser.error("--sandbox-uid must be a uid other than 0")
    if a.spawner == "kubernetes":
        if not a.agent_token_key:
            parser.error("--spawner kubernetes needs --agent-token-key (GATEWAY_AGENT_TOKEN_KEY), "
                         "the key in the gimp-agent-token-key Secret")
        try:
            check_key(a.agent_token_key)
        except ValueError as exc:
            parser.error(str(exc))
    elif a.ephemeral:
        parser.error("--ephemeral needs --spawner kubernetes")
    turn_urls = tuple(u.strip() for u in a.turn_urls.split(",") if u.strip())
    if turn_urls and not a.turn_secret:
        parser.error("--turn-urls needs --turn-secret (GATEWAY_TURN_SECRET)")
    try:
        for url in turn_urls:
            check_ice_url(url)
    except ValueError as exc:
        parser.error(f"--turn-urls: {exc}")
    for flag, size in (("--session-size", a.session_size), ("--session-max-size", a.session_max_size)):
        if size and not _SIZE.fullmatch(size):
            parser.error(f"invalid {flag} {size!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    if a.session_max_size and any(int(s) > int(m) for s, m in zip(
            (a.session_size or "1920x1080").split("x"), a.session_max_size.split("x"))):
        parser.error(f"--session-size {a.session_size or '1920x1080'} exceeds --session-max-size "
                     f"{a.session_max_size}")
    if bool(a.tls_cert) != bool(a.tls_key):
        parser.error("--tls-cert and --tls-key (GATEWAY_TLS_CERT, GATEWAY_TLS_KEY) go together")
    return Config(
        host=a.host, port=a.port, spawner=a.spawner, data_dir=Path(a.data_dir), auth=a.auth,
        token=a.token or (secrets.token_urlsafe(24) if a.auth == "token" else ""),
        jwt_secret=a.jwt_secret, user_header=a.user_header, namespace=a.namespace,
        controller=bool(a.controller), agent_token_key=a.agent_token_key,
        ephemeral=bool(a.ephemeral), region=a.region,
        max_sessions_per_user=a.max_sessions_per_user, max_sessions_total=a.max_sessions_total,
        start_timeout=a.start_timeout, default_timeout=a.default_timeout, max_timeout=a.max_timeout,
        stop_grace=a.stop_grace, idle_check_interval=a.idle_check_interval,
        idle_warning=a.idle_warning,
        agent_command=agent_command, agent_fork_server=a.agent_fork_server,
        app_commands={app: getattr(a, f"app_{app}") for app in APPLICATIONS},
        session_size=a.session_size or None, session_max_size=a.session_max_size or None, turn_urls=turn_urls, turn_secret=a.turn_secret,
        turn_ttl=a.turn_ttl, log_level=a.log_level,
        cors_origins=cors_origins, trusted_proxies=trusted_proxies,
        secure_cookies=bool(a.secure_cookies), create_limit=a.create_limit,
        create_window=a.create_window, resource_limits=resource_limits,
        sandbox=a.sandbox, sandbox_uid=a.sandbox_uid,
        tls_cert=Path(a.tls_cert) if a.tls_cert else None, tls_key=Path(a.tls_key) if a.tls_key else None,
    )
