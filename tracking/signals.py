"""Signals tracking sends; other apps (billing) connect to them. Tracking imports no billing."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the transaction that stored new usage events commits.
# kwargs: client_ids: set[int], the clients whose usage changed.
usage_recorded = Signal()
