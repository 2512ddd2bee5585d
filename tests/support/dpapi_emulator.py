#!/usr/bin/env python3
"""An emulator of HAProxy's DataPlaneAPI (read-only part) that serves a real haproxy.cfg.

DataPlaneAPI itself cannot be installed here, so the adapter tests (and the network
namespace lab) run against this instead. It answers like DPAPI 2.x (`/v2`, wrapped lists)
or 3.x (`/v3`, bare lists, `full_section`), as the specs in shared/reference/dataplaneapi
and the notes (dataplaneapi-notes.md) describe, including the odd parts the client must
survive: bind addresses kept raw (`*`, `""`, `ipv4@...`, `unix@...`), `abns@` binds
silently dropped, `/binds` without a query answering 500 "parentType empty", an unknown
frontend answering 200 with an empty list.

Only the standard library is used: the lab runs this file as a plain script.

    python tests/support/dpapi_emulator.py --config haproxy.cfg --api-version 3 \\
        --listen 127.0.0.1:5555 [--userlist controller] [--unix-socket /run/dpapi.sock]

With `--unix-socket PATH` it serves on that unix socket instead of TCP, like DPAPI's
`--scheme unix --socket-path PATH` (its URL is then `unix://PATH`).

or as a library: `handle = start_emulator(cfg, 3)`, `handle.url`, `handle.stop()`.

The configuration version starts at 1 and is bumped whenever the file's content changes
(it is re-read when its mtime, size or inode changed), like DPAPI's inotify watcher.

Passwords: `insecure-password` always works; `password` hashes `$1$`/`$5$`/`$6$` in the
plain `$id$salt$hash` form work when Python's `crypt` module exists (3.11/3.12; removed in
3.13), otherwise hashed users can never log in. Like DPAPI, `rounds=`, yescrypt and bcrypt
never match, and `"${ENV}"` passwords are not supported.

Fault injection, for tests (unauthenticated, emulator-only):
`POST /_emulator/fault` with `{"mode": M, "delay": s, "count": n, "match": "substring"}`:
none | 500 | garbage (200, not JSON) | truncated (body cut short) | slow (sleep `delay`
then answer) | auth (401) | shape (200, JSON of the wrong shape) | close (drop the
connection without answering) | bump (bump the configuration version, then answer: the
config "changed" under the client) | drip (send the answer, headers and body, one byte
every `delay` seconds, default 1) | halfopen (read the request, never answer) |
halfopen_headers (send part of the status line and headers, then nothing) | huge (200 with a
`Content-Length` of `size` bytes, default 200 MB, streamed in full unless the client hangs
up) | chunked (a chunked body of `size` bytes, endless when `size` is absent, one 64 KiB
chunk every `delay` seconds) | empty (a well-formed 200 that lists nothing: no
frontends, no binds). The hanging modes end when the client hangs up or the emulator
stops. `count` limits the fault to the next n API requests; `match` limits it to
request paths containing that string.
`GET /_emulator/state` returns the version, the fault and the request log;
`POST /_emulator/reset` clears the fault and the log.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import stat
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_crypt: Callable[[str, str], str] | None
try:
    # `crypt` is deprecated since 3.11 (removed in 3.13) and warns on import; the test
    # suite turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt_module

    _crypt = _crypt_module.crypt
except ImportError:  # pragma: no cover - Python 3.13+
    _crypt = None

SECTIONS = frozenset(
    {
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "userlist",
        "peers",
        "resolvers",
        "program",
        "mailers",
        "cache",
        "http-errors",
        "ring",
        "log-forward",
        "fcgi-app",
        "crt-store",
        "traces",
    }
)
CONFIG = "/services/haproxy/configuration"
FAULT_MODES = frozenset(
    {
        "none",
        "empty",
        "500",
        "garbage",
        "truncated",
        "slow",
        "auth",
        "shape",
        "close",
        "bump",
        "drip",
        "halfopen",
        "halfopen_headers",
        "huge",
        "chunked",
    }
)
HUGE_DEFAULT = 200 * 1000 * 1000
STREAM_BLOCK = 65536

# --------------------------------------------------------------------- haproxy.cfg


@dataclass
class Section:
    """A frontend or defaults section: its DPAPI JSON fields and (frontends) binds."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    binds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class User:
    """One `user` line of a userlist."""

    name: str
    secret: str
    insecure: bool


