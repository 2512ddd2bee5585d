"""Fakes for the service tests: DataPlaneAPI, gobgpd and the prober as the service sees them.

They enforce the invariants and fail loudly on misuse (FakeTable refuses an empty plan,
a withdraw of a path that is not there, anything outside ALLOW). Test modules import
these from here, never from another test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from announcer.configfile import parse_config
from announcer.errors import GobgpError
from announcer.locality import Locality
from announcer.metrics import Metrics
from announcer.model import (
    CheckResult,
    CheckSpec,
    Discovery,
    Frontend,
    HostPrefix,
    PeerStatus,
    RawBind,
    Route,
    validate_route,
)
from announcer.planner import allowed
from announcer.service import Service
from announcer.status import take_now

A = ipaddress.ip_address
N = ipaddress.ip_network
ALLOW = (N("192.0.2.0/24"),)


def config(**over: Any) -> Any:
    doc: dict[str, Any] = {
        "allowed_prefixes": ["192.0.2.0/24"],
        "dataplaneapi": {"password_env": "X", "poll_interval": 0.1},
        "gobgp": {"resync_interval": 1},
        "health": {"interval": 0.1, "fast_interval": 0.05, "timeout": 0.05, "rise": 2, "fall": 2},
        "service": {"startup_grace": 1.0, "stop_timeout": 2, "state_dir": None},
        "drain": {"delay": 0, "disable_file": None},
        "metrics": {"enabled": False},
    }
    for k, v in over.items():
        doc[k] = {**doc.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(doc)


def frontend(name: str, *addresses: str, port: int = 80) -> Frontend:
    return Frontend(
        name,
        "http",
        monitor_uri="/healthz",
        binds=tuple(RawBind(f"b{i}", a, port) for i, a in enumerate(addresses)),
    )


class FakeSource:
    def __init__(self, *frontends: Frontend) -> None:
        self.frontends = frontends
        self.version = 1
        self.fail: Exception | None = None
        self.calls = 0

    async def configuration_version(self) -> int:
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.version

    async def discover(self) -> Discovery:
        if self.fail:
            raise self.fail
        return Discovery(self.version, self.frontends)

    def set(self, *frontends: Frontend) -> None:
        self.frontends = frontends
        self.version += 1


class FakeTable:
    """gobgpd as a dict; refuses anything the real adapter must never be asked to do."""

    def __init__(self) -> None:
        self.routes: dict[HostPrefix, Route] = {}
        self.applies: list[tuple[tuple[HostPrefix, ...], tuple[Route, ...]]] = []
        self.withdrawn: list[HostPrefix] = []
        self.down = False
        self._closed = threading.Event()
        self.reads = 0
        self.peer_list: list[PeerStatus] = []
        self.enabled: list[str] = []
        self.expected = False  # enable_peer must find routes already injected
        self.refused = 0  # calls refused while down
        self.on_open: Callable[[], None] | None = None  # the last watcher's callback
        self.reconnects = 0  # reconnect() calls: the watch's attempt had failed

    def local_routes(self) -> dict[HostPrefix, Route]:
        if self.down:
            self.refused += 1
            raise GobgpError("connection refused")
        self.reads += 1
        return dict(self.routes)

    def apply(self, withdraw: Sequence[HostPrefix], announce: Sequence[Route]) -> None:
        if self.down:
            raise GobgpError("connection refused")
        assert withdraw or announce, "empty plan sent to gobgpd"
        for r in announce:
            validate_route(r)
            assert allowed(r.prefix, ALLOW), f"{r.prefix} announced outside the allow-list"
        for p in withdraw:
            assert allowed(p, ALLOW), f"withdraw of {p}, which is not ours"
            assert p in self.routes, f"withdraw of {p}, which is not there"
            del self.routes[p]
            self.withdrawn.append(p)
        for r in announce:
            self.routes[r.prefix] = r
        self.applies.append((tuple(withdraw), tuple(announce)))

    def peers(self) -> list[PeerStatus]:
        return list(self.peer_list)

    def enable_peer(self, address: str) -> None:
        assert self.routes or not self.expected, "peer enabled before the set was injected"
        self.enabled.append(address)
        self.peer_list = [
            PeerStatus(p.address, p.peer_asn, p.state, False) if p.address == address else p
            for p in self.peer_list
        ]

    def wait_closed(self, on_open: Callable[[], None] | None = None) -> None:
        self.on_open = on_open
        if on_open is not None and not self.down:
            on_open()
        self._closed.wait()
        self._closed.clear()

    def cancel_watch(self) -> None:
        self._closed.set()

    def reconnect(self) -> None:
        self.reconnects += 1

    def restart(self) -> None:
        """gobgpd restarted: every API path is gone and the event stream ends."""
        self.routes.clear()
        self._closed.set()


class FakeProber:
    def __init__(self) -> None:
        self.bad: set[str] = set()
        self.runs = 0
        self.delay = 0.0  # seconds each probe takes

    async def run(self, spec: CheckSpec) -> CheckResult:
        self.runs += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        ok = str(spec.address) not in self.bad
        return CheckResult(ok, "HTTP 200" if ok else "HTTP 503", 0.001)


async def until(cond: Callable[[], object], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


class FakeKernel:
    """The kernel's local addresses as the local-VIP check sees them (locality.py):
    every address is local but those in `not_local`; `set_local` also sends the event
    the real kernel would, through a socket pair the event loop watches."""

    def __init__(self, *not_local: str) -> None:
        self.not_local = set(not_local)
        self.lookups = 0
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._changed: set[str] = set()

    def set_local(self, address: str, local: bool) -> None:
        (self.not_local.discard if local else self.not_local.add)(address)
        self._changed.add(address)
        self._w.send(b"!")

    def routes(self) -> Any:
        kernel = self

        class Routes:
            def not_local(self, addresses: Any) -> set[Any]:
                kernel.lookups += 1
                return {a for a in addresses if str(a) in kernel.not_local}

            def close(self) -> None:
                pass

        return Routes()

    def events(self) -> Any:
        kernel = self

        class Events:
            def fileno(self) -> int:
                return kernel._r.fileno()

            def read(self) -> tuple[set[Any], bool]:
                with contextlib.suppress(BlockingIOError):
                    kernel._r.recv(4096)
                changed, kernel._changed = kernel._changed, set()
                return {ipaddress.ip_network(a) for a in changed}, False

            def close(self) -> None:
                pass

        return Events()

    def locality(self, core: Any, wake: Callable[[], None]) -> Locality:
        return Locality(core, wake, routes=self.routes, events=self.events)

    def close(self) -> None:
        self._r.close()
        self._w.close()


class Harness:
    def __init__(
        self,
        source: FakeSource,
        table: FakeTable | None = None,
        *,
        kernel: FakeKernel | None = None,
        **cfg: Any,
    ) -> None:
        self.source = source
        self.table = table or FakeTable()
        self.prober = FakeProber()
        self.svc = Service(
            config(**cfg),
            source=source,
            table=self.table,
            prober=self.prober,
            locality=kernel.locality if kernel is not None else None,
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.svc.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def prefixes(self) -> set[str]:
        return {str(p) for p in self.table.routes}


def render(metrics: Metrics) -> bytes:
    """The metrics page of `metrics` here and now (the server renders off the loop)."""
    svc = metrics.service
    return metrics.generate(take_now(svc) if svc is not None else None)


def run(coro: Any) -> None:
    asyncio.run(coro)
