"""What makes a health check's settings usable: shared by the config loader and the probes.

`check-config` and a reload must refuse what every probe would fail on at run time
(a Host header with a trailing space, a command with an unclosed quote): a SIGHUP
with such a value used to fail every check and withdraw every route within two
seconds. So the probes build their requests and command lines with these functions,
and configfile.py validates with the very same ones.
"""

from __future__ import annotations

import re
import shlex

# Visible ASCII only: a space, CR or LF in the path or Host would break the request.
REQUEST_TOKEN = re.compile(r"[\x21-\x7e]+")


def request_token_ok(text: str) -> bool:
    """Whether `text` can stand as an HTTP request path or Host value as it is."""
    return REQUEST_TOKEN.fullmatch(text) is not None


def command_argv(command: str | None, shell: bool, address: str) -> list[str]:
    """The argv of a command check, every `%s` replaced by `address`; raises ValueError."""
    if not command:
        raise ValueError("no command configured")
    if shell:
        return ["/bin/sh", "-c", command.replace("%s", address)]
    # Split first, then substitute: the address can never change the word boundaries.
    argv = [word.replace("%s", address) for word in shlex.split(command)]
    if not argv or not argv[0]:
        raise ValueError("empty command")
    return argv
