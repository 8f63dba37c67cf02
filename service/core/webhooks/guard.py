"""The address guard: where a webhook may go.

A URL of the right shape (:func:`~service.core.contract.urls.url_problem`) is refused when any
address its host resolves to is internal: loopback, link-local (where cloud metadata answers),
private, shared or reserved (anything not globally routable), or one of this machine's own
addresses, unless the address is inside a network of ``CHILDTUNE_WEBHOOK_ALLOW_NETWORKS``.
Unspecified and multicast addresses are never allowed. :func:`check_url` answers at submit time
(``resolve_spec``, the experiment's create); :func:`target` again before each delivery attempt,
with the addresses the request must go to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from service.core import env
from service.core.contract.urls import url_problem

if TYPE_CHECKING:
    from service.core.settings import Settings

__all__ = [
    "RESOLVE_TIMEOUT_S",
    "Address",
    "Network",
    "address_problem",
    "check_url",
    "own_addresses",
    "target",
]

RESOLVE_TIMEOUT_S = 5.0
SUBMIT_CACHE_S = 10.0  # one submit-time check of a URL serves an experiment's cells

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HINT = (
    "webhooks go only to public addresses; an operator allows internal networks with "
    f"{env.WEBHOOK_ALLOW_NETWORKS} (CIDRs, e.g. 10.0.0.0/8)"
)

# ------------------------------------------------------------------------------ this machine


_OWN: tuple[float, frozenset[Address]] = (0.0, frozenset())
_OWN_LOCK = threading.Lock()
_FIB_ADDR = re.compile(r"[|+]-- (\d+\.\d+\.\d+\.\d+)")


def _read_own_addresses() -> set[Address]:
    found: set[Address] = set()
    try:  # IPv4: the kernel's local routes ("/32 host LOCAL" under an address)
        last = None
        with open("/proc/net/fib_trie") as lines:
            for line in lines:
                match = _FIB_ADDR.search(line)
                if match:
                    last = match.group(1)
                elif last and "/32 host LOCAL" in line:
                    found.add(ipaddress.ip_address(last))
    except OSError:
        pass
    try:  # IPv6: one address a line, 32 hex digits first
        with open("/proc/net/if_inet6") as lines:
            for line in lines:
                digits = line.split()[0]
                found.add(ipaddress.ip_address(":".join(digits[i : i + 4] for i in range(0, 32, 4))))
    except (OSError, IndexError, ValueError):
        pass
    try:  # elsewhere, and as a complement: what this host's name resolves to
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(_address(str(info[4][0])))
    except (OSError, ValueError):
        pass
    return found


def own_addresses(max_age_s: float = 60.0) -> frozenset[Address]:
    """This machine's own addresses (read again once a minute: interfaces change)."""
    global _OWN
    with _OWN_LOCK:
        if time.monotonic() - _OWN[0] > max_age_s:
            _OWN = (time.monotonic(), frozenset(_read_own_addresses()))
        return _OWN[1]


# ------------------------------------------------------------------------------ an address


def _address(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # a link-local v6 may carry a zone (%eth0)


def address_problem(ip: Address, allowed: Sequence[Network]) -> str | None:
    """What kind of address ``ip`` is when a webhook may not go there (``"a loopback
    address"``), else None; ``allowed``: the operator's networks."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in network for network in allowed):
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip in own_addresses():
        return "one of this machine's own addresses"
    if not ip.is_global:
        return "not a public address (private, shared or reserved)"
    return None


# ------------------------------------------------------------------------------ a URL


_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def _resolve(host: str, port: int, timeout_s: float) -> list[Address]:
    """The host's addresses (an IP literal is its own); raises OSError or TimeoutError."""
    try:
        return [_address(host)]
    except ValueError:
        pass
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(f"{host} did not resolve within {timeout_s:.0f} s") from None
    found: list[Address] = []
    for info in infos:
        ip = _address(str(info[4][0]))
        if ip not in found:
            found.append(ip)
    return found


def target(url: str, allowed: Sequence[Network]) -> tuple[list[Address], str | None]:
    """The URL's addresses, and why it is refused (None when every address is allowed)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = _resolve(host, port, RESOLVE_TIMEOUT_S)
    except TimeoutError as exc:
        return [], str(exc)
    except (OSError, UnicodeError) as exc:
        return [], f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})"
    if not addresses:
        return [], f"{host} resolves to no address"
    for ip in addresses:
        kind = address_problem(ip, allowed)
        if kind is not None:
            where = f"{ip} is" if host == str(ip) else f"{host} resolves to {ip},"
            never = kind in ("the unspecified address", "a multicast address")
            return addresses, f"{where} {kind}" + ("" if never else f": {_HINT}")
    return addresses, None


_CHECKED: dict[tuple[str, str], tuple[float, str | None]] = {}
_CHECKED_LOCK = threading.Lock()


def check_url(url: str, settings: Settings) -> str | None:
    """At submit time: why ``url`` is refused (its shape, or an address it resolves to), with
    the setting that allows internal networks; None when it is accepted."""
    problem = url_problem(url)
    if problem is not None:
        return problem
    key = (url, settings.webhook_allow_networks)
    now = time.monotonic()
    with _CHECKED_LOCK:
        cached = _CHECKED.get(key)
        if cached is not None and now - cached[0] < SUBMIT_CACHE_S:
            return cached[1]
    _, answer = target(url, settings.webhook_networks)
    with _CHECKED_LOCK:
        if len(_CHECKED) > 1000:
            _CHECKED.clear()
        _CHECKED[key] = (now, answer)
    return answer
