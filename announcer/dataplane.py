"""The DataPlaneAPI adapter: `DataPlaneClient`, the daemon's `model.VipSource`.

It reads DataPlaneAPI 2.x (`/v2`) and 3.x (`/v3`) as the specs in
shared/reference/dataplaneapi describe them (notes: dataplaneapi-notes.md): which API
generation the server speaks, the v2 and v3 discovery walks, the size caps and the
configuration version. All shape checking is done by the pure parsers in
`discovery.py`, and the bytes are moved by `dpapi_http.py` (the only module that speaks
HTTP); every failure is a `DataPlaneError` (or `DataPlaneAuthError` for 401/403)
carrying the URL, the HTTP status and a `kind` for metrics.

Operational rules:

* A failure here must never look like "no VIPs": the daemon keeps its last good
  discovery when this raises, so every error path raises, none returns an empty result.
* Nothing a server does can hold discovery: besides the total deadline of each request
  (dpapi_http.py), one whole discovery runs under another, and the number of frontends
  and binds is capped (v2 makes one request per frontend).
* One discovery reflects one configuration version. v2 needs one request per frontend,
  and DataPlaneAPI may reload the file between them: when the versions reported by the
  responses disagree, the whole read is retried (bounded) instead of mixing versions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from . import discovery
from .config import DataPlaneConfig
from .dpapi_http import HttpSession, Response
from .errors import DataPlaneAuthError, DataPlaneError
from .model import Discovery, RawBind
from .target import ApiVersion, parse_target

_T = TypeVar("_T")

log = logging.getLogger("announcer.dataplane")

CONFIG = "/services/haproxy/configuration"
# Reads are retried this many extra times when the configuration changed under us.
DEFAULT_CONSISTENCY_RETRIES = 3
# The other defaults are the configuration's (config.py), kept in one place.
_DEFAULTS = DataPlaneConfig()
DEFAULT_TIMEOUT = _DEFAULTS.timeout
DEFAULT_DISCOVERY_TIMEOUT = _DEFAULTS.discovery_timeout
DEFAULT_MAX_RESPONSE_BYTES = _DEFAULTS.max_response_bytes
DEFAULT_MAX_FRONTENDS = _DEFAULTS.max_frontends
DEFAULT_MAX_BINDS = _DEFAULTS.max_binds
DEFAULT_SERVER_USERS = _DEFAULTS.server_users


class _VersionChanged(Exception):
    """Internal: the configuration changed during one discovery (retry it)."""

    def __init__(self, versions: set[int]) -> None:
        self.versions = versions
        super().__init__(f"versions {sorted(versions)}")


class DataPlaneClient:
    """A `VipSource` backed by HAProxy's DataPlaneAPI 2.x or 3.x (asyncio, one event loop)."""

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        api_version: Literal["auto", 2, 3] = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT,
        verify: bool | str = True,
        consistency_retries: int = DEFAULT_CONSISTENCY_RETRIES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_frontends: int = DEFAULT_MAX_FRONTENDS,
        max_binds: int = DEFAULT_MAX_BINDS,
        server_users: Iterable[str | int] = DEFAULT_SERVER_USERS,
    ) -> None:
        target = parse_target(url)
        pinned = api_version if api_version != "auto" else target.pinned
        if target.pinned is not None and pinned != target.pinned:
            raise ValueError(f"url ends in /v{target.pinned} but api_version is {api_version}")
        self._http = HttpSession(
            target,
            username=username,
            password=password,
            timeout=timeout,
            verify=verify,
            max_response_bytes=max_response_bytes,
            server_users=server_users,
        )
        self._base = target.base
        self._username = username
        self._pinned: ApiVersion | None = pinned
        self._detected: ApiVersion | None = pinned
        self._discovery_timeout = discovery_timeout
        self._retries = max(0, consistency_retries)
        self._max_frontends = max_frontends
        self._max_binds = max_binds

    def __repr__(self) -> str:
        return f"DataPlaneClient({self._base!r}, username={self._username!r})"

    async def __aenter__(self) -> DataPlaneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection."""
        await self._http.aclose()

    # ------------------------------------------------------------------ version

    async def api_version(self) -> ApiVersion:
        """The API generation in use (2 or 3), detecting it on first use."""
        if self._detected is None:
            self._detected = await self.detect_api_version()
        return self._detected

    async def detect_api_version(self) -> ApiVersion:
        """Ask /v3/info, then /v2/info on a 404 (notes §6.10): which API this server speaks."""
        for ver in (3, 2):
            path = f"/v{ver}/info"
            try:
                resp = await self._http.get(path)
            except DataPlaneError as exc:
                if exc.status == 404 and not isinstance(exc, DataPlaneAuthError):
                    continue
                raise
            if not isinstance(resp.body, dict):
                raise DataPlaneError("info: expected object", url=resp.url, status=resp.status)
            log.debug("DataPlaneAPI at %s speaks v%d", self._base, ver)
            return 3 if ver == 3 else 2
        raise DataPlaneError(
            "neither /v3/info nor /v2/info exists: not a DataPlaneAPI 2.x/3.x",
            url=self._base,
            status=404,
            kind="http_404",
        )

    async def configuration_version(self) -> int:
        """The configuration version (a bare integer); cheap enough to poll."""
        resp = await self._get(f"/v{await self.api_version()}{CONFIG}/version")
        with _blame(resp):
            return discovery.parse_version(resp.body)

    # ---------------------------------------------------------------- discovery

    async def discover(self) -> Discovery:
        """Every frontend with its binds and effective mode, from one configuration version."""
        try:
            async with asyncio.timeout(self._discovery_timeout):
                return await self._discover()
        except TimeoutError:
            self._http.drop()
            raise DataPlaneError(
                f"discovery took longer than {self._discovery_timeout:g}s "
                "(dataplaneapi.discovery_timeout)",
                url=self._base,
                kind="timeout",
            ) from None

    async def _discover(self) -> Discovery:
        ver = await self.api_version()
        last: _VersionChanged | None = None
        for attempt in range(self._retries + 1):
            try:
                return await (self._discover_v3() if ver == 3 else self._discover_v2())
            except _VersionChanged as exc:
                last = exc
                log.info(
                    "DataPlaneAPI configuration changed during discovery (versions %s), "
                    "retrying (%d/%d)",
                    sorted(exc.versions),
                    attempt + 1,
                    self._retries,
                )
        assert last is not None
        raise DataPlaneError(
            f"configuration kept changing during discovery ({self._retries + 1} attempts, "
            f"last versions seen {sorted(last.versions)})",
            url=self._base,
            kind="unstable",
        )

    async def _discover_v3(self) -> Discovery:
        versions: set[int] = set()
        fe_path = f"/v3{CONFIG}/frontends"
        try:
            resp = await self._get(fe_path, params={"full_section": "true"})
        except DataPlaneError as exc:
            # A server that rejects the parameter: read the plain list, binds per frontend.
            if exc.status not in (400, 422):
                raise
            resp = await self._get(fe_path)
        _note(versions, resp.header_version)
        with _blame(resp):
            entries = discovery.parse_frontends(resp.body)
        self._check_counts(resp.url, entries)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            # No `binds` key: either a server that ignored full_section, or a frontend
            # without binds (Go omits empty maps). Ask, to be sure.
            if entry.binds is None:
                name = _segment(entry.name)
                b = await self._get(f"/v3{CONFIG}/frontends/{name}/binds")
                _note(versions, b.header_version)
                with _blame(b):
                    path = f"frontends[{json.dumps(entry.name)}].binds"
                    binds[entry.name] = discovery.parse_binds(b.body, path)
                self._check_counts(b.url, entries, binds)
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            d = await self._get(f"/v3{CONFIG}/defaults")
            _note(versions, d.header_version)
            with _blame(d):
                defaults = discovery.parse_defaults_list(d.body)
        return self._finish(versions, entries, binds, defaults)

    async def _discover_v2(self) -> Discovery:
        versions: set[int] = set()
        url, entries = await self._v2_read(
            versions, "frontends", "frontends", discovery.parse_frontends
        )
        # Checked before the per-frontend requests: the cap bounds how many there are.
        self._check_counts(url, entries)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            if entry.binds is not None:
                continue
            # `frontend=` works on every 2.x (2.0-2.5 require it); it is URL-encoded.
            url, binds[entry.name] = await self._v2_read(
                versions,
                "binds",
                f"binds(frontend={entry.name})",
                discovery.parse_binds,
                params={"frontend": entry.name},
            )
            self._check_counts(url, entries, binds)
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            defaults = await self._v2_defaults(versions)
        return self._finish(versions, entries, binds, defaults)

    async def _v2_defaults(self, versions: set[int]) -> tuple[discovery.DefaultsSection, ...]:
        # named_defaults appeared late in 2.x; older servers only have the single /defaults.
        try:
            _, found = await self._v2_read(
                versions,
                "named_defaults",
                "named_defaults",
                discovery.parse_defaults_list,
                may_404=True,
            )
            return found
        except DataPlaneError as exc:
            if exc.status != 404 or isinstance(exc, DataPlaneAuthError):
                raise
        _, found = await self._v2_read(
            versions, "defaults", "defaults", discovery.parse_v2_single_defaults
        )
        return found

    async def _v2_read(
        self,
        versions: set[int],
        endpoint: str,
        root: str,
        parse: Callable[[Any, str], _T],
        *,
        params: Mapping[str, str] | None = None,
        may_404: bool = False,
    ) -> tuple[str, _T]:
        """GET a v2 configuration endpoint, unwrap `{_version, data}`, parse `data`.

        Both the header and the body version go into `versions`, so _finish can tell
        whether everything came from one configuration version.
        """
        resp = await self._get(f"/v2{CONFIG}/{endpoint}", params=params, may_404=may_404)
        _note(versions, resp.header_version)
        with _blame(resp):
            body_version, data = discovery.unwrap_v2(resp.body, root)
            parsed = parse(data, f"{root}.data")
        _note(versions, body_version)
        return resp.url, parsed

    def _check_counts(
        self,
        url: str,
        entries: Sequence[discovery.FrontendEntry],
        fetched: Mapping[str, Sequence[RawBind]] | None = None,
    ) -> None:
        """Refuse a configuration larger than dataplaneapi.max_frontends / max_binds."""
        if len(entries) > self._max_frontends:
            raise DataPlaneError(
                f"{len(entries)} frontends, more than dataplaneapi.max_frontends "
                f"({self._max_frontends})",
                url=url,
                kind="too_big",
            )
        binds = sum(len(e.binds) for e in entries if e.binds is not None)
        binds += sum(len(b) for b in (fetched or {}).values())
        if binds > self._max_binds:
            raise DataPlaneError(
                f"more than dataplaneapi.max_binds ({self._max_binds}) binds",
                url=url,
                kind="too_big",
            )

    def _finish(
        self,
        versions: set[int],
        entries: tuple[discovery.FrontendEntry, ...],
        binds: Mapping[str, tuple[RawBind, ...]],
        defaults: tuple[discovery.DefaultsSection, ...],
    ) -> Discovery:
        if len(versions) > 1:
            raise _VersionChanged(versions)
        frontends = discovery.build_frontends(entries, binds, defaults)
        version = next(iter(versions)) if versions else None
        log.debug("discovered %d frontends at configuration version %s", len(frontends), version)
        return Discovery(version=version, frontends=frontends)

    # ----------------------------------------------------------------- requests

    async def _get(
        self, path: str, params: Mapping[str, str] | None = None, *, may_404: bool = False
    ) -> Response:
        try:
            return await self._http.get(path, params)
        except DataPlaneError as exc:
            # In auto mode a 404 on a known path may mean DPAPI was upgraded (v2 -> v3):
            # detect again on the next call.
            if exc.status == 404 and self._pinned is None and not may_404:
                self._detected = None
            raise


@contextmanager
def _blame(resp: Response) -> Iterator[None]:
    """Attach the URL and status of `resp` to a parser's DataPlaneError."""
    try:
        yield
    except DataPlaneAuthError:
        raise
    except DataPlaneError as exc:
        raise DataPlaneError(
            str(exc.args[0]), url=resp.url, status=resp.status, kind=exc.kind
        ) from None


def _note(versions: set[int], version: int | None) -> None:
    if version is not None:
        versions.add(version)


def _segment(name: str) -> str:
    """A frontend name as one URL path segment (names may hold `:` and `.`)."""
    return urllib.parse.quote(name, safe="")


__all__ = ["DataPlaneClient"]
