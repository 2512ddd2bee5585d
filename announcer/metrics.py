"""Prometheus metrics: counters fed by the service, gauges read from it at scrape time.

prometheus_client does the exposition format and the counter/histogram types. We
serve /metrics from announcer's own event loop (a few lines of asyncio below)
rather than prometheus_client's HTTP thread, so a scrape reads the service's state
between two steps of the loop and never while a step is halfway through.

Per-VIP series are one gauge per VIP (its state as a label), not one per VIP and
state: at 10 000 VIPs that is 10 000 series, not 60 000.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import __version__
from . import health as hm
from .health import State
from .model import SessionState
from .planner import Drain

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("announcer.metrics")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's MetricsSink, and the collector of its gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self._check_children: dict[tuple[str, bool], tuple[Counter, Histogram]] = {}
        self.service: Service | None = None
        r.register(_Gauges(self))

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges:
    """Reads the service's state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("announcer_info", "announcer's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        svc = self.metrics.service
        if svc is None:
            return
        now = svc.clock()
        state = GaugeMetricFamily(
            "announcer_vip_state",
            "1 for each VIP, labelled with its state",
            labels=["vip", "state"],
        )
        announced = GaugeMetricFamily(
            "announcer_vip_announced", "Whether announcer wants the VIP's route", labels=["vip"]
        )
        drain = GaugeMetricFamily(
            "announcer_vip_drain", "1 for each drained VIP, with its phase", labels=["vip", "phase"]
        )
        counts: dict[State, int] = dict.fromkeys(State, 0)
        desired = svc.desired()
        for address, vs in svc.vips.items():
            a = str(address)
            state.add_metric([a, str(vs.state)], 1)
            announced.add_metric([a], 1 if vs.vip.prefix in desired else 0)
            counts[vs.state] += 1
            phase = svc.phase(address, now)
            if phase is not Drain.NONE:
                drain.add_metric([a, str(phase)], 1)
        yield state
        yield announced
        yield drain
        by_state = GaugeMetricFamily("announcer_vips", "VIPs by state", labels=["state"])
        for s, n in counts.items():
            by_state.add_metric([str(s)], n)
        yield by_state
        yield _gauge(
            "announcer_vips_healthy",
            "VIPs announced as healthy",
            sum(n for s, n in counts.items() if hm.announced(s)),
        )
        yield _gauge("announcer_paths_desired", "Routes announcer wants in gobgpd", len(desired))
        report_routes = svc._actual
        yield _gauge(
            "announcer_paths_announced",
            "Routes announcer has in gobgpd (as last read or applied)",
            len(report_routes) if report_routes is not None else 0,
        )
        host = GaugeMetricFamily(
            "announcer_host_drained", "Whether the whole host is drained", labels=["cause"]
        )
        host.add_metric(["operator"], 1 if svc._drain_host is not None else 0)
        host.add_metric(["disable_file"], 1 if svc._drain_file is not None else 0)
        host.add_metric(["stopping"], 1 if svc._drain_stop is not None else 0)
        yield host
        yield _gauge(
            "announcer_gobgp_up", "gobgpd answered the last reconcile", 1 if svc.gobgp_ok else 0
        )
        yield _gauge(
            "announcer_synced",
            "A first full sync with gobgpd is done",
            1 if svc.synced.is_set() else 0,
        )
        peer = GaugeMetricFamily(
            "announcer_bgp_peer_established", "gobgpd's session to a router is up", labels=["peer"]
        )
        admin = GaugeMetricFamily(
            "announcer_bgp_peer_admin_down", "gobgpd holds the peer admin-down", labels=["peer"]
        )
        for p in svc.peers:
            peer.add_metric([p.address], 1 if p.state is SessionState.ESTABLISHED else 0)
            admin.add_metric([p.address], 1 if p.admin_down else 0)
        yield peer
        yield admin
        yield _gauge(
            "announcer_dataplaneapi_up",
            "DataPlaneAPI answered the last poll",
            1 if svc.dataplane_ok else 0,
        )
        yield _gauge(
            "announcer_dataplaneapi_last_success_timestamp_seconds",
            "When DataPlaneAPI last answered (Unix time)",
            svc.dataplane_last_ok or 0,
        )
        if svc.last_sync is not None:
            yield _gauge(
                "announcer_gobgp_last_sync_timestamp_seconds",
                "When the last reconcile with gobgpd succeeded (Unix time)",
                svc.last_sync,
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def serve(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """GET /metrics on host:port, answered from the event loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].split()
            if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif line[1].split(b"?")[0] in (b"/metrics", b"/"):
                started = time.perf_counter()
                status, body, ctype = "200 OK", metrics.render(), CONTENT_TYPE_LATEST
                log.debug("scrape rendered in %.1f ms", (time.perf_counter() - started) * 1e3)
            else:
                status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if line and line[0] != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=16384)
