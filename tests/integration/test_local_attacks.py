"""Local attacks on announcer's metrics endpoint, judged by what the routers see.

In the lab of test_faults.py (same fixture, same route sampling: tests/support/labfaults.py),
an unprivileged user in lb1's namespace (uid/gid 65534, no groups) scrapes /metrics in
bursts of parallel connections and holds idle connections open, for about 20 seconds
(bounded in time and in the number of connections, loopback only). Before issue 11
this stalled announcer's event loop, timed checks out and withdrew healthy VIPs,
and the held connections used up its descriptors (EMFILE). Now: no route changes
at either router, no VIP leaves UP, and no check fails.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.lab import Lab
from tests.integration.stack import ANNOUNCED_VIPS
from tests.support.labfaults import LBS, Sampler, lab, stack

pytestmark = pytest.mark.lab

__all__ = ["lab"]  # the fixture, from tests/support/labfaults.py (one lab for this module)

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# The system Python (readable by nobody; the attack needs only the standard library).
PYTHON = "/usr/bin/python3"
ATTACK_SECONDS = 20.0

# Bounded: at most ATTACK_SECONDS, at most 40 000 connections in all, at most 300
# idle ones held at once and bursts of 64; only 127.0.0.1.
ATTACK = r"""
import json, socket, sys, threading, time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
end = time.monotonic() + seconds
budget = threading.Semaphore(40000)
stats = {"scrapes": 0, "refused": 0, "held": 0, "bytes": 0}
lock = threading.Lock()

def count(key, n=1):
    with lock:
        stats[key] += n

def scrape():
    if not budget.acquire(blocking=False):
        return
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            n = 0
            while chunk := s.recv(65536):
                n += len(chunk)
        count("scrapes" if n else "refused")
        count("bytes", n)
    except OSError:
        count("refused")

def bursts():
    while time.monotonic() < end:
        threads = [threading.Thread(target=scrape) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

def hold():
    held = []
    while time.monotonic() < end:
        held = [s for s in held if s.fileno() >= 0]
        while len(held) < 300 and time.monotonic() < end and budget.acquire(blocking=False):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
                count("held")
            except OSError:
                break
        time.sleep(0.2)
        for s in list(held):  # drop the ones the server closed, open new ones
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                s.close()
    for s in held:
        s.close()

workers = [threading.Thread(target=bursts) for _ in range(2)] + [threading.Thread(target=hold)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps(stats))
"""


def scrape_as_root(lab: Lab, lb: str = "lb1") -> str:
    return lab.exec(lb, ["curl", "-sf", "--max-time", "5", "http://127.0.0.1:9642/metrics"]).stdout


def counter(page: str, series: str) -> float:
    """The sum of a counter's samples whose line starts with `series`."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith(series) and not line.startswith("#")
    )


def test_unprivileged_scrape_floods_change_no_route(lab: Lab) -> None:
    s = stack(lab)
    before = scrape_as_root(lab)
    fails_before = counter(before, 'announcer_checks_total{kind="http",result="fail"}')
    log_before = len(s.announcer_log())
    with Sampler(lab) as sampler:
        time.sleep(1.0)
        cp = lab.exec(
            "lb1",
            [*NOBODY, PYTHON, "-c", ATTACK, "9642", str(ATTACK_SECONDS)],
            timeout=ATTACK_SECONDS + 30,
        )
        time.sleep(1.0)
    stats = json.loads(cp.stdout)
    print("attack:", stats)
    # The attack was real: pages were served, and connections beyond the limit refused.
    assert stats["scrapes"] > 100 and stats["held"] > 100, stats
    assert stats["refused"] > 0, stats

    assert not sampler.errors, sampler.errors
    assert len(sampler.samples) > 20
    changes = {(lb, vip): sampler.changes(lb, vip) for lb in LBS for vip in ANNOUNCED_VIPS}
    assert all(n == 0 for n in changes.values()), changes
    first = sampler.samples[0][1]
    assert all(paths == first for _, paths in sampler.samples)

    # announcer's checks kept passing: no failed check, no VIP left UP.
    after = scrape_as_root(lab)
    assert counter(after, 'announcer_checks_total{kind="http",result="fail"}') == fails_before
    log = s.announcer_log()[log_before:]
    assert not re.search(r"VIP \S+: UP -> ", log), log[-3000:]
    assert "Too many open files" not in log
    status = s.control("status")
    states = {
        v["address"]: v["state"]
        for v in status["vips"]
        if f"{v['address']}/{128 if ':' in v['address'] else 32}" in ANNOUNCED_VIPS
    }
    assert len(states) == len(ANNOUNCED_VIPS) and set(states.values()) == {"UP"}, states
    # The server said why it refused (too many connections), and it still answers root.
    assert counter(after, 'announcer_metrics_connections_total{outcome="too_many"}') > 0
    assert after.startswith("# HELP")
