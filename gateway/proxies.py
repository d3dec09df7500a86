"""Which peers are the operator's own proxies (`--trusted-proxies`): only their forwarded
headers (`X-Forwarded-Proto`, the user header of `--auth header`) are believed."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def trusted_peer(remote: str | None, trusted: tuple[Network, ...]) -> bool:
    """Whether the TCP peer `remote` (aiohttp's request.remote) lies in a trusted network."""
    if not trusted or not remote:
        return False
    try:
        peer = ipaddress.ip_address(remote)
    except ValueError:  # a Unix socket: no address to trust
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped  # an IPv4 proxy seen by a gateway listening on ::
    return any(peer in n for n in trusted)
