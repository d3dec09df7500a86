"""The agent's configuration: command-line flags, each with an environment variable equivalent."""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass

ENCODERS = ("auto", "nvenc", "x264", "vp8")
ATTACHED_MAX_SIZE = (3840, 2160)  # --max-size of an X server the agent did not start


@dataclass(frozen=True)
class AgentConfig:
    display: str = ":99"
    port: int = 6901
    host: str = "0.0.0.0"
    xvfb: bool = False
    glx: bool = False  # the owned Xvfb offers GLX (OpenGL applications: Blender)
    width: int = 1920
    height: int = 1080
    max_width: int = 1920  # --max-size: by default the session's size
    max_height: int = 1080
    launch: str | None = None
    window_manager: bool = False  # run the window manager even without --launch
    set_size: bool = False  # --size was given: an attached X server is set to it at start
    token: str | None = None
    encoder: str = "auto"
    max_peers: int = 8
    max_fps: int = 60
    bitrate_kbps: int = 8000
    min_bitrate_kbps: int = 1000
    max_bitrate_kbps: int = 20000
    refresh_s: float = 2.0
    refine_s: float = 0.2  # still this long → lossless overlay (session_agent/media/refine.py); 0 = off
    ice_addresses: tuple[str, ...] = ()  # local ones: gather there; others: announce (1:1 NAT)
    stun_server: tuple[str, int] | None = None  # learn the public address from it, in the background
    xauthority: str | None = None
    ready_file: str | None = None
    home: str | None = None  # whose files /files/… serves
    max_upload: int = 2 << 30


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{2,5})x(\d{2,5})", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    w, h = int(m.group(1)), int(m.group(2))
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: each side must be 64..8192")
    # H.264 with 4:2:0 chroma needs even dimensions.
    return w - w % 2, h - h % 2


def _display(text: str) -> str:
    if not re.fullmatch(r"[\w.\-]*:\d{1,5}(\.\d+)?", text):
        raise argparse.ArgumentTypeError(f"invalid display {text!r}: expected e.g. :99")
    return text


