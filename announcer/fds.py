"""A reserve of file descriptors kept for the health checks.

Every probe needs a descriptor, and a probe that cannot get one fails with EMFILE.
The servers anyone can connect to (/metrics, and the control socket) therefore
refuse a new connection once fewer than `reserve` descriptors are left below the
soft RLIMIT_NOFILE, so that clients, however many, never take the probes' ones.

The test costs one getrlimit per accepted connection, not a count of /proc/self/fd
(10 000 entries with one keep-alive connection per check): the kernel gives a new
descriptor the lowest free number, so an accepted socket numbered `n` means that
descriptors 0..n are all open. That bound is exact whenever the table has no holes,
and near the limit, where it matters, it has few.
"""

from __future__ import annotations

import resource

# Descriptors left for the probes (and gRPC, DataPlaneAPI, logs) before a server
# refuses connections; `metrics.fd_reserve` sets it for the whole process.
DEFAULT_RESERVE = 512
_reserve = DEFAULT_RESERVE


def configure(reserve: int) -> None:
    """Set the reserve for every server of the process (at start, from the config)."""
    global _reserve
    _reserve = reserve


def admit(fd: int) -> bool:
    """Whether the accepted connection on descriptor `fd` leaves the reserve intact
    (False: close it at once)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return True
    return fd < soft - _reserve
