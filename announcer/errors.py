"""Typed errors, each naming whose fault it was.

Only the CLI entry point turns these into exit codes; library code raises and
never calls sys.exit.
"""

from __future__ import annotations


class AnnouncerError(Exception):
    """Base class of every error announcer raises on purpose."""


class ConfigError(AnnouncerError):
    """The operator's configuration is wrong; `problems` lists each key path and what is wrong."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataPlaneError(AnnouncerError):
    """DataPlaneAPI failed, was unreachable, or answered what its spec does not allow.

    `kind` names the failure for metrics and logs: `auth`, `http_<status>`, `unreachable`,
    `timeout`, `too_big`, `tls`, `unverified_server`, `unstable` (the configuration kept
    changing) or `bad_answer` (the default: garbage, truncated or the wrong shape).
    """

    default_kind = "bad_answer"

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        kind: str | None = None,
    ) -> None:
        self.url = url
        self.status = status
        if kind is None:
            kind = f"http_{status}" if status is not None and status >= 300 else self.default_kind
        self.kind = kind
        where = f" ({url}" + (f", HTTP {status}" if status is not None else "") + ")" if url else ""
        super().__init__(f"DataPlaneAPI: {message}{where}")


class DataPlaneAuthError(DataPlaneError):
    """DataPlaneAPI rejected our credentials (HTTP 401/403): an operator must fix them."""

    default_kind = "auth"

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message, url=url, status=status, kind="auth")


class GobgpError(AnnouncerError):
    """gobgpd was unreachable or refused a request."""

    def __init__(self, message: str, *, done: int = 0) -> None:
        # `done` is how many path changes went through before the failure: the next
        # reconcile re-reads gobgpd anyway, this is for the log line only.
        self.done = done
        super().__init__(f"gobgpd: {message}")


class InvalidRoute(AnnouncerError):
    """A route failed validation before being sent (gobgpd 3.10 can crash on malformed paths)."""


class ControlError(AnnouncerError):
    """A control request that cannot be done (unknown VIP, bad address); told to the caller."""
