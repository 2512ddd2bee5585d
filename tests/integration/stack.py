"""The software stack of one lab load balancer, on top of lab.Lab.

In an LB's namespace: the VIPs on `lo`, one small HTTP server per HAProxy backend,
HAProxy itself (master-worker, foreground, so its PID is ours and SIGUSR2 reloads
it), the DataPlaneAPI emulator reading that HAProxy's config, and announcer
talking to the LB's gobgpd. Every process is started through the Lab, so it is
stopped by PID and torn down with the lab whatever happens.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.integration.lab import LBS, RACK_ADDR, ROUTERS, Lab, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HAPROXY_CFG = HERE / "haproxy" / "lb.cfg"
ANNOUNCER_CFG = HERE / "announcer"
EMULATOR = REPO / "tests" / "support" / "dpapi_emulator.py"
BACKEND = REPO / "tests" / "support" / "backend.py"  # the file server behind HAProxy
PASSWORD = "lab-only-secret"  # the emulator's userlist in haproxy/lb.cfg

VIPS = ("192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32", "192.0.2.200/32", "2001:db8:0:1::10/128")
BACKENDS = {"web": 18080, "api": 18081}
# What announcer announces: the VIPs inside allowed_prefixes of announcer/lbN.yaml.
# 192.0.2.200 (fe_outside) is bound by HAProxy but deliberately outside the allow-list.
OUTSIDE_VIP = "192.0.2.200/32"
ANNOUNCED_VIPS = tuple(v for v in VIPS if v != OUTSIDE_VIP)


class LbStack:
    """HAProxy + backends + DataPlaneAPI emulator + announcer in one LB namespace."""

    def __init__(self, lab: Lab, lb: str, *, api_version: int = 3) -> None:
        assert lab.tmp is not None
        self.lab = lab
        self.lb = lb
        self.api_version = api_version
        self.dir = lab.tmp / lb / "stack"
        self.cfg = self.dir / "haproxy.cfg"
        self.announcer_cfg = ANNOUNCER_CFG / f"{lb}.yaml"

    def name(self, what: str) -> str:
        return f"{self.lb}-{what}"

    def start(self, *, announcer: bool = True) -> LbStack:
        """Bring up everything; returns once HAProxy serves and the emulator answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = HAPROXY_CFG.read_text().replace("@LB@", f"{self.lab.prefix}{self.lb}")
        self.cfg.write_text(cfg.replace("@RUNDIR@", str(self.dir)))
        for vip in VIPS:
            self.lab.add_vip(self.lb, vip)
        for backend in BACKENDS:
            self.start_backend(backend)
        self.start_haproxy()
        self.start_emulator()
        if announcer:
            self.start_announcer()
        return self

    def start_backend(self, backend: str) -> None:
        """A tiny HTTP server that says which LB and backend answered."""
        root = self.dir / f"www-{backend}"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text(f"{self.lb} {backend}\n")
        port = BACKENDS[backend]
        self.lab.start(
            self.lb,
            [
                sys.executable,
                str(BACKEND),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(root),
                str(port),
            ],
            name=self.name(f"backend-{backend}"),
        )
        self._wait_http("127.0.0.1", port, "/")

    def stop_backend(self, backend: str) -> None:
        self.lab.stop(self.name(f"backend-{backend}"))

    def start_haproxy(self) -> None:
        self.lab.start(
            self.lb, ["haproxy", "-W", "-db", "-f", str(self.cfg)], name=self.name("haproxy")
        )
        self._wait_http("192.0.2.10", 80, "/healthz")

    def stop_haproxy(self) -> None:
        self.lab.stop(self.name("haproxy"))

    def reload_haproxy(self) -> None:
        import signal

        self.lab.signal(self.name("haproxy"), signal.SIGUSR2)

    def start_emulator(self) -> None:
        self.lab.start(
            self.lb,
            [
                sys.executable,
                str(EMULATOR),
                "--config",
                str(self.cfg),
                "--api-version",
                str(self.api_version),
                "--listen",
                "127.0.0.1:5555",
            ],
            name=self.name("dpapi"),
        )
        self._wait_http("127.0.0.1", 5555, f"/v{self.api_version}/info", ok=(200, 401))

    @property
    def control_socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def disable_file(self) -> Path:
        return self.dir / "disable"

    @property
    def run_cfg(self) -> Path:
        return self.dir / "announcer.yaml"

    def write_announcer_cfg(self, **sections: dict[str, Any]) -> Path:
        """announcer/lbN.yaml with this run's paths (the LBs share one filesystem) and
        `sections` merged over it, e.g. drain={"delay": 1}; returns the file."""
        doc = yaml.safe_load(self.announcer_cfg.read_text())
        doc.setdefault("service", {}).update(
            control_socket=str(self.control_socket), state_dir=str(self.dir / "state")
        )
        doc.setdefault("drain", {})["disable_file"] = str(self.disable_file)
        # The LB's gobgpd API socket in this run's temp dir (/run/gobgpd in a VM).
        doc.setdefault("gobgp", {})["address"] = f"unix://{self.lab.api_socket(self.lb)}"
        for name, values in sections.items():
            doc.setdefault(name, {}).update(values)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_cfg.write_text(yaml.safe_dump(doc))
        return self.run_cfg

    def start_announcer(self, *extra: str, env: dict[str, str] | None = None) -> None:
        if not self.run_cfg.exists():
            self.write_announcer_cfg()
        full_env = dict(os.environ)
        full_env["ANNOUNCER_DPAPI_PASSWORD"] = PASSWORD
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        self.lab.start(
            self.lb,
            [sys.executable, "-m", "announcer", "run", "-c", str(self.run_cfg), *extra],
            name=self.name("announcer"),
            env=full_env,
        )

    def control(self, command: str, **args: Any) -> Any:
        """A request on announcer's control socket (what `announcer status` sends)."""
        from announcer.control import request

        return request(self.control_socket, {"command": command, **args})

    def stop_announcer(self, timeout: float = 10.0) -> None:
        self.lab.stop(self.name("announcer"), timeout=timeout)

    def announcer_log(self) -> str:
        """Everything announcer logged in this lab (also after it stopped)."""
        assert self.lab.tmp is not None
        return (self.lab.tmp / self.lb / f"{self.name('announcer')}.log").read_text()

    def edit_cfg(self, old: str, new: str) -> None:
        """Change the HAProxy config in place (the emulator sees it like DPAPI's watcher)."""
        text = self.cfg.read_text()
        assert old in text, f"{old!r} not in {self.cfg}"
        self.cfg.write_text(text.replace(old, new))

    def _wait_http(self, host: str, port: int, path: str, ok: tuple[int, ...] = (200, 503)) -> None:
        url_host = f"[{host}]" if ":" in host else host
        argv = [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            f"http://{url_host}:{port}{path}",
        ]

        def up() -> bool:
            out = self.lab.exec(self.lb, argv, check=False).stdout.strip()
            return out.isdigit() and int(out) in ok

        wait_until(up, timeout=15, interval=0.1, what=f"{self.lb} http://{url_host}:{port}{path}")


