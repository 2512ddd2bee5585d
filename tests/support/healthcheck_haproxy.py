"""A stand-in for the seed's `healthcheck-haproxy.py`, for the migration lab (issue 15).

The seed runs a modified copy of ExaBGP's healthcheck.py that we do not have. What its
README says it does: list the frontends' bind addresses from DataPlaneAPI (user
`dataplaneapi`, http://127.0.0.1:5555, `--api-password`), run `--cmd` once per service
IP with `%s` = the IP, and otherwise behave as ExaBGP's healthcheck (its options:
interval, rise/fall, metrics, communities, disable file...). This stand-in does exactly
that with ExaBGP's own code for everything but the listing: one Debian
`exabgp-healthcheck --ip IP/32` child per IPv4 VIP, given every option it was given
(minus `--api-password`, `%s` replaced), their announce/withdraw lines relayed to
ExaBGP. So what the routers get from ExaBGP in the lab is healthcheck.py's behaviour,
not ours. IPv4 only: the seed's neighbors carry `family { ipv4 unicast; }`.

Stdlib only; run by ExaBGP as `python3 healthcheck_haproxy.py [healthcheck options]`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

URL = "http://127.0.0.1:5555/v3/services/haproxy/configuration/frontends?full_section=true"
USER = "dataplaneapi"
HEALTHCHECK = "/usr/bin/exabgp-healthcheck"


def vips(password: str) -> list[str]:
    """Literal IPv4 bind addresses of every frontend, in order, once each."""
    req = urllib.request.Request(URL)
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        frontends = json.load(r)
    out: list[str] = []
    for fe in frontends:
        binds = fe.get("binds") or {}
        for b in binds.values() if isinstance(binds, dict) else binds:
            try:
                ip = ipaddress.ip_address(b.get("address", ""))
            except ValueError:
                continue  # wildcards, unix sockets
            if ip.version == 4 and not ip.is_unspecified and str(ip) not in out:
                out.append(str(ip))
    return out


def main(argv: list[str]) -> int:
    args = list(argv)
    password = ""
    if "--api-password" in args:
        i = args.index("--api-password")
        password = args[i + 1]
        del args[i : i + 2]
    children: list[subprocess.Popen[bytes]] = []
    lock = threading.Lock()

    def relay(child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            with lock:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()

    def stop(*_: object) -> None:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            c.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for ip in vips(password):
        child_args = [a.replace("%s", ip) for a in args]
        child = subprocess.Popen(
            [HEALTHCHECK, "--no-ack", "--no-ip-setup", "--ip", f"{ip}/32", *child_args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        children.append(child)
        threading.Thread(target=relay, args=(child,), daemon=True).start()
    # ExaBGP closes our stdin when it stops: take the children with us.
    for _ in sys.stdin.buffer:
        pass
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
