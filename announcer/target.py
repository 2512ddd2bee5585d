"""Where DataPlaneAPI is, and how it proves who it is before it gets the password.

`parse_target` turns `dataplaneapi.url` into a Target (http to a loopback address,
unix:///path, or https), refusing credentials in the URL and plain http to another
host; config loading and the client use the same function.

The proof: while DataPlaneAPI is down, any local user could listen on its port and
collect the Basic-auth password. Over `http://` the server end of *this* TCP
connection is looked up in /proc/self/net/tcp{,6} (an accepted socket carries the uid
of the process that listens, accepted or not) and its uid must be one of
`server_users`; over `unix://` SO_PEERCRED gives the uid. /proc/self/net is our own
network namespace's, so this works under ProtectProc=invisible. Over `https://` the
certificate is the proof (dpapi_http.py).
"""

from __future__ import annotations

import ipaddress
import logging
import pwd
import socket
import struct
import sys
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("announcer.dataplane")

ApiVersion = Literal[2, 3]
# /proc/net/tcp state of a TIME_WAIT socket: it shows uid 0 whoever owned it.
_TCP_TIME_WAIT = "06"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


# ------------------------------------------------------------------- the target


@dataclass(frozen=True)
class Target:
    """Where DataPlaneAPI is: a parsed, credential-free `dataplaneapi.url`."""

    scheme: Literal["http", "https", "unix"]
    host: str  # http(s): host name or IP (no brackets); unix: ""
    port: int  # http(s) only
    socket_path: str  # unix only
    prefix: str  # path before /v2 or /v3, without a trailing slash
    pinned: ApiVersion | None  # from a /v2 or /v3 suffix

    @property
    def base(self) -> str:
        """The API root as shown in messages (without /v2 or /v3)."""
        if self.scheme == "unix":
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"

    @property
    def host_header(self) -> str:
        if self.scheme == "unix":
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _redacted(url: str) -> str:
    """`url` for an error message: anything before an `@` in the authority is hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return repr(url[:80])
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return repr(f"{scheme}://{authority}{slash}{path}"[:120])


def is_loopback_host(host: str) -> bool:
    """A literal loopback IP, or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_target(url: str) -> Target:
    """Parse `dataplaneapi.url`; raises ValueError with a message that never shows credentials.

    `http://HOST[:PORT][/prefix]` (HOST must be loopback: the server is proven by the uid
    owning its socket), `https://HOST[:PORT][/prefix]` (proven by its certificate), or
    `unix:///path/to/socket` (proven by SO_PEERCRED). A trailing `/v2` or `/v3` pins the
    API version.
    """
    shown = _redacted(url)
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{shown} contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit's own message may quote the netloc (credentials and all).
        raise ValueError(f"{shown} is not a valid URL (bad host or port)") from None
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain credentials (user:password@): use username and "
            "password_file or password_env"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{shown}: no ?query or #fragment allowed")
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/") or parts.path.endswith("/"):
            raise ValueError(f"{shown}: a unix socket URL is unix:///absolute/path/to/socket")
        return Target("unix", "", 0, parts.path, "", None)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown}: expected http://, https:// or unix:///path")
    host = parts.hostname
    if not host:
        raise ValueError(f"{shown}: no host")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"{shown}: plain http:// is only allowed to a loopback address (the password "
            "would cross the network unverified); use https:// with tls.ca_file, or a "
            "unix:///path socket"
        )
    path = parts.path.rstrip("/")
    pinned: ApiVersion | None = None
    # Accept a URL that already ends in /v2 or /v3: it says which API to use.
    if path.endswith("/v2"):
        path, pinned = path[:-3], 2
    elif path.endswith("/v3"):
        path, pinned = path[:-3], 3
    default_port = 443 if parts.scheme == "https" else 80
    scheme: Literal["http", "https"] = "https" if parts.scheme == "https" else "http"
    return Target(scheme, host, port or default_port, "", path, pinned)


# ------------------------------------------------------------ proving the server


def resolve_server_users(users: Iterable[str | int]) -> frozenset[int]:
    """uids of `server_users`: numbers as they are, names looked up (a missing one is logged)."""
    uids: set[int] = set()
    for user in users:
        if isinstance(user, int):
            uids.add(user)
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            log.warning("dataplaneapi.server_users: no user %r on this host; ignored", user)
    if not uids:
        log.error(
            "dataplaneapi.server_users: none of %s exists here; no DataPlaneAPI server "
            "can be verified, so none will be asked",
            list(users),
        )
    return frozenset(uids)


def user_name(uid: int) -> str:
    try:
        return f"{uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return str(uid)


def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address field of /proc/net/tcp{,6}: 32-bit words in host byte order, as hex."""
    raw = b"".join(
        int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)
    )
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _normal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def socket_owner(
    lines: Iterable[str], server: tuple[str, int], client: tuple[str, int]
) -> int | None:
    """The uid of the socket whose local end is `server` and remote end is `client`, from
    /proc/net/tcp{,6} lines; None if there is none. Pure: the caller opens the files."""
    s_ip, c_ip = _normal(server[0]), _normal(client[0])
    s_port, c_port = f":{server[1]:04X}", f":{client[1]:04X}"
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not fields[1].endswith(s_port) or not fields[2].endswith(c_port):
            continue
        if fields[3] == _TCP_TIME_WAIT:
            continue
        try:
            local = _proc_address(fields[1].partition(":")[0])
            remote = _proc_address(fields[2].partition(":")[0])
            uid = int(fields[7])
        except ValueError:
            continue
        if local == s_ip and remote == c_ip:
            return uid
    return None


def _proc_lines(paths: Sequence[str]) -> Iterator[str]:
    # Streamed line by line: on a busy LB the table holds every HAProxy connection.
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                next(f, None)  # the header line
                yield from f
        except FileNotFoundError:  # no IPv6 in this kernel
            continue


def tcp_server_uid(server: tuple[str, int], client: tuple[str, int]) -> int | None:
    """uid owning the server end of our TCP connection (an accepted socket carries its
    listener's owner, accepted yet or not). /proc/self/net is our own network namespace,
    so this works under ProtectProc=invisible and for any DynamicUser."""
    return socket_owner(_proc_lines(("/proc/self/net/tcp", "/proc/self/net/tcp6")), server, client)


def unix_peer_uid(sock: socket.socket) -> int:
    """uid of the process that called listen() on the unix socket we are connected to."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


__all__ = [
    "ApiVersion",
    "Target",
    "is_loopback_host",
    "parse_target",
    "resolve_server_users",
    "socket_owner",
    "tcp_server_uid",
    "unix_peer_uid",
    "user_name",
]
