"""Reading the configuration file, value by value: key paths, unknown keys, converters.

The generic half of the YAML reader (configfile.py is the announcer's half: which
sections and keys there are, and the checks across keys). A `Section` reads one
mapping key by key; a bad value is recorded in `Problems` under its key path
(`bgp.communities[1]: ...`) and replaced by the default, so reading goes on and
`announcer check-config` shows *every* problem at once. Unknown keys are errors (a
typo must not silently fall back to a default).

A converter takes (value, key path) and returns the typed value or raises `Bad`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .model import UINT32_MAX, Community, IPAddress, IPNetwork, LargeCommunity
from .target import parse_target

T = TypeVar("T")


# ------------------------------------------------------------------ the reader


class Problems:
    """Every problem found so far, each as `key.path: message`."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


class Section:
    """One mapping of the YAML document, read key by key with its path."""

    def __init__(self, data: object, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.used: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path or "(top level)", f"expected a mapping, got {kind_of(data)}")
            data = {}
        self.data: Mapping[Any, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, conv: Callable[[object, str], T], default: T) -> T:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        try:
            return conv(self.data[name], self.key(name))
        except Bad as e:
            self.problems.add(e.path, e.message)
            return default

    def sub(self, name: str) -> Section:
        self.used.add(name)
        return Section(self.data.get(name), self.key(name), self.problems)

    def finish(self, hint: Mapping[str, str] | None = None) -> None:
        for k in self.data:
            if k not in self.used:
                extra = f" (did you mean {hint[k]!r}?)" if hint and k in hint else ""
                known = ", ".join(sorted(self.used))
                self.problems.add(self.key(str(k)), f"unknown key{extra}; known keys: {known}")


class Bad(Exception):
    """A converter's refusal of one value, with the key path it was read at."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message


def kind_of(v: object) -> str:
    """What a YAML value is, for a message: `a boolean`, `a list`."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(v), type(v).__name__)


# Converters: (value, key path) -> typed value, raising Bad.


