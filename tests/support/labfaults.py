"""The fault lab shared by the lab modules that inject faults on lb1.

test_faults.py, test_dpapi_faults_lab.py, test_safety_lab.py and test_local_attacks.py
each build this lab once (`lab`, a module-scoped fixture: import it into the test
module) and judge a fault by what the routers' BGP tables hold while it lasts
(`Sampler`, `bgp_paths`, `lb_prefixes`, `want`).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration.lab import Lab, LabError, vtysh_json, wait_until
from tests.integration.stack import ANNOUNCED_VIPS, LbStack, have_tools

LBS = ("lb1", "lb2")
ROUTERS = ("r1", "r2")
PEER = {"lb1": ("198.51.100.11", "2001:db8:ff::11"), "lb2": ("198.51.100.12", "2001:db8:ff::12")}
# tests/integration/announcer/lbN.yaml: DataPlaneAPI timeout 2 s.
DPAPI_TIMEOUT = 2.0


# ------------------------------------------------------------------ what routers see


def bgp_paths(lab: Lab) -> set[tuple[str, str, str]]:
    """(router, prefix, LB) for every path the routers' BGP tables hold from an LB."""
    by_peer = {addr: lb for lb, addrs in PEER.items() for addr in addrs}
    out = set()
    for r in ROUTERS:
        for afi in ("ipv4", "ipv6"):
            table = vtysh_json(lab.router(r), f"show bgp {afi} unicast json")
            for prefix, paths in table.get("routes", {}).items():
                for p in paths:
                    peer = p.get("peerId") or next(
                        (h.get("ip") for h in p.get("nexthops", [])), None
                    )
                    if peer in by_peer:
                        out.add((r, prefix, by_peer[peer]))
    return out


def lb_prefixes(paths: set[tuple[str, str, str]], lb: str) -> dict[str, set[str]]:
    """Per router, the prefixes `lb` has there."""
    return {r: {p for (rr, p, who) in paths if rr == r and who == lb} for r in ROUTERS}


def want(vips: tuple[str, ...] = ANNOUNCED_VIPS) -> dict[str, set[str]]:
    return {r: set(vips) for r in ROUTERS}


@dataclass
class Sampler:
    """Samples the routers' BGP tables in a thread until stopped."""

    lab: Lab
    samples: list[tuple[float, set[tuple[str, str, str]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), bgp_paths(self.lab)))
            except LabError as e:
                self.errors.append(str(e))
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def changes(self, lb: str, prefix: str) -> int:
        """How often `prefix` via `lb` appeared or disappeared at any router."""
        count = 0
        for r in ROUTERS:
            seen = [(r, prefix, lb) in paths for _, paths in self.samples]
            count += sum(1 for a, b in itertools.pairwise(seen) if a != b)
        return count


# ------------------------------------------------------------------ the lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    have_tools()
    # Peers stay admin-down until announcer has injected its set (fate-sharing).
    with Lab(enable_peers=False, wait_established=False) as lab:
        stacks = {lb: LbStack(lab, lb) for lb in LBS}
        for s in stacks.values():
            # health.path: the flapping frontend has no monitor-uri of its own.
            s.write_announcer_cfg(health={"path": "/healthz"})
            s.start()
        lab.stacks = stacks  # type: ignore[attr-defined]
        try:
            wait_until(
                lambda: all(lb_prefixes(bgp_paths(lab), lb) == want() for lb in LBS),
                timeout=40,
                interval=0.2,
                what="every VIP at r1 and r2 via lb1 and lb2",
            )
        except Exception:
            for s in stacks.values():
                print(s.announcer_log()[-5000:])
            raise
        yield lab


def stack(lab: Lab, lb: str = "lb1") -> LbStack:
    return lab.stacks[lb]  # type: ignore[attr-defined,no-any-return]


def wait_lb1(lab: Lab, vips: tuple[str, ...], timeout: float = 20.0) -> None:
    wait_until(
        lambda: lb_prefixes(bgp_paths(lab), "lb1"),
        timeout=timeout,
        interval=0.1,
        check=lambda got: got == want(vips),
        what=f"lb1 announces exactly {sorted(vips)} at both routers",
    )


def emulator_fault(lab: Lab, mode: str, **extra: object) -> None:
    """Inject a fault into lb1's DataPlaneAPI emulator (its control endpoint)."""
    body = json.dumps({"mode": mode, **extra})
    cp = lab.exec(
        "lb1",
        ["curl", "-sf", "-X", "POST", "-d", body, "http://127.0.0.1:5555/_emulator/fault"],
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