@dataclass
class HaproxyConfig:
    """What the emulator serves: frontends, defaults (in file order) and userlists."""

    frontends: list[Section] = field(default_factory=list)
    defaults: list[Section] = field(default_factory=list)
    userlists: dict[str, dict[str, User]] = field(default_factory=dict)


# Bind options that take a value, so the value is never mistaken for a flag
# (`crt ssl.pem` must not set `ssl`). Values of the mapped ones become JSON fields.
_BIND_VALUE_FIELDS = {
    "name": "name",
    "crt": "ssl_certificate",
    "crt-list": "crt_list",
    "ca-file": "ssl_cafile",
    "alpn": "alpn",
    "interface": "interface",
    "namespace": "namespace",
    "verify": "verify",
    "ssl-min-ver": "ssl_min_ver",
    "ssl-max-ver": "ssl_max_ver",
    "user": "user",
    "group": "group",
    "mode": "mode",
    "level": "level",
    "process": "process",
    "thread": "thread",
    "ciphers": "ciphers",
    "ciphersuites": "ciphersuites",
    "curves": "curves",
    "ecdhe": "ecdhe",
    "npn": "npn",
    "crl-file": "crl_file",
    "proto": "proto",
    "severity-output": "severity_output",
    "quic-cc-algo": "quic-cc-algo",
    "quic-socket": "quic-socket",
    "shards": "shards",
}
_BIND_INT_FIELDS = {
    "maxconn": "maxconn",
    "backlog": "backlog",
    "id": "id",
    "mss": "mss",
    "nice": "nice",
    "uid": "uid",
    "gid": "gid",
    "tcp-ut": "tcp_user_timeout",
}
_BIND_OTHER_VALUED = frozenset(
    {
        "ca-ignore-err",
        "crt-ignore-err",
        "ca-sign-file",
        "ca-sign-pass",
        "ca-verify-file",
        "sigalgs",
        "client-sigalgs",
        "accept-netscaler-cip",
        "guid-prefix",
        "label",
        "expose-fd",
        "idle-ping",
        "tls-ticket-keys",
        "generate-certificates",
    }
)
_BIND_FLAGS = {
    "ssl": "ssl",
    "accept-proxy": "accept_proxy",
    "v4v6": "v4v6",
    "v6only": "v6only",
    "transparent": "transparent",
    "defer-accept": "defer_accept",
    "tfo": "tfo",
    "strict-sni": "strict_sni",
    "allow-0rtt": "allow_0rtt",
    "prefer-client-ciphers": "prefer_client_ciphers",
    "no-ca-names": "no_ca_names",
}


