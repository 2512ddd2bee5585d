"""announcer.gobgp runs on Debian bookworm's own python3-grpcio and python3-protobuf.

The committed generated code (protoc 3.21) must load on protobuf 4.21 as well as on the
venv's protobuf 7.x. This runs a real announce, read-back and withdraw against a real
gobgpd (3.10 and 4.8.0, the API version detected as in production) under
/usr/bin/python3 with only Debian packages on the path:
python3-grpcio python3-protobuf python3-yaml python3-requests.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gobgpd_proc import VERSIONS, GobgpdProc

pytestmark = pytest.mark.gobgpd

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"

SCRIPT = r"""
import ipaddress, json, sys
import google.protobuf, grpc
from announcer.gobgp import GobgpClient
from announcer.model import Community, LargeCommunity, Route

target = sys.argv[1]
net, ip = ipaddress.ip_network, ipaddress.ip_address
routes = [
    Route(net("192.0.2.90/32"), med=7, communities=(Community(65001, 90),),
          large_communities=(LargeCommunity(65001, 9, 0),), as_path_prepend=2),
    Route(net("2001:db8::90/128"), next_hop=ip("2001:db8:ffff::9"), local_pref=150),
]
with GobgpClient(target) as client:
    client.apply([], routes)
    read_back = client.local_routes()
    client.apply([r.prefix for r in routes], [])
    after = client.local_routes()
    opened = []

    def on_open():  # END_OF_INIT: gobgpd is up and the watch registered
        opened.append(True)
        client.cancel_watch()

    client.wait_closed(on_open)
print(json.dumps({
    "protobuf": google.protobuf.__version__,
    "protobuf_file": google.protobuf.__file__,
    "grpc": grpc.__version__,
    "grpc_file": grpc.__file__,
    "round_trip": read_back == {r.prefix: r for r in routes},
    "after_withdraw": len(after),
    "watch_opened": opened == [True],
    "api_version": client._current("compat").version,
}))
"""


@pytest.fixture(params=VERSIONS, ids=lambda v: f"gobgpd{v}")
def gobgpd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GobgpdProc]:
    proc = GobgpdProc(tmp_path / "a", asn=65001, name="a", version=request.param)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_adapter_on_debian_python_packages(gobgpd: GobgpdProc) -> None:
    assert Path(DEBIAN_PYTHON).is_file(), "Debian's python3 is missing"
    # A clean environment: no venv, no user site-packages, only the repo on the path.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYTHONNOUSERSITE": "1"}
    if "LANG" in os.environ:
        env["LANG"] = os.environ["LANG"]
    r = subprocess.run(
        [DEBIAN_PYTHON, "-s", "-W", "error", "-c", SCRIPT, gobgpd.api_target],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
    )
    assert r.returncode == 0, (
        f"{DEBIAN_PYTHON} failed (apt-get install python3-grpcio python3-protobuf "
        f"python3-yaml python3-requests?):\n{r.stderr}"
    )
    result = json.loads(r.stdout.strip().splitlines()[-1])
    # Really Debian's packages, not something pip put on the path.
    assert result["protobuf_file"].startswith("/usr/lib/python3/dist-packages/"), result
    assert result["grpc_file"].startswith("/usr/lib/python3/dist-packages/"), result
    assert result["round_trip"] is True
    assert result["after_withdraw"] == 0
    assert result["watch_opened"]  # END_OF_INIT seen, then cancel_watch() ended it quietly
    assert result["api_version"] == gobgpd.version
