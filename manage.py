#!/usr/bin/env python
"""Django's command-line entry point for Network-Analysis."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "network_analysis.settings")
    from django.core.management import execute_from_command_line

    from network_analysis.env import exit_on_setting_error

    with exit_on_setting_error():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