def have_tools() -> None:
    """Fail loudly (never skip) when the lab's tools are missing."""
    for tool in ("haproxy", "gobgpd", "curl", "vtysh"):
        assert shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists(), f"{tool} not installed"


def lb_nexthops(vip: str, lbs: tuple[str, ...] = LBS) -> set[str]:
    """The next hops the routers should have for `vip`: the LBs' rack addresses."""
    family = 1 if ":" in vip else 0
    return {RACK_ADDR[lb][family] for lb in lbs}


def wait_vips_at_routers(
    lab: Lab, vips: tuple[str, ...] = ANNOUNCED_VIPS, timeout: float = 30.0
) -> None:
    """Wait until every VIP is at r1 and r2 with both LBs as next hops (zebra RIB and kernel)."""

    def wrong() -> list[str]:
        out = []
        for vip in vips:
            want = lb_nexthops(vip)
            for r in ROUTERS:
                rib, kernel = lab.frr_nexthops(r, vip), lab.kernel_nexthops(r, vip)
                if rib != want or kernel != want:
                    out.append(f"{r} {vip}: rib {sorted(rib)} kernel {sorted(kernel)}")
        return out

    wait_until(
        wrong,
        timeout=timeout,
        interval=0.2,
        check=lambda w: not w,
        what="every VIP at r1 and r2 via both LBs",
    )