def _ranged(kind: type, low: float, high: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: must be {low}..{high}")
        return value
    return parse


_port = _ranged(int, 0, 65535, "port")
_seconds = _ranged(float, 0, 60, "seconds")


def _positive(kind: type = int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return parse


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _bytes(text: str) -> int:
    """A size in bytes: 2147483648, 512M, 2G, 2GiB (binary units)."""
    m = re.fullmatch(r"(\d{1,15})\s*([kmgt]?)(i?b)?", text.strip().lower())
    if not m or (m.group(3) and not m.group(2) and m.group(3) != "b"):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected bytes or e.g. 512M, 2G")
    value = int(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _addresses(text: str) -> tuple[str, ...]:
    addresses = tuple(a.strip() for a in text.split(",") if a.strip())
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid ICE address {address!r}: expected an IP address") from None
    return addresses


def _stun_server(text: str) -> tuple[str, int] | None:
    """`host[:port]` (default port 3478); a `stun:` URL prefix is accepted."""
    text = text.strip().removeprefix("stun:")
    if not text:
        return None
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port = text, "3478"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid STUN server {text!r}: expected host[:port]")
    return host, int(port)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"session_agent: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = _Parser(prog="python -m session_agent",
                description="Stream one X display over WebRTC (WHEP) and inject input into it.")
    p.add_argument("--display", type=_display, default=env("AGENT_DISPLAY", os.environ.get("DISPLAY", ":99")),
                   help="X display to capture (AGENT_DISPLAY, default $DISPLAY or :99)")
    p.add_argument("--port", type=_port, default=env("AGENT_PORT", "6901"), help="HTTP port (AGENT_PORT)")
    p.add_argument("--host", default=env("AGENT_HOST", "0.0.0.0"), help="HTTP bind address (AGENT_HOST)")
    p.add_argument("--xvfb", action="store_true", default=env("AGENT_XVFB", "") in ("1", "true", "yes"),
                   help="start and own an Xvfb on --display (AGENT_XVFB=1)")
    p.add_argument("--glx", action="store_true", default=env("AGENT_GLX", "") in ("1", "true", "yes"),
                   help="the owned Xvfb offers GLX, for OpenGL applications such as Blender; off, it "
                        "saves each session 10 MB (AGENT_GLX=1)")
    p.add_argument("--size", type=_size, default=env("AGENT_SIZE"),
                   help="initial screen size WxH (AGENT_SIZE; default 1920x1080); an X server the "
                        "agent attaches to is set to it at start when given")
    p.add_argument("--max-size", type=_size, default=env("AGENT_MAX_SIZE"),
                   help="largest size a client may resize to, and the framebuffer of an owned Xvfb, "
                        "which costs 4 bytes a pixel whatever the screen shows (AGENT_MAX_SIZE; "
                        "default: --size with --xvfb, else 3840x2160; resizes beyond it are clamped; 3840x2160 "
                        "lets HiDPI clients have device pixels)")
    p.add_argument("--launch", default=env("AGENT_LAUNCH"),
                   help="application command to start, with the window manager (AGENT_LAUNCH)")
    p.add_argument("--window-manager", action="store_true",
                   default=env("AGENT_WINDOW_MANAGER", "") in ("1", "true", "yes"),
                   help="run the window manager that keeps windows maximized, also without --launch "
                        "(an application started elsewhere, e.g. another container; "
                        "AGENT_WINDOW_MANAGER=1)")
    p.add_argument("--token", default=env("AGENT_TOKEN"), help="bearer token required for WHEP (AGENT_TOKEN)")
    p.add_argument("--token-file", default=env("AGENT_TOKEN_FILE"),
                   help="read the bearer token from this file, so it is in no environment or command "
                        "line (AGENT_TOKEN_FILE; --token wins when both are set)")
    p.add_argument("--ready-file", default=env("AGENT_READY_FILE"),
                   help="written once the screen has its size and the window manager manages it, "
                        "before --launch: an application started elsewhere (the pod's app "
                        "container) waits for it, or its first windows are placed on the "
                        "framebuffer's size with nobody to focus them (AGENT_READY_FILE)")
    p.add_argument("--xauthority", default=env("AGENT_XAUTHORITY"),
                   help="the display's Xauthority file; with --xvfb a fresh cookie is written to it and "
                        "Xvfb admits only clients that have it (AGENT_XAUTHORITY)")
    p.add_argument("--encoder", choices=ENCODERS, default=env("AGENT_ENCODER", "auto"),
                   help="video encoder (AGENT_ENCODER)")
    p.add_argument("--max-peers", type=_positive(), default=env("AGENT_MAX_PEERS", "8"),
                   help="concurrent viewers (AGENT_MAX_PEERS)")
    p.add_argument("--max-fps", type=_positive(), default=env("AGENT_MAX_FPS", "60"),
                   help="frame rate cap while the screen changes (AGENT_MAX_FPS)")
    p.add_argument("--bitrate", type=_positive(), default=env("AGENT_BITRATE", "8000"),
                   help="starting video bitrate cap in kbit/s (AGENT_BITRATE)")
    p.add_argument("--min-bitrate", type=_positive(), default=env("AGENT_MIN_BITRATE", "1000"),
                   help="lowest bitrate receivers' REMB may push the cap to, kbit/s (AGENT_MIN_BITRATE)")
    p.add_argument("--max-bitrate", type=_positive(), default=env("AGENT_MAX_BITRATE", "20000"),
                   help="highest bitrate cap, kbit/s (AGENT_MAX_BITRATE)")
    p.add_argument("--refresh", type=_positive(float), default=env("AGENT_REFRESH", "2"),
                   help="seconds between refresh frames of a static screen (AGENT_REFRESH)")
    p.add_argument("--refine", type=_seconds, default=env("AGENT_REFINE", "0.2"),
                   help="seconds the screen must be still before viewers get its exact pixels as a "
                        "lossless overlay; 0 turns it off (AGENT_REFINE)")
    # ICE: where the agent can be reached (docs/GATEWAY.md "Networks").
    p.add_argument("--ice-addresses", type=_addresses, default=env("AGENT_ICE_ADDRESSES", ""),
                   help="comma-separated IP addresses: local ones are the only ones ICE host candidates are "
                        "gathered on (default all but loopback); any other is announced as this host's "
                        "public address, for a server behind a 1:1 NAT (AGENT_ICE_ADDRESSES)")
    p.add_argument("--stun-server", type=_stun_server, default=env("AGENT_STUN_SERVER", ""),
                   help="host[:port] of a STUN server the agent asks for its public address (in the "
                        "background, never while answering) and then announces it; default none "
                        "(AGENT_STUN_SERVER)")
    p.add_argument("--home", default=env("AGENT_HOME"),
                   help="the user's home, served under /files/ (AGENT_HOME, default $HOME)")
    p.add_argument("--max-upload", type=_bytes, default=env("AGENT_MAX_UPLOAD", "2G"),
                   help="largest file a PUT /files/… may write, e.g. 512M (AGENT_MAX_UPLOAD, default 2G)")
    return p


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.token is not None and not a.token.strip():
        parser.error("--token must not be empty")
    if a.token is None and a.token_file:
        try:
            with open(a.token_file, encoding="utf-8") as f:
                a.token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"cannot read --token-file {a.token_file}: {getattr(exc, 'strerror', None) or exc}")
        if not a.token:
            parser.error(f"--token-file {a.token_file} is empty")
    if not a.min_bitrate <= a.bitrate <= a.max_bitrate:
        parser.error("--bitrate must lie between --min-bitrate and --max-bitrate")
    size = a.size or (AgentConfig.width, AgentConfig.height)
    # An owned Xvfb cannot grow its framebuffer later, and a 4K one costs every session 24 MB
    # more than a 1080p one: only what is asked for (docs/ARCHITECTURE.md, "Memory"). An X
    # server started elsewhere has its own framebuffer, which clamps resizes anyway.
    a.max_size = a.max_size or (size if a.xvfb else ATTACHED_MAX_SIZE)
    if size[0] > a.max_size[0] or size[1] > a.max_size[1]:
        parser.error(f"--size {size[0]}x{size[1]} exceeds --max-size {a.max_size[0]}x{a.max_size[1]}")
    if a.home is not None and not os.path.isdir(a.home):
        parser.error(f"--home {a.home!r} is not a directory")
    return AgentConfig(
        display=a.display, port=a.port, host=a.host, xvfb=a.xvfb, glx=a.glx, width=size[0], height=size[1],
        max_width=a.max_size[0], max_height=a.max_size[1], launch=a.launch or None,
        window_manager=a.window_manager or bool(a.launch), set_size=a.size is not None, token=a.token,
        encoder=a.encoder, max_peers=a.max_peers, max_fps=a.max_fps, bitrate_kbps=a.bitrate,
        min_bitrate_kbps=a.min_bitrate, max_bitrate_kbps=a.max_bitrate, refresh_s=a.refresh, refine_s=a.refine,
        ice_addresses=a.ice_addresses, stun_server=a.stun_server, xauthority=a.xauthority or None,
        ready_file=a.ready_file or None,
        home=a.home or os.environ.get("HOME") or None, max_upload=a.max_upload,
    )
