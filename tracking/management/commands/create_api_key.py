from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.models import Client
from tracking.keys import ApiKeyError, api_key_create


class Command(BaseCommand):
    help = "Create an API key for one client (--client SLUG) or the agency (--agency). The key is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--client", metavar="SLUG", help="the client this key posts for")
        scope.add_argument(
            "--agency", action="store_true", help="an agency-wide key: events name their client"
        )
        parser.add_argument("--name", default="", help="what the key is for (default: cli)")

    def handle(
        self, *args: Any, client: str | None, agency: bool, name: str, **options: Any
    ) -> None:
        owner = None
        if client:
            owner = Client.objects.filter(slug=client).first()
            if owner is None:
                raise CommandError(f"no client with slug {client!r}")
        try:
            key, raw_key = api_key_create(name=name or "cli", client=owner)
        except ApiKeyError as exc:
            raise CommandError(str(exc)) from exc
        scope = f"client {owner.slug}" if owner else "the agency (any client)"
        self.stderr.write(f"Created key {key.prefix} for {scope}. It is shown only once:")
        self.stdout.write(raw_key)
