#!/usr/bin/env python3
"""Exit 0 if a server could listen on HOST PORT, else say why and exit 1.

`make demo` runs it first, before anything else, so that a busy port (an earlier
`make demo` still serving, say) stops it before it changes the database or files.
Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import socket
import sys


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host``:``port``, or None when it could.

    ``host`` as runserver takes it: an IPv4 address or a name, or ``[IPv6]``.
    """
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server will: a port left in TIME_WAIT by a stopped server is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
            probe.listen()
        except socket.gaierror as error:
            return f"{host} is not a name or address of this machine ({error.strerror})"
        except OSError as error:
            return (
                f"port {port} on {host} is not free ({error.strerror}): is an earlier "
                f"`make demo` still serving? Stop it (Ctrl-C), or serve on another port: "
                f"make demo PORT={port + 1}"
            )
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print(f"usage: {argv[0]} HOST PORT", file=sys.stderr)
        return 2
    problem = port_problem(argv[1], int(argv[2]))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
