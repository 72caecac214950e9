"""Create the demo superuser and its API token (kept when they exist), and print how to use them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from kpis.services.tokens import demo_user_ensure


class Command(BaseCommand):
    help = (
        "Create the 'demo' superuser with a password and an API token, or keep them when it "
        "exists (--rotate sets new ones); print a curl line that works."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="User name (default demo).")
        parser.add_argument("--host", default="127.0.0.1", help="Host for the printed URLs.")
        parser.add_argument("--port", default="8000", help="Port for the printed URLs.")
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Set a new password and a new token even if the user has them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        demo = demo_user_ensure(username=options["username"], rotate=options["rotate"])
        password = (
            demo.password
            if demo.password is not None
            else "unchanged (create_demo_user --rotate sets a new password and token)"
        )
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Demo user: {demo.username}   password: {password}",
                    f"Dashboard and admin: {base}/  {base}/admin/",
                    "Try the API:",
                    f"  curl -s -H 'Authorization: Token {demo.token}' \\\n"
                    f"    '{base}/api/KPIs/1/?interval=2'",
                    "",
                ]
            )
        )
