"""Who a request comes from: the TCP peer, or what configured trusted proxies say it is.

Behind an ingress every visitor's TCP peer is the ingress, so per-client limits need the
forwarded address, but a header is only believed when the peer that sent it is a proxy the
operator listed (``TRUSTED_PROXIES``; default none, as JupyterHub and BinderHub trust no
header unless told to). ``client_address`` is the pure rule; ``client_of`` the aiohttp shell.
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(entries: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``...; a ValueError names the bad entry."""
    out: list[Network] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as e:
            raise ValueError(f"{entry!r} is not an IP address or network") from e
    return tuple(out)


def _address(text: str | None) -> Address | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:567``, ``[::1]:80``, ``"[::1]"``, ``::1``."""
    if not text:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in trusted if address.version == net.version)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: walk the forwarded hops from the nearest one while they are trusted proxies.

    ``forwarded_for`` lists the hops as the headers give them, client first. A hop added by
    an untrusted party is never believed: the first hop (from the right) that is not a trusted
    proxy is the client, so a visitor who sends a made-up header only adds hops to its left.
    """
    peer_address = _address(peer)
    if not _trusted(peer_address, trusted):
        return str(peer_address) if peer_address is not None else (peer or "unknown")
    for hop in reversed(forwarded_for):
        address = _address(hop)
        if address is None:  # "unknown" or an obfuscated name: that proxy's word for its client
            return hop.strip().strip('"') or str(peer_address)
        if not _trusted(address, trusted):
            return str(address)
    if forwarded_for:
        first = _address(forwarded_for[0])
        if first is not None:
            return str(first)
    return str(peer_address)


def forwarded_hops(request: web.BaseRequest) -> list[str]:
    """The ``for=`` hops of ``Forwarded`` (RFC 7239) when sent, else of ``X-Forwarded-For``."""
    hops = [str(element["for"]) for element in request.forwarded if element.get("for")]
    if hops:
        return hops
    return [h.strip() for value in request.headers.getall("X-Forwarded-For", ()) for h in value.split(",")
            if h.strip()]


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_trusted(entries)


def client_of(request: web.BaseRequest, trusted_proxies: tuple[str, ...]) -> str:
    """The client address of ``request`` under the TRUSTED_PROXIES setting."""
    trusted = _networks(trusted_proxies)
    if not trusted:
        return request.remote or "unknown"
    return client_address(request.remote, forwarded_hops(request), trusted)
