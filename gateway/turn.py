"""TURN REST credentials (coturn `use-auth-secret`) as WHEP/WHIP `Link` headers (RFC 9725 4.6)."""
from __future__ import annotations

import base64
import hashlib
import hmac
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
