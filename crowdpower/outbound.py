"""Requests to tenant-chosen URLs (automation webhooks), safe from SSRF.

A tenant's URL is resolved and every address checked: loopback, private, link-local,
multicast, reserved, unspecified and shared addresses (IPv4 and IPv6, IPv4 mapped or
embedded in IPv6) are refused, and so are metadata host names. The name resolver
parses numeric forms (``2130706433``, ``0x7f.1``) exactly as a connection would, so
they are checked as what they mean. At send time the request connects to the very
address that was checked (the name is not resolved twice: no DNS rebinding), never
follows redirects, and reads no response body. ``OUTBOUND_ALLOWLIST`` (networks or host
names) opens chosen internal destinations for on-premise installs; an allowlisted
destination may use any port.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from flask import current_app

BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "instance-data",
                 "metadata.azure.internal", "169.254.169.254"}
BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
DEFAULT_PORTS = (80, 443, 8080, 8443)
SHARED = ipaddress.ip_network("100.64.0.0/10")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """The URL may not be requested; the message says why (safe to show the tenant)."""


class Unresolvable(UnsafeURL):
    """The host name does not resolve (now)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str          # the name as written (Host header, TLS SNI and certificate check)
    port: int
    path: str          # path and query
    address: str       # the checked IP the connection goes to


def _allowlist() -> tuple[list, set[str]]:
    raw = current_app.config.get("OUTBOUND_ALLOWLIST") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    networks, names = [], set()
    for item in (i.strip() for i in raw):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.lower().rstrip("."))
    return networks, names


def _embedded_v4(ip: Address) -> Address:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip.teredo:
            return ip.teredo[1]
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public(ip: Address) -> bool:
    """A globally routable unicast address (IPv4-in-IPv6 judged by its IPv4 part)."""
    for candidate in {ip, _embedded_v4(ip)}:
        if (not candidate.is_global or candidate.is_multicast or candidate.is_reserved
                or candidate.is_loopback or candidate.is_link_local or candidate.is_private
                or candidate.is_unspecified):
            return False
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in SHARED:
            return False
        if isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local:
            return False
    return True


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise Unresolvable(f"host {host!r} does not resolve") from exc
    found: list[Address] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise Unresolvable(f"host {host!r} does not resolve")
    return found


def check_url(url: str) -> Target:
    """Resolve ``url`` and check where it leads; a ``Target`` to connect to, or raise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("an http(s) URL with a host name")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in the URL are not allowed")
    host = parts.hostname.lower().rstrip(".")
    if not host or "\x00" in host or any(c.isspace() for c in host):
        raise UnsafeURL("not a valid host name")
    port = port or (443 if parts.scheme == "https" else 80)
    networks, names = _allowlist()
    if host not in names and (host in BLOCKED_NAMES or host.endswith(BLOCKED_SUFFIXES)):
        raise UnsafeURL(f"host {host!r} is internal")
    addresses = _resolve(host, port)
    allowed_ports = current_app.config.get("OUTBOUND_ALLOWED_PORTS") or DEFAULT_PORTS
    for ip in addresses:
        trusted = host in names or any(ip in n for n in networks if n.version == ip.version)
        if not trusted and not is_public(ip):
            raise UnsafeURL(f"host {host!r} resolves to a non-public address ({ip})")
        if not trusted and port not in allowed_ports:
            raise UnsafeURL(f"port {port} is not allowed (allowed: "
                            f"{', '.join(map(str, allowed_ports))})")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, str(addresses[0]))


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to the checked address of ``url``; the status code (no redirects,
    no body read). Raises ``UnsafeURL`` or ``urllib3`` errors."""
    target = check_url(url)
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]" if target.port in (80, 443) \
            else f"[{target.host}]:{target.port}"
    common = dict(port=target.port, timeout=urllib3.Timeout(connect=timeout, read=timeout),
                  retries=False, maxsize=1)
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            target.address, server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **common)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, **common)
    try:
        response = pool.urlopen("POST", target.path, body=body,
                                headers={**headers, "Host": host_header},
                                redirect=False, preload_content=False, assert_same_host=False)
        status = response.status
        response.release_conn()
        return status
    finally:
        pool.close()