def split_bind_address(token: str) -> tuple[str, int | None, int | None] | None:
    """(address, port, port-range-end) as DPAPI reports a bind token, None if it drops it."""
    # DPAPI checks the prefix as `absn@` (a typo), so `abns@` fails host:port parsing
    # and the bind is silently omitted from the list (client-native issue #115).
    if token.startswith("abns@"):
        return None
    if token.startswith(("unix@", "/", "fd@", "sockpair@")):
        return token, None, None
    prefix = ""
    rest = token
    if "@" in token:
        head, _, rest = token.partition("@")
        prefix = head + "@"  # DPAPI keeps the prefix in `address`
    if rest.startswith("["):
        host, sep, after = rest[1:].partition("]")
        if not sep or not after.startswith(":"):
            return None
        port_text = after[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            return None  # "missing port in address": DPAPI drops the bind
    low_text, dash, high_text = port_text.partition("-")
    if not (low_text.isascii() and low_text.isdigit()):
        return None
    low = int(low_text)
    high: int | None = None
    if dash:
        if not (high_text.isascii() and high_text.isdigit()):
            return None
        high = int(high_text)
        if high <= low:
            high = None  # DPAPI sets port-range-end only when port < end
    return prefix + host, low, high


def parse_bind_line(args: list[str]) -> dict[str, Any] | None:
    """The DPAPI bind JSON of `bind ADDR [options]`; None when DPAPI would omit it."""
    if not args:
        return None
    split = split_bind_address(args[0])
    if split is None:
        return None
    address, port, end = split
    bind: dict[str, Any] = {"name": args[0], "address": address}
    if port is not None:
        bind["port"] = port
    if end is not None:
        bind["port-range-end"] = end
    i = 1
    while i < len(args):
        opt = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if opt in _BIND_VALUE_FIELDS and value is not None:
            bind[_BIND_VALUE_FIELDS[opt]] = value
            i += 2
        elif opt in _BIND_INT_FIELDS and value is not None:
            if value.isdigit():
                bind[_BIND_INT_FIELDS[opt]] = int(value)
            i += 2
        elif opt in _BIND_OTHER_VALUED:
            i += 2
        else:
            if opt in _BIND_FLAGS:
                bind[_BIND_FLAGS[opt]] = True
            i += 1
    return bind


def _tokens(line: str) -> list[str]:
    """Whitespace-split words up to a `#` comment (quotes kept, like DPAPI's parser)."""
    words: list[str] = []
    for word in line.split():
        if word.startswith("#"):
            break
        words.append(word)
    return words


def parse_haproxy_cfg(text: str) -> HaproxyConfig:
    """Read the sections DPAPI would report (frontend, defaults, userlist) from a config."""
    cfg = HaproxyConfig()
    current: Section | None = None
    kind = ""
    users: dict[str, User] | None = None
    unnamed = 0
    for raw in text.splitlines():
        words = _tokens(raw)
        if not words:
            continue
        key, args = words[0], words[1:]
        if key in SECTIONS:
            kind, current, users = key, None, None
            name = args[0] if args else ""
            if key == "frontend" and name:
                current = Section(name)
                cfg.frontends.append(current)
            elif key == "defaults":
                if not name or name == "from":
                    # Assumption: an unnamed defaults section gets a generated name
                    # (the v3 list needs one); DPAPI's exact spelling was not verified.
                    unnamed += 1
                    name = f"unnamed_defaults_{unnamed}"
                    args = [name, *args]
                current = Section(name, {"name": name})
                cfg.defaults.append(current)
            elif key == "userlist" and name:
                users = cfg.userlists.setdefault(name, {})
            if current is not None and len(args) >= 3 and args[1] == "from":
                current.fields["from"] = args[2]
            continue
        if kind == "userlist" and users is not None:
            if key == "user" and len(args) >= 3 and args[1] in ("password", "insecure-password"):
                users[args[0]] = User(args[0], args[2], args[1] == "insecure-password")
            continue
        if current is None:
            continue
        _section_line(current, kind, key, args)
    return cfg


def _section_line(section: Section, kind: str, key: str, args: list[str]) -> None:
    fields = section.fields
    if key == "mode" and args and args[0] in ("http", "tcp", "log"):
        if kind == "defaults" or args[0] != "log":
            fields["mode"] = args[0]
    elif key == "disabled":
        fields["disabled"] = True
    elif key == "enabled":
        fields["enabled"] = True
    elif key == "monitor-uri" and args:
        fields["monitor_uri"] = args[0]
    elif key == "monitor" and kind == "frontend" and len(args) >= 3 and args[0] == "fail":
        if args[1] in ("if", "unless"):
            fields["monitor_fail"] = {"cond": args[1], "cond_test": " ".join(args[2:])}
    elif key == "default_backend" and args:
        fields["default_backend"] = args[0]
    elif key == "maxconn" and args and args[0].isdigit():
        fields["maxconn"] = int(args[0])
    elif key == "id" and args and args[0].isdigit() and kind == "frontend":
        fields["id"] = int(args[0])
    elif key == "bind" and kind == "frontend":
        bind = parse_bind_line(args)
        if bind is not None:
            section.binds.append(bind)


# ------------------------------------------------------------------------- auth


def check_password(user: User, password: str) -> bool:
    """Verify a password like DPAPI: plain compare, or a $1$/$5$/$6$ crypt hash."""
    if user.insecure:
        return hmac.compare_digest(user.secret.encode(), password.encode())
    parts = user.secret.split("$")
    if len(parts) != 4 or parts[0] != "" or parts[1] not in ("1", "5", "6") or _crypt is None:
        return False
    try:
        computed = _crypt(password, user.secret)
    except (OSError, ValueError):
        return False
    return bool(computed) and hmac.compare_digest(computed.encode(), user.secret.encode())


# ------------------------------------------------------------------------ state


@dataclass
class Fault:
    """The fault currently injected (see the module docstring)."""

    mode: str = "none"
    delay: float = 0.0
    count: int | None = None  # None: until changed
    match: str | None = None
    size: int | None = None  # huge / chunked: body bytes (chunked: None is endless)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "delay": self.delay,
            "count": self.count,
            "match": self.match,
            "size": self.size,
        }


