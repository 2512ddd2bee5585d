"""Fate-sharing keeper: a dead announcer must not leave its LB announced.

gobgpd does not tie paths to the API client that added them (notes 3.1): when
announcer dies, every path it injected stays, and the routers would keep sending
traffic to VIPs nobody checks any more. So `announcer run` starts this small child
process first (keeper_process.py, which loads almost nothing while it waits). It
holds the read end of a pipe whose write end only announcer has.

* announcer stops cleanly: it writes `release` and the keeper exits, touching nothing
  (the graceful stop has already drained and withdrawn, or the operator chose
  withdraw_on_stop: false to keep routes across a planned restart).
* announcer dies any other way (SIGKILL, OOM killer, a crash, systemd's watchdog
  abort): the kernel closes the pipe, the keeper reads EOF at once, withdraws every
  route announcer owns (locally originated host routes inside allowed_prefixes) and
  disables gobgpd's peers (DisablePeer sends a Cease NOTIFICATION), so the routers
  drop every route of this LB within milliseconds, not after a hold timer.

Why withdraw first: with BGP graceful restart negotiated (RFC 8538's "N" bit), a
router keeps a peer's routes as *stale* for the restart time after an
Administrative Shutdown, and neither gobgpd 3.10 nor 4.8 turns DisablePeer into a
Hard Reset (measured in the lab: 3.1 s stale with a 3 s restart time, on both). A
withdrawal is honoured whatever GR says. The keeper waits (at most WITHDRAW_WAIT)
until no peer's Adj-RIB-Out holds the withdrawn routes, because 4.8 writes
DisablePeer's NOTIFICATION to the socket ahead of queued UPDATEs.

A restarted announcer injects the complete set again and then enables the peers
(service.py), which is also what makes a gobgpd restart safe: gobgpd's neighbors are
configured `admin-down`, so they come up only once the set is complete.

The keeper ignores SIGTERM, SIGINT, SIGHUP and SIGABRT: systemd's stop and its
watchdog abort signal the whole cgroup, and the keeper must still act if announcer
died. It exits by itself. (SIGKILL of the whole cgroup, `systemctl kill -s KILL`,
takes the keeper too: docs/operations.md says what covers that.)
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from .config import GobgpConfig
from .keeper_process import RELEASE
from .model import HostPrefix, IPNetwork, SessionState

if TYPE_CHECKING:
    from .gobgp import GobgpClient

log = logging.getLogger("announcer.keeper")

GIVE_UP_AFTER = 15.0  # seconds of retrying while gobgpd is unreachable
WITHDRAW_WAIT = 1.0  # at most this long for the withdrawals to leave every Adj-RIB-Out


class Keeper:
    """announcer's handle on its keeper process (service.KeeperHandle)."""

    def __init__(self, cfg: GobgpConfig, allow: Sequence[IPNetwork]) -> None:
        self.cfg = cfg
        self.allow = tuple(allow)  # announcer's routes: withdrawn before the peers go
        self.proc: subprocess.Popen[bytes] | None = None
        self.respawn()

    def _argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "announcer.keeper_process",
            "--gobgp",
            self.cfg.address,
            "--api-version",
            str(self.cfg.api_version),
            "--timeout",
            str(self.cfg.timeout),
        ]
        for p in self.cfg.peers:
            argv += ["--peer", p]
        for n in self.allow:
            argv += ["--allow", str(n)]
        return argv

    def respawn(self) -> None:
        # The write end is ours alone: Popen closes other fds in children and Python
        # makes pipes non-inheritable, so command checks cannot hold it open.
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.PIPE)
        log.debug("fate-sharing keeper started, pid %d", self.proc.pid)

    def own(self, allow: Sequence[IPNetwork]) -> None:
        """announcer now owns routes in `allow` (a reload grew the allow-list): a new
        keeper that knows them takes over before the old one is released."""
        if tuple(allow) == self.allow:
            return
        old = self.proc
        self.allow = tuple(allow)
        self.respawn()
        if old is not None and old.stdin is not None:
            try:
                old.stdin.write(RELEASE)
                old.stdin.close()
                old.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.warning("the previous keeper did not exit cleanly: %s", e)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def release(self) -> None:
        """A clean stop: tell the keeper to exit without touching gobgpd."""
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(RELEASE)
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("keeper did not exit cleanly: %s", e)
        self.proc = None


def withdraw_and_disable(
    address: str,
    api_version: Literal["auto", 3, 4],
    timeout: float,
    only: Sequence[str],
    allow: Sequence[IPNetwork],
    give_up_after: float = GIVE_UP_AFTER,
) -> tuple[int, int]:
    """Withdraw announcer's routes, wait until no peer advertises them, then disable
    gobgpd's peers (all, or `only`); returns (routes withdrawn, peers disabled).
    Retries while gobgpd is down."""
    from .errors import GobgpError
    from .gobgp import GobgpClient
    from .planner import allowed

    deadline = time.monotonic() + give_up_after
    with GobgpClient(address, timeout=timeout, api_version=api_version) as client:
        while True:
            try:
                mine = [p for p in client.local_routes() if allowed(p, allow)]
                if mine:
                    client.apply(mine, [])
                    _wait_withdrawn(client, set(mine), only)
                done = 0
                for p in client.peers():
                    if (only and p.address not in only) or p.admin_down:
                        continue
                    client.disable_peer(p.address, "announcer stopped: no health checks")
                    done += 1
                return len(mine), done
            except GobgpError as e:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s; retrying", e)
                time.sleep(0.5)


def _wait_withdrawn(client: GobgpClient, gone: set[HostPrefix], only: Sequence[str]) -> None:
    """Until no established peer's Adj-RIB-Out holds a route of `gone`, at most
    WITHDRAW_WAIT (then the peers are disabled anyway)."""
    end = time.monotonic() + WITHDRAW_WAIT
    while time.monotonic() < end:
        peers = [
            p.address
            for p in client.peers()
            if p.state is SessionState.ESTABLISHED and not (only and p.address not in only)
        ]
        if not any(client.advertised(p) & gone for p in peers):
            return
        time.sleep(0.02)
    log.warning("withdrawals still in a peer's Adj-RIB-Out after %.1fs", WITHDRAW_WAIT)


def act(
    address: str,
    api_version: Literal["auto", 3, 4],
    timeout: float,
    only: Sequence[str],
    allow: Sequence[IPNetwork],
) -> int:
    """announcer died: withdraw its routes and disable the peers (keeper_process.py calls
    this after the pipe's EOF); the keeper's exit status."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    started = time.monotonic()
    log.error("announcer died: withdrawing its routes and disabling gobgpd's peers")
    from .errors import GobgpError

    try:
        routes, peers = withdraw_and_disable(address, api_version, timeout, only, allow)
    except GobgpError as e:
        log.critical("could not withdraw the routes or disable gobgpd's peers: %s", e)
        return 1
    took = (time.monotonic() - started) * 1000
    log.error("withdrew %d routes and disabled %d peers in %.0f ms", routes, peers, took)
    return 0
