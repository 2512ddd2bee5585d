"""service.event_loop: uvloop where installed (auto), asyncio's loop otherwise, and a
clear configuration error when uvloop is required but missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
import yaml

from announcer import eventloop
from announcer.configfile import parse_config
from announcer.errors import ConfigError

VERSION = getattr(uvloop, "__version__", "?")
ALLOW = {"allowed_prefixes": ["192.0.2.0/24"], "dataplaneapi": {"password_env": "DPAPI_PW"}}


def run_on(loop: eventloop.EventLoop) -> str:
    """The class of the loop a coroutine really runs on."""

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=loop.factory) as runner:
        return runner.run(which())


def test_auto_and_uvloop_run_on_uvloop_when_installed() -> None:
    for choice in ("auto", "uvloop"):
        loop = eventloop.choose(choice)
        assert loop.name == f"uvloop {VERSION}"
        assert loop.why == f"service.event_loop: {choice}"
        assert run_on(loop).startswith("uvloop")


def test_asyncio_is_asyncio_even_with_uvloop_installed() -> None:
    loop = eventloop.choose("asyncio")
    assert (loop.name, loop.why) == ("asyncio", "service.event_loop: asyncio")
    assert run_on(loop).startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loop = eventloop.choose("auto")
    assert (loop.name, loop.why) == ("asyncio", "uvloop is not installed")
    assert run_on(loop).startswith("asyncio")
    with pytest.raises(ConfigError) as e:
        eventloop.choose("uvloop")
    assert e.value.problems[0].startswith("service.event_loop: uvloop is not installed")


def test_the_key_is_parsed_and_checked() -> None:
    assert parse_config(ALLOW).service.event_loop == "auto"
    for v in ("auto", "uvloop", "asyncio"):
        assert parse_config({**ALLOW, "service": {"event_loop": v}}).service.event_loop == v
    for bad in ("fast", True, 1):
        with pytest.raises(ConfigError) as e:
            parse_config({**ALLOW, "service": {"event_loop": bad}})
        assert any(p.startswith("service.event_loop:") for p in e.value.problems), e.value


def test_check_config_names_the_loop_and_refuses_a_missing_required_uvloop(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "announcer.yaml"
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    doc = {**ALLOW, "dataplaneapi": {"password_file": str(pw)}}  # replaces password_env
    conf.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "announcer", "check-config", "-c", str(conf)]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"event loop uvloop {VERSION})" in ok.stdout, ok.stdout
    # The same with uvloop made unimportable in the child (a None entry in sys.modules).
    hide = "import sys; sys.modules['uvloop'] = None; from announcer.cli import main; "
    required = {**doc, "service": {"event_loop": "uvloop"}}
    conf.write_text(yaml.safe_dump(required))
    code = f"{hide}sys.exit(main(['check-config', '-c', {str(conf)!r}]))"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert bad.returncode == 78, (bad.stdout, bad.stderr)
    assert "service.event_loop: uvloop is not installed" in bad.stderr, bad.stderr


def test_a_grpcio_that_freezes_forks_under_uvloop_keeps_asyncio() -> None:
    # Debian's python3-grpcio 1.51 froze the loop at a command check under uvloop.
    loop = eventloop.choose("auto", grpcio="1.51.1")
    assert loop.name == "asyncio"
    assert loop.why.startswith("uvloop is installed, but grpcio 1.51.1 would freeze"), loop.why
    assert run_on(loop).startswith("asyncio")
    with pytest.raises(ConfigError) as e:
        eventloop.choose("uvloop", grpcio="1.51.1")
    assert e.value.problems[0].startswith("service.event_loop: uvloop: grpcio 1.51.1 would")
    for version in ("1.85.3", "1.90.0", "2.0.0"):
        assert eventloop.choose("auto", grpcio=version).name.startswith("uvloop ")
    for version in ("1.84.9", "garbage"):
        assert eventloop.choose("auto", grpcio=version).name == "asyncio"


def test_the_installed_grpcio_is_the_one_judged() -> None:
    installed = eventloop.grpcio_version()
    assert installed is not None
    assert eventloop.choose("auto").name.startswith("uvloop") == eventloop._safe(installed)
