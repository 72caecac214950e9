"""Argument types and usage errors shared by the project's commands.

A usage error (a malformed option, options that contradict each other) is the
caller's mistake, not the command's: one line naming it and exit status 2, as
argparse reports it, without the usage block and never with a traceback.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

USAGE_ERROR = 2


def parse_moment(value: str) -> datetime:
    """Parse an ISO 8601 time for an option; a time without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time, e.g. 2021-07-18T01:05:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _usage_error(parser: CommandParser, message: str) -> NoReturn:
    if parser.called_from_command_line:
        parser.exit(USAGE_ERROR, f"{parser.prog}: error: {message}\n")
    # From call_command (tests, other code): an exception, as Django's parser raises.
    raise CommandError(f"Error: {message}", returncode=USAGE_ERROR)


class UsageErrorCommand(BaseCommand):
    """A command whose usage errors are one line and exit status 2 (see the module)."""

    _parser: CommandParser

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse prints the whole usage block before the message; a long option list
        # buries the one line that says what is wrong.
        parser.error = partial(_usage_error, parser)  # type: ignore[method-assign]
        self._parser = parser
        return parser

    def usage_error(self, message: str) -> NoReturn:
        """Stop with a usage error found after parsing (options that contradict each other)."""
        _usage_error(self._parser, message)
