"""What the lab routers have for a prefix: next hops in FRR's RIB and in the kernel.

The announcer lab's VIPs and LB next hops, shared by test_announcer_lab.py and
test_operations_lab.py.
"""

from __future__ import annotations

import time
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
