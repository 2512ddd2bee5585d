"""The lab demo: watch announcer steer two core routers' ECMP routes.

Builds the namespace lab (two FRR routers, two HAProxy load balancers each with
gobgpd and announcer, one client), shows what the routers have for every VIP,
fails a backend on lb1 live and shows its VIP leave lb1 and come back, then tears
everything down. Run it as root through `scripts/demo`.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.lab import Lab, kernel_route, wait_until
from tests.integration.stack import LbStack

LBS = {
    "198.51.100.11": "lb1",
    "198.51.100.12": "lb2",
    "2001:db8:ff::11": "lb1",
    "2001:db8:ff::12": "lb2",
}
VIPS = ("192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32", "2001:db8:0:1::10/128", "192.0.2.200/32")


def say(text: str = "") -> None:
    print(text, flush=True)


def view(lab: Lab, prefix: str) -> str:
    cells = []
    for r in ("r1", "r2"):
        hops = sorted(LBS.get(h, h) for h in lab.frr_nexthops(r, prefix))
        kernel = kernel_route(lab.ns(r), prefix)
        k = "(in kernel)" if kernel else "(not in kernel)"
        cells.append(f"{r}: {'+'.join(hops) if hops else '-':<8} {k:<16}")
    return "   ".join(cells)


def table(lab: Lab) -> None:
    for prefix in VIPS:
        say(f"    {prefix:<22} {view(lab, prefix)}")


def log_at(line: str) -> float | None:
    """The wall-clock time of an announcer log line (`2026-11-30 18:23:55,286 ...`)."""
    try:
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def timeline(events: list[tuple[float, str]], log: str, vip: str, t0: float) -> None:
    """Print what happened to `vip` after t0: our events and announcer's log lines."""
    for line in log.splitlines():
        at = log_at(line)
        if (
            at is not None
            and at >= t0
            and vip in line
            and ("->" in line or "draw" in line or "announce " in line)
        ):
            events.append((at, "announcer: " + line[24:].split(": ", 1)[-1][:90]))
    for at, what in sorted(events):
        say(f"    {at - t0:6.2f}s  {what}")


def nexthops(lab: Lab, prefix: str) -> set[str]:
    return {LBS.get(h, h) for r in ("r1", "r2") for h in lab.frr_nexthops(r, prefix)}


def main() -> int:
    say("== announcer lab demo")
    say("Building: namespaces r1, r2 (FRR, AS 65530), lb1, lb2 (HAProxy, DataPlaneAPI")
    say("emulator, gobgpd AS 65512, announcer) and a client, on documentation addresses.")
    started = time.monotonic()
    with Lab(enable_peers=False, wait_established=False) as lab:  # announcer enables peers
        stacks = {lb: LbStack(lab, lb).start() for lb in ("lb1", "lb2")}
        for prefix in VIPS[:4]:
            wait_until(
                lambda p=prefix: nexthops(lab, p) == {"lb1", "lb2"},
                timeout=30,
                interval=0.1,
                what=f"{prefix} from both LBs",
            )
        say(f"Up in {time.monotonic() - started:.1f}s.  (lab prefix {lab.prefix})")
        say()
        say("1. What the core routers have for each VIP (FRR's BGP RIB, and whether the")
        say("   route is in the router's kernel table). Every healthy VIP has both LBs as")
        say("   next hops: ECMP. 192.0.2.200 is bound by HAProxy but outside announcer's")
        say("   allowed_prefixes, so it never leaves the LB.")
        table(lab)
        say()
        seen = {
            lab.exec(
                "client", ["curl", "-s", "--max-time", "2", "http://192.0.2.10/"], check=False
            ).stdout.strip()
            for _ in range(12)
        }
        say(f"2. The client fetches http://192.0.2.10/ 12 times; answers came from: {sorted(seen)}")
        say()
        say("3. Kill the only server of backend be_api on lb1. HAProxy's monitor-uri of fe_api")
        say("   (192.0.2.11) turns to 503, announcer's check fails 3 times (fall=3, every")
        say("   0.2-0.5 s), and lb1 withdraws 192.0.2.11/32 from gobgpd:")
        t0, wall0 = time.monotonic(), time.time()
        events = [(wall0, "the server of be_api on lb1 is killed")]
        stacks["lb1"].stop_backend("api")
        wait_until(
            lambda: nexthops(lab, "192.0.2.11/32") == {"lb2"},
            timeout=15,
            interval=0.05,
            what="192.0.2.11 only via lb2",
        )
        events.append((time.time(), "r1 and r2: 192.0.2.11/32 only via lb2"))
        say(f"   ... gone from lb1 at both routers after {time.monotonic() - t0:.2f}s:")
        table(lab)
        say()
        say("4. Bring the server back: after rise=2 good checks lb1 announces it again:")
        t0 = time.monotonic()
        events.append((time.time(), "the server is started again"))
        stacks["lb1"].start_backend("api")
        wait_until(
            lambda: nexthops(lab, "192.0.2.11/32") == {"lb1", "lb2"},
            timeout=15,
            interval=0.05,
            what="192.0.2.11 via both",
        )
        events.append((time.time(), "r1 and r2: 192.0.2.11/32 via lb1 and lb2 again"))
        say(f"   ... back after {time.monotonic() - t0:.2f}s:")
        table(lab)
        say()
        say("The failover as a timeline (seconds after the server died; announcer's log")
        say("lines about 192.0.2.11 and what the routers showed):")
        timeline(events, stacks["lb1"].announcer_log(), "192.0.2.11", wall0)
        say()
        say("Tearing down (every process by PID, every namespace).")
    say("Done. To keep a lab for exploring: make lab-up (then make lab-down).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
