"""TURN REST credentials (coturn `use-auth-secret`) as WHEP/WHIP `Link` headers (RFC 9725 4.6)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from gateway.identity import turn_user


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, password): username `expiry:<hash of the user id>` (coturn logs usernames:
    never the raw id, which may be an e-mail address or carry characters coturn splits on),
    password base64(HMAC-SHA1(secret, username))."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{turn_user(user)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_server_links(urls: tuple[str, ...], secret: str, user: str, ttl: int) -> list[str]:
    """One `Link` header value per URL; turn:/turns: URLs carry the credentials."""
    if not urls:
        return []
    username, password = turn_credentials(secret, user, ttl)
    links = []
    for url in urls:
        link = f'<{url}>; rel="ice-server"'
        if url.startswith(("turn:", "turns:")):
            link += f'; username="{username}"; credential="{password}"; credential-type="password"'
        links.append(link)
    return links


_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$")


def check_ice_url(url: str) -> None:
    """Raise ValueError unless `url` is a STUN/TURN URL (RFC 7064, RFC 7065): `turn:host[:port]
    [?transport=udp|tcp]`, `turns:…` (TLS), `stun:host[:port]`."""
    m = _ICE_URL.match(url)
    if m is None:
        raise ValueError(f"{url!r} is not a STUN/TURN URL such as turn:turn.example.com:3478?transport=udp")
    if m["port"] is not None and not 0 < int(m["port"]) <= 65535:
        raise ValueError(f"{url!r}: port out of range")
    if m["transport"] and m["scheme"].startswith("stun"):
        raise ValueError(f"{url!r}: a stun: URL takes no transport")


def reachable_over_tcp(urls: tuple[str, ...]) -> bool:
    """Whether a browser whose network drops UDP can still reach a TURN server: TURN over
    TCP (`?transport=tcp`) or TLS (`turns:`)."""
    return any(u.startswith("turns:") or (u.startswith("turn:") and u.endswith("?transport=tcp"))
               for u in urls)
