"""`announcer migrate` end to end on files: the seed's configuration turned into files that
announcer's `check-config` and gobgpd's own dry run (`gobgpd -d`, 3.10 and 4.8) accept; exit 78 with
line and column on bad input; nothing half-written when the output cannot be written."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from announcer import cli
from tests.support.gobgpd_proc import VERSIONS, binaries

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "exabgp-seed"


def _gobgpd_accepts(path: Path) -> None:
    """gobgpd's own dry run (`-d`: read the configuration and exit), 3.x and 4.x."""
    for version in VERSIONS:
        gobgpd, _ = binaries(version)
        r = subprocess.run(
            [gobgpd, "-d", "-f", str(path)], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, (version, r.stdout + r.stderr)


def _migrate(out: Path, *extra: str, conf: Path = SEED / "exabgp.conf") -> int:
    return cli.main(["migrate", "--exabgp-conf", str(conf), "--out", str(out), *extra])


def test_the_seed_migrates_and_both_daemons_accept_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert _migrate(out, "--junos-config", str(SEED / "junos-lb-group.txt")) == 0
    printed = capsys.readouterr().out
    assert "Behaves differently" in printed and "wrote " in printed
    names = sorted(p.name for p in out.iterdir())
    # The seed's password is a placeholder: no password file, the report says so.
    assert names == ["announcer.yaml", "gobgpd.toml", "migration-report.txt"]
    _gobgpd_accepts(out / "gobgpd.toml")
    # check-config reads the password too (the same code as `run`): give it one, as the
    # unit would through LoadCredential=.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dataplaneapi-password").write_text("from-the-operator\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert cli.main(["check-config", "-c", str(out / "announcer.yaml")]) == 0
    assert "OK (allowed prefixes 192.0.2.0/24" in capsys.readouterr().out


def test_secrets_land_in_their_own_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "exabgp.conf"
    text = (SEED / "exabgp.conf").read_text()
    text = text.replace("<set a password>", '"dpapi-s3cret"')
    text = text.replace("peer-as 65530;", 'peer-as 65530; md5-password "md5-s3cret";')
    conf.write_text(text)
    out = tmp_path / "out"
    assert _migrate(out, "--allowed-prefix", "192.0.2.0/24", conf=conf) == 0
    printed = capsys.readouterr()
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert mode == {
        "announcer.yaml": 0o644,
        "gobgpd.toml": 0o600,
        "dataplaneapi-password": 0o600,
        "migration-report.txt": 0o644,
    }
    assert (out / "dataplaneapi-password").read_text() == "dpapi-s3cret\n"
    assert "md5-s3cret" in (out / "gobgpd.toml").read_text()
    for where in (printed.out, printed.err, (out / "announcer.yaml").read_text(),
                  (out / "migration-report.txt").read_text()):  # fmt: skip
        assert "s3cret" not in where
    _gobgpd_accepts(out / "gobgpd.toml")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(out))
    assert cli.main(["check-config", "-c", str(out / "announcer.yaml")]) == 0


def test_bad_input_exits_78_with_line_and_column_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "exabgp.conf"
    conf.write_text(
        (SEED / "exabgp.conf").read_text().replace("local-as 65512;", "local-az 65512;")
    )
    out = tmp_path / "out"
    assert _migrate(out, "--allowed-prefix", "192.0.2.0/24", conf=conf) == 78
    err = capsys.readouterr().err
    assert f"configuration error in {conf}" in err
    assert "line 9 column 9: unknown directive 'local-az' in template core-bgp" in err
    assert not out.exists()
    assert _migrate(out, conf=tmp_path / "missing.conf") == 78
    assert "cannot read" in capsys.readouterr().err


def test_existing_files_are_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "announcer.yaml").write_text("mine\n")
    args = ("--allowed-prefix", "192.0.2.0/24")
    assert _migrate(out, *args) == 78
    assert "announcer.yaml already there" in capsys.readouterr().err
    assert (out / "announcer.yaml").read_text() == "mine\n"
    assert _migrate(out, *args, "--force") == 0
    assert (out / "announcer.yaml").read_text().startswith("# announcer, generated")


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    out = tmp_path / "out"
    assert _migrate(out, "--allowed-prefix", "192.0.2.0/24") == 73
    assert "No space left on device" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no final file, no temporary one