def nonempty_str(v: object, path: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Bad(path, f"expected a non-empty string, got {kind_of(v)}")
    return v


def boolean(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise Bad(path, f"expected true or false, got {kind_of(v)}")
    return v


def int_in(lo: int, hi: int) -> Callable[[object, str], int]:
    def conv(v: object, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Bad(path, f"expected an integer, got {kind_of(v)}")
        if not lo <= v <= hi:
            raise Bad(path, f"{v} is out of range ({lo}..{hi})")
        return v

    return conv


def seconds(lo: float = 0.001, hi: float = 86400.0) -> Callable[[object, str], float]:
    def conv(v: object, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise Bad(path, f"expected a number of seconds, got {kind_of(v)}")
        if not lo <= v <= hi:
            raise Bad(path, f"{v} is out of range ({lo}..{hi} s)")
        return float(v)

    return conv


def number_in(lo: float, hi: float) -> Callable[[object, str], float]:
    def conv(v: object, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise Bad(path, f"expected a number, got {kind_of(v)}")
        if not lo <= v <= hi:
            raise Bad(path, f"{v} is out of range ({lo:g}..{hi:g})")
        return float(v)

    return conv


def choice(*options: T) -> Callable[[object, str], T]:
    def conv(v: object, path: str) -> T:
        for o in options:
            if v == o and type(v) is type(o):
                return o
        raise Bad(path, f"{v!r} is not one of {', '.join(repr(o) for o in options)}")

    return conv


def list_of(item: Callable[[object, str], T]) -> Callable[[object, str], tuple[T, ...]]:
    def conv(v: object, path: str) -> tuple[T, ...]:
        if not isinstance(v, list):
            raise Bad(path, f"expected a list, got {kind_of(v)}")
        out: list[T] = []
        bad: list[Bad] = []
        for i, x in enumerate(v):
            try:
                out.append(item(x, f"{path}[{i}]"))
            except Bad as e:
                bad.append(e)
        if bad:  # report the first; the rest follow once it is fixed
            raise bad[0]
        return tuple(out)

    return conv


def network(v: object, path: str) -> IPNetwork:
    if not isinstance(v, str):
        raise Bad(path, f"expected a prefix like 192.0.2.0/24, got {kind_of(v)}")
    try:
        return ipaddress.ip_network(v, strict=True)
    except ValueError as e:
        raise Bad(path, f"{v!r} is not a network prefix ({e})") from None


def _unicast(version: int) -> Callable[[object, str], IPAddress]:
    def conv(v: object, path: str) -> IPAddress:
        if not isinstance(v, str):
            raise Bad(path, f"expected an IPv{version} address, got {kind_of(v)}")
        try:
            a = ipaddress.ip_address(v)
        except ValueError:
            raise Bad(path, f"{v!r} is not an IP address") from None
        if a.version != version:
            raise Bad(path, f"{v} is not an IPv{version} address")
        if a.is_unspecified or a.is_multicast or a.is_loopback:
            raise Bad(path, f"{v} is not a usable unicast next hop")
        return a

    return conv


def next_hop(version: int) -> Callable[[object, str], IPAddress | None]:
    addr = _unicast(version)

    def conv(v: object, path: str) -> IPAddress | None:
        return None if v == "self" else addr(v, path)

    return conv


def community(v: object, path: str) -> Community:
    try:
        return Community.parse(str(v) if isinstance(v, str) else "")
    except ValueError:
        raise Bad(path, f"{v!r} is not a community like 65000:100 (0-65535:0-65535)") from None


def large_community(v: object, path: str) -> LargeCommunity:
    try:
        return LargeCommunity.parse(v if isinstance(v, str) else "")
    except ValueError:
        raise Bad(path, f"{v!r} is not a large community like 65000:1:2 (32-bit parts)") from None


def url(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    try:
        parse_target(s)  # the client's own parser: what passes here, the client accepts
    except ValueError as e:
        raise Bad(path, str(e)) from None  # the message never repeats credentials
    return s.rstrip("/")


def server_user(v: object, path: str) -> str | int:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v < UINT32_MAX:
            raise Bad(path, f"{v} is not a uid")
        return v
    s = nonempty_str(v, path)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$", s):
        raise Bad(path, f"{s!r} is not a user name or uid")
    return s


def http_path(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    if not s.startswith("/") or any(c.isspace() for c in s):
        raise Bad(path, f"{s!r} must start with / and contain no spaces")
    return s


def gobgp_address(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    if s.startswith("unix://"):
        if not s.startswith("unix:///"):
            raise Bad(path, f"{s!r}: a unix socket target needs an absolute path (unix:///run/...)")
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise Bad(path, f"{s!r} is not host:port or unix:///path")
    return s


def env_name(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s):
        raise Bad(path, f"{s!r} is not an environment variable name")
    return s


def file_path(v: object, path: str) -> Path:
    return Path(nonempty_str(v, path))


def abs_path(v: object, path: str) -> Path:
    p = file_path(v, path)
    if not p.is_absolute():
        raise Bad(path, f"{str(p)!r} must be an absolute path")
    return p


def fraction(v: object, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise Bad(path, f"expected a fraction from 0 to 1, got {v!r}")
    return float(v)


def peer_address(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        raise Bad(path, f"{s!r} is not a neighbor IP address") from None


def _host_port(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    host, sep, port = s.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Bad(path, f"{s!r} is not address:port (an IP address, not a name)") from None
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Bad(path, f"{s!r} is not address:port")
    return s


def metrics_address(v: object, path: str) -> str:
    s = nonempty_str(v, path)
    if not s.startswith("unix://"):
        return _host_port(v, path)
    if not s[len("unix://") :].startswith("/"):
        raise Bad(path, f"{s!r}: a unix socket needs an absolute path (unix:///run/...)")
    return s


def vip_network(v: object, path: str) -> IPNetwork:
    """A prefix, or a bare address as its host prefix (/32, /128)."""
    if isinstance(v, str) and "/" not in v:
        v = f"{v}/128" if ":" in v else f"{v}/32"
    return network(v, path)


__all__ = [
    "Bad",
    "Problems",
    "Section",
    "abs_path",
    "boolean",
    "choice",
    "community",
    "env_name",
    "file_path",
    "fraction",
    "gobgp_address",
    "http_path",
    "int_in",
    "kind_of",
    "large_community",
    "list_of",
    "metrics_address",
    "network",
    "next_hop",
    "nonempty_str",
    "peer_address",
    "seconds",
    "server_user",
    "url",
    "vip_network",
]
