"""Reads of the agency's domain, and the one place tenant scoping is decided."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from agency.models import Client


def clients_for(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Client]:
    """Clients this user may see: all for agency staff, their own for a client's user,
    none otherwise. Every view a client's user can reach starts here."""
    if not user.is_authenticated:
        return Client.objects.none()
    if getattr(user, "is_staff", False):
        return Client.objects.all()
    return Client.objects.filter(memberships__user_id=user.pk)


def client_for(user: AbstractBaseUser | AnonymousUser, slug: str) -> Client:
    """The client with this slug if the user may see it; 404 otherwise (never 403, so
    another client's existence is not revealed)."""
    try:
        return clients_for(user).get(slug=slug)
    except Client.DoesNotExist:
        raise Http404("No such client") from None
