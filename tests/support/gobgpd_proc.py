"""A real gobgpd on 127.0.0.1 for adapter tests: config in a tmp dir, free ports, kill by PID.

Used as a context manager (or start()/stop() in a fixture's try/finally) so the daemon
is killed even when the test fails. Each instance gets its own API and BGP ports and
runs with pprof disabled, so several can run side by side (gobgp-api-notes 4.3).

`version` picks the daemon: 3 is Debian bookworm's gobgpd 3.10 (/usr/bin), 4 is Debian
sid's 4.8.0 that scripts/fetch-gobgp4 unpacks under .cache/gobgp4 (scripts/deps runs
it). Both read the same TOML config. A missing binary fails the test, it never skips.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
GOBGP4_ROOT = Path(os.environ.get("GOBGP4_ROOT", REPO / ".cache" / "gobgp4" / "root"))
# version -> (gobgpd, gobgp CLI)
BINARIES: dict[int, tuple[Path, Path]] = {
    3: (Path("/usr/bin/gobgpd"), Path("/usr/bin/gobgp")),
    4: (GOBGP4_ROOT / "usr/bin/gobgpd", GOBGP4_ROOT / "usr/bin/gobgp"),
}
VERSIONS = tuple(BINARIES)  # for pytest parametrization: every test runs on each
# No HTTP listener at all: 4.x serves Prometheus metrics on localhost:6060 even with
# --pprof-disable unless the metrics path is empty (3.x has no such flag).
QUIET_FLAGS: dict[int, tuple[str, ...]] = {
    3: ("--pprof-disable",),
    4: ("--pprof-disable", "--metrics-path="),
}
HOST = "127.0.0.1"


def binaries(version: int) -> tuple[str, str]:
    """The gobgpd and gobgp paths of a major version; AssertionError if missing."""
    daemon, cli = BINARIES[version]
    hint = "apt-get install gobgpd" if version == 3 else "run scripts/fetch-gobgp4"
    for path in (daemon, cli):
        assert path.is_file(), f"gobgpd {version}.x binary {path} missing ({hint})"
    return str(daemon), str(cli)


# Ports handed out by this process: never hand one out twice.
_GIVEN: set[int] = set()
_PORT_CEILING = 30000  # below Linux's default ephemeral range (32768 - 60999)


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _PORT_CEILING


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no connect() will take.

    A port from bind(0) is an ephemeral one: between this call and gobgpd's listen,
    any outgoing connection on the machine (a peer dialling, a test's client) may get
    it as its source port, and gobgpd exits with "address already in use" (seen in CI).
    Ports below the kernel's ephemeral range are only ever taken by an explicit bind.
    """
    high = min(_ephemeral_low(), _PORT_CEILING)
    low = max(1024, high - 10000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {low}..{high - 1} on {HOST}")


@dataclass
class Neighbor:
    """An eBGP/iBGP neighbor on 127.0.0.1 listening on `port`."""

    peer_as: int
    port: int
    passive: bool = False
    admin_down: bool = False


@dataclass
class GobgpdProc:
    """One gobgpd process; `api_target` is what GobgpClient and `gobgp -p` connect to."""

    workdir: Path
    asn: int = 65001
    router_id: str = "192.0.2.1"
    neighbors: list[Neighbor] = field(default_factory=list)
    name: str = "gobgpd"
    version: int = 3  # which gobgpd: see BINARIES
    api_port: int = field(default_factory=free_port)
    bgp_port: int = field(default_factory=free_port)
    # Serve the API on a unix socket instead of 127.0.0.1:api_port.
    api_socket: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def api_target(self) -> str:
        if self.api_socket is not None:
            return f"unix://{self.api_socket}"
        return f"{HOST}:{self.api_port}"

    @property
    def gobgpd(self) -> str:
        return binaries(self.version)[0]

    @property
    def gobgp(self) -> str:
        return binaries(self.version)[1]

    def _cli_target(self) -> list[str]:
        if self.api_socket is not None:
            return ["--target", self.api_target]
        return ["-u", HOST, "-p", str(self.api_port)]

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def config_toml(self) -> str:
        lines = [
            "[global.config]",
            f"  as = {self.asn}",
            f'  router-id = "{self.router_id}"',
            f"  port = {self.bgp_port}",
            f'  local-address-list = ["{HOST}"]',
        ]
        for n in self.neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{HOST}"',
                f"    peer-as = {n.peer_as}",
                f"    admin-down = {str(n.admin_down).lower()}",
                "  [neighbors.transport.config]",
                f"    remote-port = {n.port}",
                f'    local-address = "{HOST}"',
                f"    passive-mode = {str(n.passive).lower()}",
                "  [neighbors.timers.config]",
                "    connect-retry = 1",
                "    hold-time = 9",
                "    keepalive-interval = 3",
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                '      afi-safi-name = "ipv4-unicast"',
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                '      afi-safi-name = "ipv6-unicast"',
            ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start gobgpd and wait until its API reports our AS."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already running (pid {self.proc.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_toml())
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    self.gobgpd,
                    "-f",
                    str(self.config_path),
                    "-t",
                    "toml",
                    "--api-hosts",
                    self.api_target,
                    *QUIET_FLAGS[self.version],
                    "-p",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        # GetBgp answers asn 0 until the config file is loaded; wait for our AS.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            # Cheap probe first: the CLI waits about a second on a closed port.
            if not self._api_listening():
                time.sleep(0.02)
                continue
            r = subprocess.run(
                [self.gobgp, *self._cli_target(), "global", "-j"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if r.returncode == 0:
                try:
                    if json.loads(r.stdout)["asn"] == self.asn:
                        return
                except (ValueError, KeyError, TypeError):
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} API not ready after {timeout}s:\n{self.log_tail()}")

    def _api_listening(self) -> bool:
        if self.api_socket is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                return s.connect_ex(str(self.api_socket)) == 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex((HOST, self.api_port)) == 0

    def stop(self) -> None:
        """Kill gobgpd by PID and reap it; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Kill and start again on the same ports (every API path is lost, as in production)."""
        self.stop()
        self.start()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> GobgpdProc:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- CLI

    def cli(self, *args: str) -> str:
        """Run `gobgp ARGS...` against this daemon's API; raises on failure."""
        r = subprocess.run(
            [self.gobgp, *self._cli_target(), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if r.returncode != 0:
            raise RuntimeError(f"gobgp {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r.stdout

    def cli_json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "-j"))


def wait_for(predicate: object, timeout: float = 15.0, interval: float = 0.1) -> None:
    """Poll `predicate()` until it returns something truthy or raise TimeoutError."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met after {timeout}s (last value {last!r})")
