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

from tests.integration.lab import Lab, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HAPROXY_CFG = HERE / "haproxy" / "lb.cfg"
ANNOUNCER_CFG = HERE / "announcer"
EMULATOR = HERE / "dpapi_emulator.py"
PASSWORD = "lab-only-secret"  # the emulator's userlist in haproxy/lb.cfg

VIPS = ("192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32", "192.0.2.200/32", "2001:db8:0:1::10/128")
BACKENDS = {"web": 18080, "api": 18081}


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
        self.cfg.write_text(HAPROXY_CFG.read_text().replace("@LB@", f"{self.lab.prefix}{self.lb}"))
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
                "-m",
                "http.server",
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

    def start_announcer(self, *extra: str) -> None:
        env = dict(os.environ)
        env["ANNOUNCER_DPAPI_PASSWORD"] = PASSWORD
        env["PYTHONPATH"] = str(REPO)
        self.lab.start(
            self.lb,
            [sys.executable, "-m", "announcer", "run", "-c", str(self.announcer_cfg), *extra],
            name=self.name("announcer"),
            env=env,
        )

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
