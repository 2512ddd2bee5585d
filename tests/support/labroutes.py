"""What the lab routers have for a prefix: next hops in FRR's RIB and in the kernel.

The announcer lab's VIPs and LB next hops, shared by test_announcer_lab.py and
test_operations_lab.py, and the client load of test_truth_lab.py and test_migrate_lab.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from tests.integration.lab import LBS, Lab, kernel_route, wait_until
from tests.integration.stack import ANNOUNCED_VIPS, lb_nexthops

ROUTERS = ("r1", "r2")
NH4 = {"lb1": "198.51.100.11", "lb2": "198.51.100.12"}
NH6 = {"lb1": "2001:db8:ff::11", "lb2": "2001:db8:ff::12"}
V4_VIPS = ("192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32")
V6_VIP = "2001:db8:0:1::10/128"
GS = "65535:0"  # GRACEFUL_SHUTDOWN, RFC 8326; FRR shows it by name
WELL_KNOWN = {"graceful-shutdown": GS}


def nexthops(lab: Lab, prefix: str) -> dict[str, tuple[set[str], set[str]]]:
    """Per router: (next hops in FRR's RIB, gateways of the kernel route)."""
    out = {}
    for r in ROUTERS:
        kernel = kernel_route(lab.ns(r), prefix)
        gws: set[str] = set()
        if kernel is not None:
            gws = {h["gateway"] for h in kernel.get("nexthops", [])} or {kernel.get("gateway", "")}
        out[r] = (lab.frr_nexthops(r, prefix), gws)
    return out


def routers_have(lab: Lab, prefix: str, want: set[str]) -> bool:
    return all(rib == want and kern == want for rib, kern in nexthops(lab, prefix).values())


def wait_routers(lab: Lab, prefix: str, want: set[str], timeout: float = 20.0) -> float:
    """Poll both routers until `prefix` has exactly the next hops `want`; returns when."""
    wait_until(
        partial(routers_have, lab, prefix, want),
        timeout=timeout,
        interval=0.05,
        what=f"{prefix} -> {sorted(want)} at r1 and r2",
    )
    return time.monotonic()


def wait_all(lab: Lab, lbs: tuple[str, ...] = LBS, timeout: float = 30) -> None:
    """Every announced VIP at both routers via exactly the LBs `lbs`."""
    for vip in ANNOUNCED_VIPS:
        wait_routers(lab, vip, lb_nexthops(vip, lbs), timeout=timeout)


@contextmanager
def client_load(lab: Lab, url: str) -> Iterator[list[tuple[float, bool, str]]]:
    """curl `url` from the client in a loop (a new connection, so a new hash, each time);
    yields the list of (start time, ok, answer) it fills."""
    results: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            cp = lab.exec("client", ["curl", "-s", "--max-time", "1", url], check=False)
            results.append((started, cp.returncode == 0, cp.stdout.strip()))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield results
    finally:
        stop.set()
        t.join(timeout=10)
