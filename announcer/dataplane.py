"""The DataPlaneAPI adapter: the only module that speaks HTTP (and imports requests).

It implements `model.VipSource` against DataPlaneAPI 2.x (`/v2`) and 3.x (`/v3`), as the
specs in shared/reference/dataplaneapi describe them (notes: dataplaneapi-notes.md).
All shape checking is done by the pure parsers in `discovery.py`; this module only moves
bytes and turns every failure into a `DataPlaneError` (or `DataPlaneAuthError` for
401/403) carrying the URL and HTTP status.

Operational rules:

* A failure here must never look like "no VIPs": the daemon keeps its last good
  discovery when this raises, so every error path raises, none returns an empty result.
* The password never appears in a log line, an exception or a repr: it lives only in
  the session's auth object. URLs we report never carry credentials.
* One discovery reflects one configuration version. v2 needs one request per frontend,
  and DataPlaneAPI may reload the file between them: when the versions reported by the
  responses disagree, the whole read is retried (bounded) instead of mixing versions.
* A `requests.Session` is not thread-safe: use one client per thread.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import requests

from . import discovery
from .errors import DataPlaneAuthError, DataPlaneError
from .model import Discovery, RawBind

_T = TypeVar("_T")

log = logging.getLogger("announcer.dataplane")

ApiVersion = Literal[2, 3]
CONFIG = "/services/haproxy/configuration"
# Reads are retried this many extra times when the configuration changed under us.
DEFAULT_CONSISTENCY_RETRIES = 3
# Error bodies are shown in exceptions; keep them to one readable line.
MAX_MESSAGE = 300


@dataclass(frozen=True)
class _Response:
    """A decoded 2xx answer: the JSON body and the Configuration-Version header."""

    url: str
    status: int
    body: Any
    header_version: int | None


class _VersionChanged(Exception):
    """Internal: the configuration changed during one discovery (retry it)."""

    def __init__(self, versions: set[int]) -> None:
        self.versions = versions
        super().__init__(f"versions {sorted(versions)}")


class DataPlaneClient:
    """A `VipSource` backed by HAProxy's DataPlaneAPI 2.x or 3.x over HTTP(S)."""

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        api_version: Literal["auto", 2, 3] = "auto",
        timeout: float = 5.0,
        verify: bool | str = True,
        consistency_retries: int = DEFAULT_CONSISTENCY_RETRIES,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("DataPlaneAPI url must be http(s)://host[:port][/prefix]")
        if parts.username is not None or parts.password is not None:
            # Refuse rather than strip: the URL ends up in every error message.
            raise ValueError("DataPlaneAPI url must not contain credentials")
        path = parts.path.rstrip("/")
        pinned: ApiVersion | None = api_version if api_version != "auto" else None
        # Accept a URL that already ends in /v2 or /v3: it says which API to use.
        suffixes: tuple[tuple[str, ApiVersion], ...] = (("/v2", 2), ("/v3", 3))
        for suffix, ver in suffixes:
            if path.endswith(suffix):
                path = path[: -len(suffix)]
                if pinned is None:
                    pinned = ver
                elif pinned != ver:
                    raise ValueError(f"url ends in {suffix} but api_version is {api_version}")
        self._base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self._username = username
        self._pinned = pinned
        self._detected: ApiVersion | None = pinned
        self._timeout = timeout
        self._retries = max(0, consistency_retries)
        self._session = requests.Session()
        self._session.auth = (username, password)
        self._session.verify = verify
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "announcer"
        # Proxy settings from the environment must not reroute a loopback API call
        # (and would see the Basic auth header).
        self._session.trust_env = False

    def __repr__(self) -> str:
        return f"DataPlaneClient({self._base!r}, username={self._username!r})"

    def __enter__(self) -> DataPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    @property
    def base_url(self) -> str:
        """The API root without /v2 or /v3."""
        return self._base

    # ------------------------------------------------------------------ version

    def api_version(self) -> ApiVersion:
        """The API generation in use (2 or 3), detecting it on first use."""
        if self._detected is None:
            self._detected = self.detect_api_version()
        return self._detected

    def detect_api_version(self) -> ApiVersion:
        """Ask /v3/info, then /v2/info on a 404 (notes §6.10): which API this server speaks."""
        for ver in (3, 2):
            url = f"{self._base}/v{ver}/info"
            try:
                resp = self._get_url(url)
            except DataPlaneError as exc:
                if exc.status == 404 and not isinstance(exc, DataPlaneAuthError):
                    continue
                raise
            if not isinstance(resp.body, dict):
                raise DataPlaneError("info: expected object", url=url, status=resp.status)
            log.debug("DataPlaneAPI at %s speaks v%d", self._base, ver)
            return 3 if ver == 3 else 2
        raise DataPlaneError(
            "neither /v3/info nor /v2/info exists: not a DataPlaneAPI 2.x/3.x",
            url=self._base,
            status=404,
        )

    def info(self) -> Mapping[str, Any]:
        """The `/info` object (API version string, build date)."""
        resp = self._get(f"/v{self.api_version()}/info")
        if not isinstance(resp.body, dict):
            raise DataPlaneError("info: expected object", url=resp.url, status=resp.status)
        return resp.body

    def configuration_version(self) -> int:
        """The configuration version (a bare integer); cheap enough to poll."""
        resp = self._get(f"/v{self.api_version()}{CONFIG}/version")
        with _blame(resp):
            return discovery.parse_version(resp.body)

    # ---------------------------------------------------------------- discovery

    def discover(self) -> Discovery:
        """Every frontend with its binds and effective mode, from one configuration version."""
        ver = self.api_version()
        last: _VersionChanged | None = None
        for attempt in range(self._retries + 1):
            try:
                return self._discover_v3() if ver == 3 else self._discover_v2()
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
        )

    def _discover_v3(self) -> Discovery:
        versions: set[int] = set()
        fe_path = f"/v3{CONFIG}/frontends"
        try:
            resp = self._get(fe_path, params={"full_section": "true"})
        except DataPlaneError as exc:
            # A server that rejects the parameter: read the plain list, binds per frontend.
            if exc.status not in (400, 422):
                raise
            resp = self._get(fe_path)
        _note(versions, resp.header_version)
        with _blame(resp):
            entries = discovery.parse_frontends(resp.body)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            # No `binds` key: either a server that ignored full_section, or a frontend
            # without binds (Go omits empty maps). Ask, to be sure.
            if entry.binds is None:
                name = _segment(entry.name)
                b = self._get(f"/v3{CONFIG}/frontends/{name}/binds")
                _note(versions, b.header_version)
                with _blame(b):
                    path = f"frontends[{json.dumps(entry.name)}].binds"
                    binds[entry.name] = discovery.parse_binds(b.body, path)
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            d = self._get(f"/v3{CONFIG}/defaults")
            _note(versions, d.header_version)
            with _blame(d):
                defaults = discovery.parse_defaults_list(d.body)
        return self._finish(versions, entries, binds, defaults)

    def _discover_v2(self) -> Discovery:
        versions: set[int] = set()
        entries = self._v2_read(versions, "frontends", "frontends", discovery.parse_frontends)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            if entry.binds is not None:
                continue
            # `frontend=` works on every 2.x (2.0-2.5 require it); requests URL-encodes it.
            binds[entry.name] = self._v2_read(
                versions,
                "binds",
                f"binds(frontend={entry.name})",
                discovery.parse_binds,
                params={"frontend": entry.name},
            )
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            defaults = self._v2_defaults(versions)
        return self._finish(versions, entries, binds, defaults)

    def _v2_defaults(self, versions: set[int]) -> tuple[discovery.DefaultsSection, ...]:
        # named_defaults appeared late in 2.x; older servers only have the single /defaults.
        try:
            return self._v2_read(
                versions,
                "named_defaults",
                "named_defaults",
                discovery.parse_defaults_list,
                may_404=True,
            )
        except DataPlaneError as exc:
            if exc.status != 404 or isinstance(exc, DataPlaneAuthError):
                raise
        return self._v2_read(versions, "defaults", "defaults", discovery.parse_v2_single_defaults)

    def _v2_read(
        self,
        versions: set[int],
        endpoint: str,
        root: str,
        parse: Callable[[Any, str], _T],
        *,
        params: Mapping[str, str] | None = None,
        may_404: bool = False,
    ) -> _T:
        """GET a v2 configuration endpoint, unwrap `{_version, data}`, parse `data`.

        Both the header and the body version go into `versions`, so _finish can tell
        whether everything came from one configuration version.
        """
        resp = self._get(f"/v2{CONFIG}/{endpoint}", params=params, may_404=may_404)
        _note(versions, resp.header_version)
        with _blame(resp):
            body_version, data = discovery.unwrap_v2(resp.body, root)
            parsed = parse(data, f"{root}.data")
        _note(versions, body_version)
        return parsed

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

    # --------------------------------------------------------------------- HTTP

    def _get(
        self, path: str, params: Mapping[str, str] | None = None, *, may_404: bool = False
    ) -> _Response:
        url = self._base + path
        if params:
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        try:
            return self._get_url(url)
        except DataPlaneError as exc:
            # In auto mode a 404 on a known path may mean DPAPI was upgraded (v2 -> v3):
            # detect again on the next call.
            if exc.status == 404 and self._pinned is None and not may_404:
                self._detected = None
            raise

    def _get_url(self, url: str) -> _Response:
        log.debug("GET %s", url)
        try:
            r = self._session.get(url, timeout=self._timeout, allow_redirects=False)
            content = r.content  # reads the body: a truncated one raises here
        except requests.exceptions.SSLError as exc:
            raise DataPlaneError(f"TLS error: {_short(exc)}", url=url) from None
        except requests.exceptions.Timeout:
            raise DataPlaneError(f"timed out after {self._timeout:g}s", url=url) from None
        except requests.exceptions.ConnectionError as exc:
            raise DataPlaneError(f"connection failed: {_short(exc)}", url=url) from None
        except requests.exceptions.RequestException as exc:
            # ChunkedEncodingError / ContentDecodingError: the body was cut or mangled.
            raise DataPlaneError(f"bad response: {_short(exc)}", url=url) from None
        status = r.status_code
        if status in (401, 403):
            raise DataPlaneAuthError(
                f"user {self._username!r} was refused{_error_message(content)}",
                url=url,
                status=status,
            )
        if not 200 <= status < 300:
            where = r.headers.get("Location")
            extra = f" (redirect to {where})" if where and 300 <= status < 400 else ""
            raise DataPlaneError(
                f"HTTP error{extra}{_error_message(content)}", url=url, status=status
            )
        try:
            body = json.loads(content)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and UnicodeDecodeError (truncated or garbage).
            raise DataPlaneError(
                f"response is not JSON ({_short(exc)}): {_snippet(content)}", url=url, status=status
            ) from None
        try:
            header_version = discovery.parse_version_header(r.headers.get("Configuration-Version"))
        except DataPlaneError as exc:
            raise DataPlaneError(str(exc.args[0]), url=url, status=status) from None
        return _Response(url=url, status=status, body=body, header_version=header_version)


@contextmanager
def _blame(resp: _Response) -> Iterator[None]:
    """Attach the URL and status of `resp` to a parser's DataPlaneError."""
    try:
        yield
    except DataPlaneAuthError:
        raise
    except DataPlaneError as exc:
        raise DataPlaneError(str(exc.args[0]), url=resp.url, status=resp.status) from None


def _note(versions: set[int], version: int | None) -> None:
    if version is not None:
        versions.add(version)


def _segment(name: str) -> str:
    """A frontend name as one URL path segment (names may hold `:` and `.`)."""
    return urllib.parse.quote(name, safe="")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _snippet(content: bytes) -> str:
    text = content[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(content) > 80 else "")


def _error_message(content: bytes) -> str:
    """`: <message>` from a `{"code", "message"}` error body, else a snippet of the body."""
    if not content:
        return ""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return f": {_snippet(content)}"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        msg = body["message"].strip()
        return f": {msg[:MAX_MESSAGE]}" if msg else ""
    return f": {_snippet(content)}"
