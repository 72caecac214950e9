"""Create, revoke and list the API tokens of users."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from kpis.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = (
        "Manage API tokens: 'create USER' prints a new token (the old one stops working), "
        "'revoke USER' deletes it, 'list' shows who has one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="Give USER a new token and print it.")
        create.add_argument("username", help="An existing user (see createsuperuser).")
        create.add_argument(
            "--create-user",
            action="store_true",
            help="Create USER first if it does not exist: a plain user (not staff), "
            "without a password, made for a client such as a Prometheus scraper.",
        )
        revoke = actions.add_parser("revoke", help="Delete the token of USER.")
        revoke.add_argument("username", help="The user whose token stops working.")
        actions.add_parser("list", help="List users that have a token (keys are not shown).")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for token in Token.objects.select_related("user").order_by("user__username"):
                self.stdout.write(
                    f"{token.user.get_username()}\tcreated {token.created:%Y-%m-%d %H:%M}Z"
                )
            return
        username = options["username"]
        users = get_user_model().objects
        if options.get("create_user") and not users.filter(username=username).exists():
            users.create_user(username=username)  # no usable password: it signs in by token only
            self.stderr.write(f"created user {username} (not staff, no password)")
        if not users.filter(username=username).exists():
            raise CommandError(
                f"no user named {username!r}; create it first (createsuperuser), "
                "or add --create-user for a plain user made for the token"
            )
        if action == "create":
            self.stdout.write(api_token_create(username=username))
        elif not api_token_revoke(username=username):
            raise CommandError(f"user {username!r} has no token; nothing revoked")
        else:
            self.stdout.write(f"token of {username} revoked")
