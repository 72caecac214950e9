"""Create (or reset) the demo superuser and its API token, and print how to use them."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create or reset the 'demo' superuser with a new password and token; print a curl line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="User name (default demo).")
        parser.add_argument("--host", default="127.0.0.1", help="Host for the printed URLs.")
        parser.add_argument("--port", default="8000", help="Port for the printed URLs.")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(username=options["username"])
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        base = f"http://{options['host']}:{options['port']}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Demo user: {user.username}   password: {password}",
                    f"Dashboard and admin: {base}/  {base}/admin/",
                    "Try the API:",
                    f"  curl -s -H 'Authorization: Token {token.key}' \\\n"
                    f"    '{base}/api/KPIs/1/?interval=2'",
                    "",
                ]
            )
        )