@dataclass(frozen=True)
class Options:
    """Behaviour switches that differ between DPAPI releases."""

    userlist: str = "controller"
    # v3.3.6+/3.4: unknown paths without valid credentials answer 401, not 404, and
    # every response carries Configuration-Version.
    auth_before_404: bool = False
    # False: a v3 server that ignores `full_section` (no embedded binds).
    full_section: bool = True
    # v3.4: a frontend without bind lines lists its binds as `null`.
    null_binds: bool = False
    # False: a v2 server older than `named_defaults` (404 there).
    named_defaults: bool = True


class EmulatorState:
    """The config file, its version, the injected fault and the request log (thread-safe)."""

    def __init__(self, cfg_path: str, api_version: int, options: Options) -> None:
        self.cfg_path = cfg_path
        self.api_version = api_version
        self.options = options
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.version = 1
        self.fault = Fault()
        self.requests: list[str] = []
        self._signature: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._config = HaproxyConfig()
        self.refresh()

    def refresh(self) -> HaproxyConfig:
        """Re-read the file if it changed on disk; bump the version if its content did."""
        with self.lock:
            st = os.stat(self.cfg_path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature != self._signature:
                with open(self.cfg_path, "rb") as f:
                    data = f.read()
                digest = hashlib.sha256(data).digest()
                if self._digest is not None and digest != self._digest:
                    self.version += 1
                self._signature, self._digest = signature, digest
                self._config = parse_haproxy_cfg(data.decode("utf-8", "replace"))
            return self._config

    def bump(self) -> None:
        """Pretend the configuration changed (fault mode `bump`)."""
        with self.lock:
            self.version += 1

    def take_fault(self, path: str) -> Fault:
        """The fault to apply to this request (consuming one use of a counted fault)."""
        with self.lock:
            fault = self.fault
            if fault.mode == "none" or (fault.match is not None and fault.match not in path):
                return Fault()
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.fault = Fault()
            return Fault(fault.mode, fault.delay, None, fault.match, fault.size)


# ------------------------------------------------------------------------- HTTP


class _Reply(Exception):
    """Raised by routing code to answer with a status and a JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, message: str) -> _Reply:
    return _Reply(status, {"code": status, "message": message})


class Handler(BaseHTTPRequestHandler):
    """One connection; routes GETs like DPAPI, plus the /_emulator control endpoints."""

    protocol_version = "HTTP/1.1"
    server_version = "dpapi-emulator"
    timeout = 30  # an idle keep-alive connection must not pin a thread forever
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus delayed
    # ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            # Handshake here, in the worker thread, not in the accept loop.
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"dpapi-emulator: {self.address_string()} {format % args}\n")

    # -- entry points

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self._read_body()
        if path.startswith("/_emulator/"):
            self._control(method, path, body)
            return
        with state.lock:
            state.requests.append(self.path)
        fault = state.take_fault(path)
        if fault.mode == "slow" and state.stopping.wait(fault.delay):
            self.close_connection = True
            return
        if fault.mode == "bump":
            state.bump()
        if fault.mode == "close":
            self.close_connection = True
            return
        if fault.mode in ("halfopen", "halfopen_headers"):
            if fault.mode == "halfopen_headers":
                self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/js")
            self._hold()
            self.close_connection = True
            return
        is_config = CONFIG in path
        try:
            if fault.mode == "auth":
                raise _error(401, "invalid credentials")
            if fault.mode == "500":
                raise _error(500, "emulated internal error")
            status, payload = self._route(method, path, query)
        except _Reply as reply:
            status, payload = reply.status, reply.body
        except OSError as exc:  # the config file vanished or is unreadable
            status, payload = 500, {"code": 500, "message": f"cannot read configuration: {exc}"}
        if fault.mode == "empty" and status == 200:
            # A well-formed answer listing nothing (a half-written config, an impostor).
            if isinstance(payload, list):
                payload = []
            elif isinstance(payload, dict) and isinstance(payload.get("data"), list):
                payload = {**payload, "data": []}
        data = json.dumps(payload).encode()
        if fault.mode == "garbage":
            status, data = 200, b"<html><body>this is not JSON</body></html>"
        elif fault.mode == "shape" and status == 200:
            data = json.dumps({"unexpected": "shape", "data": "not a list"}).encode()
        headers = {"Content-Type": "application/json"}
        if is_config or state.options.auth_before_404:
            headers["Configuration-Version"] = str(state.version)
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="DataPlaneAPI"'
        if fault.mode == "truncated":
            self._send(status, headers, data, cut=len(data) // 2)
        elif fault.mode == "drip":
            self._drip(status, headers, data, fault.delay or 1.0)
        elif fault.mode in ("huge", "chunked"):
            self._stream(status, headers, fault)
        else:
            self._send(status, headers, data)

    # -- hostile answers (fault modes drip, halfopen*, huge, chunked)

    def _raw(self, data: bytes) -> bool:
        """Write bytes now; False once the client has hung up."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _hold(self) -> None:
        """Say nothing until the client hangs up or the emulator stops."""
        conn = self.connection
        while not self.server.state.stopping.wait(0.05):
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable and not conn.recv(1, socket.MSG_PEEK):
                    return
            except (OSError, ValueError):
                return

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _drip(self, status: int, headers: dict[str, str], data: bytes, delay: float) -> None:
        self.close_connection = True
        raw = self._head(status, {**headers, "Content-Length": str(len(data))}) + data
        for i in range(len(raw)):
            if not self._raw(raw[i : i + 1]) or self.server.state.stopping.wait(delay):
                return

    def _stream(self, status: int, headers: dict[str, str], fault: Fault) -> None:
        self.close_connection = True
        chunked = fault.mode == "chunked"
        size = fault.size if chunked or fault.size is not None else HUGE_DEFAULT
        framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
        if not self._raw(self._head(status, {**headers, **framing})):
            return
        block = b" " * STREAM_BLOCK  # JSON whitespace: never a complete document
        sent = 0
        while size is None or sent < size:
            n = STREAM_BLOCK if size is None else min(STREAM_BLOCK, size - sent)
            piece = f"{n:x}\r\n".encode() + block[:n] + b"\r\n" if chunked else block[:n]
            if not self._raw(piece):
                return
            sent += n
            if chunked and fault.delay and self.server.state.stopping.wait(fault.delay):
                return
            if self.server.state.stopping.is_set():
                return
        if chunked:
            self._raw(b"0\r\n\r\n")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > 0:
            return self.rfile.read(min(int(length), 1 << 20))
        return b""

    def _send(
        self, status: int, headers: dict[str, str], data: bytes, cut: int | None = None
    ) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may already have hung up
            self.wfile.write(data if cut is None else data[:cut])
        if cut is not None:
            # Promise more than we send, then hang up: a truncated response.
            self.close_connection = True

    # -- control

    def _control(self, method: str, path: str, body: bytes) -> None:
        state = self.server.state
        headers = {"Content-Type": "application/json"}
        try:
            if path == "/_emulator/fault" and method == "POST":
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict) or spec.get("mode", "none") not in FAULT_MODES:
                    raise ValueError(f"mode must be one of {sorted(FAULT_MODES)}")
                count = spec.get("count")
                size = spec.get("size")
                fault = Fault(
                    mode=str(spec.get("mode", "none")),
                    delay=float(spec.get("delay", 0.0)),
                    count=int(count) if count is not None else None,
                    match=str(spec["match"]) if spec.get("match") is not None else None,
                    size=int(size) if size is not None else None,
                )
                with state.lock:
                    state.fault = fault
                self._send(200, headers, json.dumps(fault.as_json()).encode())
            elif path == "/_emulator/reset" and method == "POST":
                with state.lock:
                    state.fault = Fault()
                    state.requests.clear()
                self._send(200, headers, b"{}")
            elif path == "/_emulator/state" and method == "GET":
                with state.lock:
                    snap = {
                        "version": state.version,
                        "fault": state.fault.as_json(),
                        "requests": list(state.requests),
                    }
                self._send(200, headers, json.dumps(snap).encode())
            else:
                self._send(404, headers, b'{"code":404,"message":"no such control endpoint"}')
        except (ValueError, TypeError) as exc:
            msg = json.dumps({"code": 400, "message": str(exc)}).encode()
            self._send(400, headers, msg)

    # -- DPAPI

    def _authorized(self) -> bool:
        state = self.server.state
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        users = state.refresh().userlists.get(state.options.userlist, {})
        entry = users.get(user)
        return entry is not None and check_password(entry, password)

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        state = self.server.state
        opts = state.options
        base = f"/v{state.api_version}"
        path = path.rstrip("/") or "/"
        if opts.auth_before_404 and not self._authorized():
            raise _error(401, "invalid credentials")
        if path != base and not path.startswith(base + "/"):
            raise _error(404, f"path {path} was not found")
        sub = path[len(base) :] or "/"
        route = self._match(sub, query)
        if route is None:
            raise _error(404, f"path {path} was not found")
        if not opts.auth_before_404 and not self._authorized():
            raise _error(401, "invalid credentials")
        if method != "GET":
            raise _error(405, f"method {method} not allowed by the emulator")
        return 200, route()

    def _match(self, sub: str, query: dict[str, list[str]]) -> Callable[[], Any] | None:
        """The handler of a path below /vN, or None (404)."""
        state = self.server.state
        v3 = state.api_version == 3
        if sub == "/":
            return lambda: [
                {"title": "Configuration", "url": f"/v{state.api_version}{CONFIG}"},
                {"title": "Info", "url": f"/v{state.api_version}/info"},
            ]
        if sub == "/info":
            ver = "v3.0.23 emulator" if v3 else "v2.9.27 emulator"
            return lambda: {
                "api": {"version": ver, "build_date": "2024-01-01T00:00:00Z"},
                "system": {},
            }
        if sub == "/health":
            return lambda: {"haproxy": "unknown"}
        if not sub.startswith(CONFIG + "/"):
            return None
        parts = [urllib.parse.unquote(p) for p in sub[len(CONFIG) + 1 :].split("/")]
        full = _flag(query, "full_section") and v3 and state.options.full_section
        if parts == ["version"]:
            return lambda: state.version
        if parts == ["frontends"]:
            return lambda: self._wrap([self._frontend_json(f, full) for f in self._cfg().frontends])
        if len(parts) == 2 and parts[0] == "frontends":
            return lambda: self._wrap(self._frontend_json(self._frontend(parts[1]), full))
        if v3 and len(parts) in (3, 4) and parts[0] == "frontends" and parts[2] == "binds":
            if len(parts) == 3:
                return lambda: self._binds_of(parts[1])
            return lambda: self._bind(parts[1], parts[3])
        if not v3 and parts[0] == "binds" and len(parts) in (1, 2):
            if len(parts) == 1:
                return lambda: self._wrap(self._binds_of(self._v2_parent(query)))
            return lambda: self._wrap(self._bind(self._v2_parent(query), parts[1]))
        if parts == ["defaults"]:
            if v3:
                return lambda: [dict(d.fields) for d in self._cfg().defaults]
            return lambda: self._wrap(self._v2_single_defaults())
        if v3 and len(parts) == 2 and parts[0] == "defaults":
            return lambda: dict(self._defaults(parts[1]).fields)
        if not v3 and state.options.named_defaults and parts[0] == "named_defaults":
            if len(parts) == 1:
                return lambda: self._wrap([dict(d.fields) for d in self._cfg().defaults])
            if len(parts) == 2:
                return lambda: self._wrap(dict(self._defaults(parts[1]).fields))
        return None

    # -- model helpers

    def _cfg(self) -> HaproxyConfig:
        return self.server.state.refresh()

    def _wrap(self, data: Any) -> Any:
        """v2 wraps configuration objects and lists; v3 returns them bare."""
        state = self.server.state
        if state.api_version == 3:
            return data
        return {"_version": state.version, "data": data}

    def _frontend(self, name: str) -> Section:
        for fe in self._cfg().frontends:
            if fe.name == name:
                return fe
        raise _error(404, f"frontend {name} does not exist")

    def _defaults(self, name: str) -> Section:
        for d in self._cfg().defaults:
            if d.name == name:
                return d
        raise _error(404, f"defaults section {name} does not exist")

    def _v2_single_defaults(self) -> dict[str, Any]:
        defaults = self._cfg().defaults
        return dict(defaults[0].fields) if defaults else {}

    def _frontend_json(self, fe: Section, full: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": fe.name, **fe.fields}
        if full and fe.binds:
            # Go's encoder omits an empty map (`omitempty`).
            obj["binds"] = {b["name"]: dict(b) for b in fe.binds}
        return obj

    def _binds_of(self, frontend: str) -> Any:
        for fe in self._cfg().frontends:
            if fe.name == frontend:
                if not fe.binds and self.server.state.options.null_binds:
                    return None
                return [dict(b) for b in fe.binds]
        return []  # a missing parent is an empty list, not a 404 (notes §2.3)

    def _bind(self, frontend: str, name: str) -> dict[str, Any]:
        for fe in self._cfg().frontends:
            if fe.name == frontend:
                for b in fe.binds:
                    if b["name"] == name:
                        return dict(b)
        raise _error(404, f"bind {name} does not exist in frontend {frontend}")

    def _v2_parent(self, query: dict[str, list[str]]) -> str:
        """The parent frontend of a v2 binds request (notes §2.3: `bindTypeParams`)."""
        frontend = _first(query, "frontend")
        if frontend:
            return frontend
        parent_type = _first(query, "parent_type")
        parent_name = _first(query, "parent_name")
        if not parent_type:
            raise _error(500, "parentType empty")
        if parent_type not in ("frontend", "log_forward", "peers"):
            raise _Reply(
                422,
                {
                    "code": 606,
                    "message": "parent_type in query should be one of [frontend log_forward peers]",
                },
            )
        if not parent_name:
            raise _error(500, "parentName empty")
        # log_forward/peers binds are not modelled: a frontend with that name never exists.
        return parent_name if parent_type == "frontend" else "\0"


def _first(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    return values[0] if values else ""


def _flag(query: dict[str, list[str]], key: str) -> bool:
    return _first(query, key).lower() in ("true", "1")


class EmulatorServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying the emulator state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], state: EmulatorState, *, verbose: bool = False
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.state = state
        self.verbose = verbose


class UnixHandler(Handler):
    """Handler on a unix socket: no TCP options, no client address."""

    disable_nagle_algorithm = False

    def address_string(self) -> str:
        return "unix"


class UnixEmulatorServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The emulator on a unix socket (DPAPI's `--scheme unix --socket-path`)."""

    daemon_threads = True

    def __init__(self, path: str, state: EmulatorState, *, verbose: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
        super().__init__(path, UnixHandler)
        self.state = state
        self.verbose = verbose


@dataclass
class EmulatorHandle:
    """A running emulator: its base URL (without /vN) and how to control and stop it."""

    url: str
    server: EmulatorServer | UnixEmulatorServer
    thread: threading.Thread

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    @property
    def version(self) -> int:
        """The configuration version the emulator is serving."""
        self.state.refresh()
        return self.state.version

    @property
    def requests(self) -> list[str]:
        """Request targets (path?query) received so far, control endpoints excluded."""
        with self.state.lock:
            return list(self.state.requests)

    def set_fault(
        self,
        mode: str,
        *,
        delay: float = 0.0,
        count: int | None = None,
        match: str | None = None,
        size: int | None = None,
    ) -> None:
        """Inject a fault (same as POST /_emulator/fault)."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        with self.state.lock:
            self.state.fault = Fault(mode, delay, count, match, size)

    def reset(self) -> None:
        """Clear the fault and the request log."""
        with self.state.lock:
            self.state.fault = Fault()
            self.state.requests.clear()

    def stop(self) -> None:
        """Stop serving, waking any request sleeping in `slow` mode."""
        self.state.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        if isinstance(self.server, UnixEmulatorServer):
            with contextlib.suppress(OSError):
                os.unlink(self.server.server_address)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(
    cfg_path: str | os.PathLike[str],
    api_version: int,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    options: Options | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    verbose: bool = False,
    unix_socket: str | os.PathLike[str] | None = None,
) -> EmulatorHandle:
    """Serve `cfg_path` as DPAPI v2 or v3 on host:port (0: any free port) in a thread,
    or on the unix socket `unix_socket` (URL `unix:///path`)."""
    if api_version not in (2, 3):
        raise ValueError("api_version must be 2 or 3")
    state = EmulatorState(os.fspath(cfg_path), api_version, options or Options())
    if unix_socket is not None:
        path = os.path.abspath(os.fspath(unix_socket))
        userver = UnixEmulatorServer(path, state, verbose=verbose)
        return EmulatorHandle(url=f"unix://{path}", server=userver, thread=_serving(userver))
    server = EmulatorServer((host, port), state, verbose=verbose)
    scheme = "http"
    if tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls_cert, tls_key)
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        scheme = "https"
    bound_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{bound_port}"
    return EmulatorHandle(url=url, server=server, thread=_serving(server))


def _serving(server: socketserver.BaseServer) -> threading.Thread:
    """Run `server` in a daemon thread; returns the thread."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="dpapi-emulator",
        daemon=True,
    )
    thread.start()
    return thread


# ----------------------------------------------------------------------- script


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--config", required=True, help="haproxy.cfg to serve")
    ap.add_argument("--api-version", type=int, choices=(2, 3), default=3)
    ap.add_argument("--listen", type=_listen, default=("127.0.0.1", 5555), help="HOST:PORT")
    ap.add_argument("--unix-socket", help="serve on this unix socket instead of TCP")
    ap.add_argument("--userlist", default="controller")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--auth-before-404", action="store_true", help="v3.4 behaviour")
    ap.add_argument("--no-full-section", action="store_true", help="ignore full_section")
    ap.add_argument("--null-binds", action="store_true", help="v3.4: empty bind list is null")
    ap.add_argument("--no-named-defaults", action="store_true", help="v2 without named_defaults")
    ap.add_argument("-v", "--verbose", action="store_true")
    ns = ap.parse_args(argv)
    options = Options(
        userlist=ns.userlist,
        auth_before_404=ns.auth_before_404,
        full_section=not ns.no_full_section,
        null_binds=ns.null_binds,
        named_defaults=not ns.no_named_defaults,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()  # nothing else happens in a handler

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = ns.listen
    handle = start_emulator(
        ns.config,
        ns.api_version,
        host,
        port,
        options=options,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        verbose=ns.verbose,
        unix_socket=ns.unix_socket,
    )
    print(f"dpapi-emulator: serving {ns.config} as /v{ns.api_version} on {handle.url}", flush=True)
    while not stop.wait(1.0):
        pass
    handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
