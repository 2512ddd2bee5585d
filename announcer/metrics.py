"""Prometheus metrics: counters fed by the service, gauges from a snapshot of its state.

prometheus_client does the exposition format and the counter/histogram types; the
HTTP server is metrics_http.py, on announcer's event loop. Anyone on
the host can connect to a loopback port, so nothing a client does may cost the
health checks their time or their file descriptors (issue 11: scrapes in bursts
stalled the loop for 60 ms each at 2 000 VIPs, 0.9 s at 10 000, and checks timed
out; held connections used up descriptors and checks failed with EMFILE):

* A page is rendered at most once per `min_interval`; scrapes in between, and
  scrapes arriving during a render, get the same bytes.
* Rendering is split: the service's state is copied into a `Snapshot` on the loop
  (between two steps of it, never halfway through one), and the text is generated
  from the snapshot and the counters in a thread.
* The server (metrics_http.py) bounds connections, their time and their requests.

Per-VIP series are one gauge per VIP (its state as a label), not one per VIP and
state: at 10 000 VIPs that is 10 000 series, not 60 000.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from . import __version__
from . import health as hm
from .health import State
from .model import SessionState
from .planner import Drain
from .status import Snapshot, take

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("announcer.metrics")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The longest request head we read (a scraper sends a few hundred bytes).


class Metrics:
    """The service's MetricsSink, and the renderer of its page."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, min_interval: float = 2.0
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.min_interval = min_interval
        r = self.registry
        self.checks = Counter(
            "announcer_checks", "Health checks done", ["kind", "result"], registry=r
        )
        self.check_seconds = Histogram(
            "announcer_check_duration_seconds",
            "Time a health check took",
            ["kind"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.local_failures = Counter(
            "announcer_check_local_failures",
            "Checks that failed for a reason of announcer's own (not counted against the VIP)",
            ["reason"],
            registry=r,
        )
        self.transitions = Counter(
            "announcer_vip_transitions", "VIP state changes", ["from", "to"], registry=r
        )
        self.path_updates = Counter(
            "announcer_path_updates", "Paths sent to gobgpd", ["op"], registry=r
        )
        self.resyncs = Counter(
            "announcer_gobgp_resyncs", "Full re-syncs after gobgpd's event stream ended", registry=r
        )
        self.gobgp_errors = Counter(
            "announcer_gobgp_errors", "Failed reconciles with gobgpd", registry=r
        )
        self.dataplane_errors = Counter(
            "announcer_dataplaneapi_errors", "Failed DataPlaneAPI polls", ["kind"], registry=r
        )
        self.scrapes = Counter(
            "announcer_metrics_connections",
            "Connections to the metrics endpoint, by outcome",
            ["outcome"],
            registry=r,
        )
        self.guard_engagements = Counter(
            "announcer_guard_engagements",
            "Times the mass-withdrawal guard engaged (guard.py)",
            registry=r,
        )
        self.renders = Counter(
            "announcer_metrics_renders", "Pages rendered (at most one per interval)", registry=r
        )
        self._check_children: dict[tuple[str, bool], tuple[Counter, Histogram]] = {}
        self.service: Service | None = None
        self._page: bytes | None = None
        self._page_at = float("-inf")  # loop time of the snapshot the page shows
        self._rendering: asyncio.Task[bytes] | None = None

    def attach(self, service: Service) -> None:
        self.service = service

    # MetricsSink
    def check_done(self, kind: str, ok: bool, duration: float) -> None:
        # Called for every check (10 000 a second at scale): the labelled children are
        # looked up once per (kind, result), not per call (`labels()` cost more than
        # the count and the observation together).
        children = self._check_children.get((kind, ok))
        if children is None:
            children = self._check_children[kind, ok] = (
                self.checks.labels(kind, "ok" if ok else "fail"),
                self.check_seconds.labels(kind),
            )
        children[0].inc()
        children[1].observe(duration)

    def guard_engaged(self) -> None:
        self.guard_engagements.inc()

    def check_local_failure(self, reason: str) -> None:
        self.local_failures.labels(reason).inc()

    def transition(self, old: State, new: State) -> None:
        self.transitions.labels(str(old), str(new)).inc()

    def applied(self, withdrawn: int, announced: int) -> None:
        if withdrawn:
            self.path_updates.labels("withdraw").inc(withdrawn)
        if announced:
            self.path_updates.labels("announce").inc(announced)

    def resync(self) -> None:
        self.resyncs.inc()

    def gobgp_error(self) -> None:
        self.gobgp_errors.inc()

    def dataplane_error(self, kind: str) -> None:
        self.dataplane_errors.labels(kind).inc()

    # Rendering
    def generate(self, snap: Snapshot | None) -> bytes:
        """The page of a snapshot (None: the counters only); `page` is the server's way."""
        # Thread-safe: prometheus_client locks every counter and family it reads.
        page = generate_latest(_Page(self.registry, snap))
        return page if snap is None else page + _vip_text(snap).encode()

    def cached(self, now: float) -> bytes | None:
        """The last page if it is younger than min_interval at loop time `now`."""
        if self._page is not None and now - self._page_at < self.min_interval:
            return self._page
        return None

    async def page(self) -> bytes:
        """The page, rendered at most once per min_interval; concurrent callers share a render."""
        loop = asyncio.get_running_loop()
        page = self.cached(loop.time())
        if page is not None:
            return page
        if self._rendering is None:
            self._rendering = loop.create_task(self._render(), name="metrics-render")
            # Retrieved here too, in case every scraper waiting for it has gone.
            self._rendering.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._rendering)

    async def _render(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            snap = await take(self.service) if self.service is not None else None
            taken = loop.time()
            page = await asyncio.to_thread(self.generate, snap)
            self._page, self._page_at = page, started
            self.renders.inc()
            log.debug(
                "page rendered: snapshot %.1f ms on the loop, %.1f ms in all, %d bytes",
                (taken - started) * 1e3,
                (loop.time() - started) * 1e3,
                len(page),
            )
            return page
        finally:
            self._rendering = None


class _Page:
    """The page's families but the per-VIP ones: the registry's counters, then gauges."""

    def __init__(self, registry: CollectorRegistry, snap: Snapshot | None) -> None:
        self.registry = registry
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        info = GaugeMetricFamily("announcer_info", "announcer's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if self.snap is not None:
            yield from _gauges(self.snap)


# The per-VIP families, written here rather than by prometheus_client: a sample
# object per series and the generic escaping made them 100 ms at 10 000 VIPs, and
# the garbage set off collections that held every thread. Addresses and state
# names need no escaping.
_VIP_FAMILIES = (
    ("announcer_vip_state", "1 for each VIP, labelled with its state"),
    ("announcer_vip_announced", "Whether announcer wants the VIP's route"),
    ("announcer_vip_drain", "1 for each drained VIP, with its phase"),
)


def _vip_text(snap: Snapshot) -> str:
    """The per-VIP families in the text format (version 0.0.4), labels sorted by name
    as prometheus_client writes them."""
    heads = [f"# HELP {name} {doc}\n# TYPE {name} gauge\n" for name, doc in _VIP_FAMILIES]
    state, announced, drain = [heads[0]], [heads[1]], [heads[2]]
    for address, vip_state, wanted, phase in zip(
        snap.addresses, snap.states, snap.wanted, snap.drains, strict=True
    ):
        a = str(address)
        state.append(f'announcer_vip_state{{state="{vip_state.value}",vip="{a}"}} 1.0\n')
        on = "0.0" if wanted is None else "1.0"
        announced.append(f'announcer_vip_announced{{vip="{a}"}} {on}\n')
        if phase is not Drain.NONE:
            drain.append(f'announcer_vip_drain{{phase="{phase.value}",vip="{a}"}} 1.0\n')
    return "".join(state) + "".join(announced) + "".join(drain)


def _gauges(snap: Snapshot) -> Iterator[Metric]:
    """The gauges of a snapshot but the per-VIP ones."""
    counts: dict[State, int] = dict.fromkeys(State, 0)
    for vip_state in snap.states:
        counts[vip_state] += 1
    desired = sum(1 for w in snap.wanted if w is not None)
    by_state = GaugeMetricFamily("announcer_vips", "VIPs by state", labels=["state"])
    for s, n in counts.items():
        by_state.add_metric([str(s)], n)
    yield by_state
    yield _gauge(
        "announcer_vips_healthy",
        "VIPs announced as healthy",
        sum(n for s, n in counts.items() if hm.announced(s)),
    )
    yield _gauge("announcer_paths_desired", "Routes announcer wants in gobgpd", desired)
    yield _gauge(
        "announcer_paths_announced",
        "Routes announcer has in gobgpd (as last read or applied)",
        snap.paths,
    )
    host = GaugeMetricFamily(
        "announcer_host_drained", "Whether the whole host is drained", labels=["cause"]
    )
    for cause, on in zip(("operator", "disable_file", "stopping"), snap.drained, strict=True):
        host.add_metric([cause], 1 if on else 0)
    yield host
    yield _gauge("announcer_gobgp_up", "gobgpd answered the last reconcile", int(snap.gobgp_ok))
    yield _gauge("announcer_synced", "A first full sync with gobgpd is done", int(snap.synced))
    peer = GaugeMetricFamily(
        "announcer_bgp_peer_established", "gobgpd's session to a router is up", labels=["peer"]
    )
    admin = GaugeMetricFamily(
        "announcer_bgp_peer_admin_down", "gobgpd holds the peer admin-down", labels=["peer"]
    )
    gr = GaugeMetricFamily(
        "announcer_bgp_peer_graceful_restart_seconds",
        "Graceful restart gobgpd advertises to the peer (0: none): how long the router "
        "may keep this LB's routes stale if gobgpd dies",
        labels=["peer"],
    )
    bfd = GaugeMetricFamily(
        "announcer_bgp_peer_bfd_up", "gobgpd's BFD session to the peer is up", labels=["peer"]
    )
    for p in snap.peers:
        peer.add_metric([p.address], 1 if p.state is SessionState.ESTABLISHED else 0)
        admin.add_metric([p.address], 1 if p.admin_down else 0)
        gr.add_metric([p.address], p.graceful_restart_s)
        if p.bfd is not None:
            bfd.add_metric([p.address], 1 if p.bfd == "up" else 0)
    yield peer
    yield admin
    yield gr
    yield bfd
    alarm = GaugeMetricFamily(
        "announcer_bgp_peer_alarm",
        "1 for a managed peer that is down (admin-down behind announcer's back, or its "
        "session not established for 10 s), with why",
        labels=["peer", "reason"],
    )
    for address, why in sorted(snap.peer_alarms.items()):
        alarm.add_metric([address, why], 1)
    yield alarm
    yield _gauge(
        "announcer_vip_loss_held_vips",
        "VIPs kept although DataPlaneAPI's answers lack them, until the loss is confirmed",
        snap.held,
    )
    yield _gauge(
        "announcer_guard_engaged",
        "1 while the mass-withdrawal guard keeps failing VIPs announced (made worse)",
        int(snap.guard_engaged),
    )
    yield _gauge(
        "announcer_vips_guarded",
        "VIPs the guard keeps announced with 65535:0 and more prepends instead of withdrawn",
        snap.guarded,
    )
    yield _gauge(
        "announcer_vips_damped",
        "VIPs held withdrawn by flap damping, whatever their checks say",
        snap.damped,
    )
    yield _gauge(
        "announcer_vips_not_local",
        "VIPs the kernel does not deliver to this host (no address, no local route): "
        "not announced while health.require_local holds",
        snap.not_local,
    )
    if snap.local_check is not None:
        yield _gauge(
            "announcer_local_check_up",
            "Whether the local-VIP check works (netlink); 0: VIPs go by their checks alone",
            int(snap.local_check),
        )
    yield _gauge(
        "announcer_state_dir_usable",
        "Whether drains are saved (the state directory passed its checks)",
        int(snap.state_saved),
    )
    yield _gauge(
        "announcer_dataplaneapi_up", "DataPlaneAPI answered the last poll", int(snap.dataplane_ok)
    )
    yield _gauge(
        "announcer_dataplaneapi_last_success_timestamp_seconds",
        "When DataPlaneAPI last answered (Unix time)",
        snap.dataplane_last_ok or 0,
    )
    if snap.last_sync is not None:
        yield _gauge(
            "announcer_gobgp_last_sync_timestamp_seconds",
            "When the last reconcile with gobgpd succeeded (Unix time)",
            snap.last_sync,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
