"""DataPlaneClient against the DPAPI emulator serving a real haproxy.cfg, for v2 and v3,
over TCP, TLS and a unix socket.

The client is asyncio-native: each test drives its own event loop with asyncio.run.
Hostile servers (drips, half-open, huge answers) and impostors are in
test_dataplane_hostile.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from announcer.dataplane import DataPlaneClient
from announcer.errors import DataPlaneAuthError, DataPlaneError
from announcer.model import Frontend, Listener, RawBind
from announcer.vips import vips_from_frontends
from tests.support.dpapi_emulator import EmulatorHandle, Options, start_emulator

FIXTURES = Path(__file__).parents[1] / "fixtures"
EMULATOR = Path(__file__).parents[1] / "support" / "dpapi_emulator.py"
PASSWORD = "adminpwd"
ip = ipaddress.ip_address
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# What tests/fixtures/haproxy-vips.cfg must turn into (same for v2 and v3).
EXPECTED_FRONTENDS = (
    Frontend(
        "fe_web",
        mode="http",
        monitor_uri="/healthz",
        binds=(
            RawBind("web_http", "192.0.2.10", 80),
            RawBind("web_https", "192.0.2.10", 443, ssl=True),
            RawBind("web_v6", "2001:db8::10", 80),
            RawBind("*:8080", "*", 8080),
        ),
    ),
    Frontend(
        "fe_api",
        mode="http",  # inherited from the last (unnamed) defaults section
        binds=(
            RawBind("api_tls", "192.0.2.10", 8443, ssl=True, accept_proxy=True),
            RawBind(":8444", "", 8444),
        ),
    ),
    Frontend(
        "fe_db",
        mode="tcp",  # from tcp_defaults
        binds=(
            RawBind("db_pg", "198.51.100.20", 5432),
            RawBind("db_mysql", "ipv4@198.51.100.21", 3306),
            RawBind("db_range", "198.51.100.22", 8000, 8010),
        ),
    ),
    Frontend(
        "fe_local",
        mode="http",
        binds=(  # abns@internal is dropped by DPAPI itself
            RawBind("local_sock", "unix@/run/haproxy/local.sock"),
            RawBind("/run/haproxy/alt.sock", "/run/haproxy/alt.sock"),
            RawBind("loop", "127.0.0.1", 9000),
            RawBind(":::9002", "::", 9002, v4v6=True),
        ),
    ),
    Frontend(
        "fe_old",
        mode="http",
        disabled=True,
        binds=(RawBind("old_http", "192.0.2.99", 80),),
    ),
)


def _sorted(frontends: tuple[Frontend, ...]) -> dict[str, tuple[str, Any, bool, Any, set[RawBind]]]:
    # v3's bind map has no order: compare binds as sets.
    return {f.name: (f.name, f.mode, f.disabled, f.monitor_uri, set(f.binds)) for f in frontends}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "haproxy.cfg"
    shutil.copy(FIXTURES / "haproxy-vips.cfg", path)
    return path


@pytest.fixture(params=[2, 3], ids=["v2", "v3"])
def api(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def emu(cfg: Path, api: int) -> Iterator[EmulatorHandle]:
    handle = start_emulator(cfg, api)
    yield handle
    handle.stop()


def client(emu: EmulatorHandle | str, **kw: Any) -> DataPlaneClient:
    kw.setdefault("username", "admin")
    kw.setdefault("password", PASSWORD)
    kw.setdefault("timeout", 2.0)
    return DataPlaneClient(emu if isinstance(emu, str) else emu.url, **kw)


def edit(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))


# ------------------------------------------------------------------ discovery


def test_discovery_matches_the_cfg(emu: EmulatorHandle, api: int) -> None:
    async def main() -> Any:
        async with client(emu) as c:
            assert await c.api_version() == api
            return await c.discover()

    found = run(main())
    assert found.version == 1
    assert [f.name for f in found.frontends] == [f.name for f in EXPECTED_FRONTENDS]
    assert _sorted(found.frontends) == _sorted(EXPECTED_FRONTENDS)


def test_vips_from_the_cfg(emu: EmulatorHandle) -> None:
    async def main() -> Any:
        async with client(emu) as c:
            return (await c.discover()).frontends

    result = vips_from_frontends(run(main()))
    assert set(result.vips) == {
        ip("192.0.2.10"),
        ip("2001:db8::10"),
        ip("198.51.100.20"),
        ip("198.51.100.21"),
        ip("198.51.100.22"),
    }
    shared = result.vips[ip("192.0.2.10")]
    assert shared.frontends == ("fe_api", "fe_web")
    assert {(lst.frontend, lst.port, lst.ssl) for lst in shared.listeners} == {
        ("fe_api", 8443, True),
        ("fe_web", 80, False),
        ("fe_web", 443, True),
    }
    web = next(lst for lst in shared.listeners if lst.port == 80)
    assert web.monitor_uri == "/healthz" and web.mode == "http"
    ranged = Listener("fe_db", "db_range", 8000, mode="tcp")  # a range: its first port
    assert ranged in result.vips[ip("198.51.100.22")].listeners
    skipped = {(s.frontend, s.bind) for s in result.skipped}
    assert ("fe_old", None) in skipped
    assert {("fe_web", "*:8080"), ("fe_api", ":8444"), ("fe_local", "loop")} <= skipped


def discover_with(emu: EmulatorHandle | str, **kw: Any) -> Any:
    async def main() -> Any:
        async with client(emu, **kw) as c:
            return await c.discover()

    return run(main())


def test_v3_uses_one_full_section_call(cfg: Path) -> None:
    with start_emulator(cfg, 3) as emu:
        discover_with(emu, api_version=3)
        reqs = emu.requests
    assert reqs == [
        "/v3/services/haproxy/configuration/frontends?full_section=true",
        "/v3/services/haproxy/configuration/defaults",  # fe_api/fe_db have no own mode
    ]


def test_v3_falls_back_to_per_frontend_binds(cfg: Path) -> None:
    opts = Options(full_section=False)
    with start_emulator(cfg, 3, options=opts) as emu:
        found = discover_with(emu, api_version=3)
        reqs = emu.requests
    assert _sorted(found.frontends) == _sorted(EXPECTED_FRONTENDS)
    assert "/v3/services/haproxy/configuration/frontends/fe_db/binds" in reqs


def test_v2_lists_binds_per_frontend(cfg: Path) -> None:
    with start_emulator(cfg, 2) as emu:
        discover_with(emu, api_version=2)
        reqs = emu.requests
    assert reqs[0] == "/v2/services/haproxy/configuration/frontends"
    assert "/v2/services/haproxy/configuration/binds?frontend=fe_web" in reqs
    assert reqs[-1] == "/v2/services/haproxy/configuration/named_defaults"


def test_one_keep_alive_connection_carries_a_whole_v2_discovery(cfg: Path) -> None:
    connections: list[object] = []
    with start_emulator(cfg, 2) as emu:
        original = emu.server.process_request

        def counting(request: Any, address: Any) -> None:
            connections.append(address)
            original(request, address)

        emu.server.process_request = counting  # type: ignore[method-assign]
        found = discover_with(emu, api_version=2)
        reqs = emu.requests
    assert len(found.frontends) == 5
    assert len(reqs) == 7  # frontends, 5 x binds, named_defaults
    assert len(connections) == 1


def test_names_are_url_encoded(tmp_path: Path, api: int) -> None:
    path = tmp_path / "odd.cfg"
    path.write_text(
        "userlist controller\n    user admin insecure-password adminpwd\n"
        "frontend fe:odd.name\n    mode tcp\n    bind 192.0.2.77:25 name smtp\n"
        "frontend fe_empty\n    mode tcp\n"
    )
    opts = Options(full_section=False, null_binds=True)
    with start_emulator(path, api, options=opts) as emu:
        found = discover_with(emu)
    assert found.frontends == (
        Frontend("fe:odd.name", mode="tcp", binds=(RawBind("smtp", "192.0.2.77", 25),)),
        Frontend("fe_empty", mode="tcp"),  # v3.4 `null` bind list counts as empty
    )


def test_v2_without_named_defaults_uses_single_defaults(tmp_path: Path) -> None:
    path = tmp_path / "old.cfg"
    path.write_text(
        "defaults\n    mode tcp\n"
        "userlist controller\n    user admin insecure-password adminpwd\n"
        "frontend fe\n    bind 192.0.2.5:22\n"
    )
    opts = Options(named_defaults=False)
    with start_emulator(path, 2, options=opts) as emu:
        (fe,) = discover_with(emu).frontends
        reqs = emu.requests
    assert fe.mode == "tcp"
    assert reqs[-2:] == [
        "/v2/services/haproxy/configuration/named_defaults",
        "/v2/services/haproxy/configuration/defaults",
    ]


# -------------------------------------------------------------------- versions


def test_auto_detection_probes_v3_then_v2(emu: EmulatorHandle, api: int) -> None:
    async def main() -> int:
        async with client(emu) as c:
            return await c.detect_api_version()

    assert run(main()) == api
    expected = ["/v3/info"] if api == 3 else ["/v3/info", "/v2/info"]
    assert emu.requests == expected


def test_pinned_version_and_url_suffix(emu: EmulatorHandle, api: int) -> None:
    async def main() -> None:
        async with client(emu, api_version=api) as c:
            await c.configuration_version()
        async with DataPlaneClient(f"{emu.url}/v{api}/", username="admin", password=PASSWORD) as c:
            assert await c.api_version() == api
            await c.configuration_version()

    run(main())
    assert not any(r.endswith("/info") for r in emu.requests)
    # The /vN suffix of the URL names the API root; it is not repeated in the path.
    assert emu.requests[-1] == f"/v{api}/services/haproxy/configuration/version"


def test_wrong_pinned_version_is_a_404(emu: EmulatorHandle, api: int) -> None:
    other = 2 if api == 3 else 3

    async def main() -> None:
        async with client(emu, api_version=other) as c:
            await c.configuration_version()

    with pytest.raises(DataPlaneError) as info:
        run(main())
    assert info.value.status == 404
    assert info.value.kind == "http_404"
    assert "was not found" in str(info.value)


def test_configuration_version_follows_file_edits(emu: EmulatorHandle, cfg: Path) -> None:
    async def main() -> Any:
        async with client(emu) as c:
            assert await c.configuration_version() == 1
            assert await c.configuration_version() == 1  # polling alone changes nothing
            edit(cfg, "bind 198.51.100.20:5432 name db_pg", "bind 198.51.100.30:5432 name db_pg")
            assert await c.configuration_version() == 2
            return await c.discover()

    found = run(main())
    assert found.version == 2
    assert ip("198.51.100.30") in vips_from_frontends(found.frontends).vips


def test_v2_retries_when_the_version_changes_mid_discovery(cfg: Path) -> None:
    with start_emulator(cfg, 2) as emu:
        # The first binds request sees the configuration bumped under it.
        emu.set_fault("bump", count=1, match="/binds")
        found = discover_with(emu, api_version=2)
        reqs = emu.requests
    assert found.version == 2
    assert reqs.count("/v2/services/haproxy/configuration/frontends") == 2


def test_discovery_gives_up_when_the_version_never_settles(emu: EmulatorHandle, api: int) -> None:
    emu.set_fault("bump", match="/binds" if api == 2 else "/defaults")
    with pytest.raises(DataPlaneError) as info:
        discover_with(emu, consistency_retries=2)
    assert "kept changing" in str(info.value)
    assert "3 attempts" in str(info.value)
    assert info.value.kind == "unstable"


# ------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("user", "password"), [("admin", PASSWORD), ("ops", "opspwd"), ("ops256", "sha256pwd")]
)
def test_auth_ok(emu: EmulatorHandle, user: str, password: str) -> None:
    async def main() -> int:
        async with client(emu, username=user, password=password) as c:
            return await c.configuration_version()

    assert run(main()) == 1


@pytest.mark.parametrize(
    ("user", "password"), [("admin", "s3cr3t-wrong"), ("nobody", "s3cr3t-wrong")]
)
def test_auth_refused(emu: EmulatorHandle, user: str, password: str) -> None:
    c = client(emu, username=user, password=password)

    async def main() -> None:
        async with c:
            await c.discover()

    with pytest.raises(DataPlaneAuthError) as info:
        run(main())
    text = str(info.value)
    assert info.value.status == 401
    assert info.value.kind == "auth"
    assert repr(user) in text and emu.url in text
    assert password not in text and password not in repr(c)
    assert "invalid credentials" in text  # the error body's message


def test_auth_before_404_v34_style(cfg: Path) -> None:
    opts = Options(auth_before_404=True)
    with start_emulator(cfg, 3, options=opts) as emu:
        r = requests.get(f"{emu.url}/v2/info", timeout=2)
        assert r.status_code == 401 and "Configuration-Version" in r.headers
        r = requests.get(f"{emu.url}/v2/info", auth=("admin", PASSWORD), timeout=2)
        assert r.status_code == 404 and r.json()["code"] == 404
    with start_emulator(cfg, 3) as emu:
        assert requests.get(f"{emu.url}/v2/info", timeout=2).status_code == 404


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("mode", "status", "kind", "text"),
    [
        ("500", 500, "http_500", "emulated internal error"),
        ("garbage", 200, "bad_answer", "not JSON"),
        ("truncated", None, "bad_answer", "bad response"),
        ("shape", 200, "bad_answer", "expected"),
        ("close", None, "unreachable", "connection failed"),
    ],
)
def test_faults_raise_typed_errors_quickly(
    emu: EmulatorHandle, api: int, mode: str, status: int | None, kind: str, text: str
) -> None:
    async def main() -> None:
        async with client(emu, api_version=api) as c:
            assert await c.configuration_version() == 1  # a kept-alive connection first
            emu.set_fault(mode)
            calls: list[Callable[[], Awaitable[object]]] = [c.configuration_version, c.discover]
            for call in calls:
                start = time.monotonic()
                with pytest.raises(DataPlaneError) as info:
                    await call()
                assert time.monotonic() - start < 1.5
                assert not isinstance(info.value, DataPlaneAuthError)
                assert info.value.status == status
                assert info.value.kind == kind
                assert text in str(info.value)
                assert info.value.url is not None and info.value.url.startswith(emu.url)
                assert PASSWORD not in str(info.value)
            emu.set_fault("none")
            assert await c.configuration_version() == 1  # and it recovers

    run(main())


def test_auth_fault_is_an_auth_error(emu: EmulatorHandle) -> None:
    emu.set_fault("auth")
    with pytest.raises(DataPlaneAuthError):
        discover_with(emu)


def test_slow_beyond_timeout(emu: EmulatorHandle, api: int) -> None:
    emu.set_fault("slow", delay=5.0)
    start = time.monotonic()
    with pytest.raises(DataPlaneError, match=r"timed out after 0\.3s") as info:
        discover_with(emu, api_version=api, timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert info.value.kind == "timeout"


def test_slow_within_timeout_is_fine(emu: EmulatorHandle, api: int) -> None:
    emu.set_fault("slow", delay=0.05, count=2)
    assert len(discover_with(emu, api_version=api).frontends) == 5


def test_counted_fault_only_breaks_the_first_request(emu: EmulatorHandle, api: int) -> None:
    emu.set_fault("500", count=1)

    async def main() -> int:
        async with client(emu, api_version=api) as c:
            with pytest.raises(DataPlaneError):
                await c.discover()
            return len((await c.discover()).frontends)

    assert run(main()) == 5


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async with DataPlaneClient(
            f"http://127.0.0.1:{port}", username="u", password="p", timeout=1
        ) as c:
            await c.configuration_version()

    with pytest.raises(DataPlaneError, match="connection failed") as info:
        run(main())
    assert info.value.status is None
    assert info.value.kind == "unreachable"


def test_not_a_dataplaneapi(cfg: Path) -> None:
    # A server that knows neither /v3/info nor /v2/info.
    with (
        start_emulator(cfg, 3) as emu,
        pytest.raises(DataPlaneError, match="neither /v3/info nor /v2/info"),
    ):
        discover_with(emu.url + "/nothing-here")


# ------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=dpapi-emulator", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_tls_with_ca_verification(cfg: Path, tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    with start_emulator(cfg, 3, tls_cert=cert, tls_key=key) as emu:
        assert emu.url.startswith("https://")
        # No server_users: over https the certificate is the proof.
        assert len(discover_with(emu, verify=cert, server_users=()).frontends) == 5
        with pytest.raises(DataPlaneError, match="TLS error") as info:
            discover_with(emu, verify=True)
        assert info.value.kind == "tls"
        # The refused handshake sent no request: only the first client's three arrived.
        assert emu.requests == [
            "/v3/info",
            "/v3/services/haproxy/configuration/frontends?full_section=true",
            "/v3/services/haproxy/configuration/defaults",
        ]


# ------------------------------------------------------------------ unix socket


def test_unix_socket_served_by_root(cfg: Path, tmp_path: Path, api: int) -> None:
    sock = tmp_path / "dpapi.sock"
    with start_emulator(cfg, api, unix_socket=sock) as emu:
        assert emu.url == f"unix://{sock}"

        async def main() -> Any:
            async with client(emu) as c:
                assert await c.api_version() == api
                assert await c.configuration_version() == 1
                return await c.discover()

        found = run(main())
        assert _sorted(found.frontends) == _sorted(EXPECTED_FRONTENDS)
        emu.set_fault("500")
        with pytest.raises(DataPlaneError) as info:
            discover_with(emu)
        assert info.value.url is not None and info.value.url.startswith(f"unix://{sock}/v")


def test_unix_socket_not_in_server_users(cfg: Path, tmp_path: Path) -> None:
    sock = tmp_path / "dpapi.sock"
    with start_emulator(cfg, 3, unix_socket=sock) as emu:
        with pytest.raises(DataPlaneError, match="owned by uid 0 \\(root\\)") as info:
            discover_with(emu, server_users=("haproxy", 12345))
        assert info.value.kind == "unverified_server"
        assert emu.requests == []  # not one request reached it


# ---------------------------------------------------------- emulator as a script


def test_emulator_runs_as_a_script(cfg: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EMULATOR), "--config", str(cfg), "--api-version", "2",
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" on ", 1)[1].strip()

        async def main() -> int:
            async with DataPlaneClient(url, username="admin", password=PASSWORD) as c:
                assert await c.api_version() == 2
                return len((await c.discover()).frontends)

        assert run(main()) == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_emulator_v2_binds_query_forms(cfg: Path) -> None:
    auth = ("admin", PASSWORD)
    with start_emulator(cfg, 2) as emu:
        base = f"{emu.url}/v2/services/haproxy/configuration/binds"
        r = requests.get(base, auth=auth, timeout=2)
        assert (r.status_code, r.json()) == (500, {"code": 500, "message": "parentType empty"})
        query = {"parent_type": "frontend", "parent_name": "fe_db"}
        r = requests.get(base, params=query, auth=auth, timeout=2)
        assert r.status_code == 200 and len(r.json()["data"]) == 3
        assert r.headers["Configuration-Version"] == "1"
        r = requests.get(base, params={"frontend": "no_such_frontend"}, auth=auth, timeout=2)
        assert r.json() == {"_version": 1, "data": []}
