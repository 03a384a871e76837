"""API keys: generation, hashing, lookup, and the view decorator that authenticates by them.

A key looks like ``cm_live_<prefix>_<secret>``: an 8-character public prefix (stored,
unique, shown in admin) and a 32-character base62 secret (~190 bits). Only the prefix and
the SHA-256 of the whole key are stored, so the key is shown once and never again.
SHA-256, not a password hasher: the secret has far too much entropy to brute force, and
PBKDF2 would add ~100 ms to every API request (djangorestframework-api-key moved off it
for that reason).

Also here, because every bearer-key API needs them: the one JSON error helper
(``api_error``, defined in ``agency.http``) and a per-key fixed-window rate limit in the
shared cache.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from agency.http import api_error
from agency.models import Client
from tracking.models import ApiKey

KEY_TAG = "cm_live_"
PREFIX_LENGTH = 8
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(
    rf"^cm_live_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})$"
)
# Cached lookups are filed under a generation; any change to any key starts a new one.
_GENERATION_KEY = "apikey:generation"
# last_used_at is written at most this often per key: no write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(Exception):
    """A key operation that cannot be done (unknown client, already revoked...)."""


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _generation(current: object) -> str:
    """The current generation, as read (``current``), or a fresh one if there is none
    (first use, or evicted: any fresh value orphans every older entry)."""
    if current is not None:
        return str(current)
    candidate = uuid.uuid4().hex
    if cache.add(_GENERATION_KEY, candidate, timeout=None):
        return candidate
    return str(cache.get(_GENERATION_KEY) or candidate)


def api_keys_forget() -> None:
    """Make every process look keys up afresh: start a new cache generation now, and again
    once the current transaction commits.

    A cached entry records the generation it was read under and counts only while that
    is still the current one. A generation rather than deleting one entry: a request that
    read a key's row just before a revoke committed may store its stale copy *after* the
    revoke cleared the cache; recorded under the generation it started with, that copy is
    never used. The cache is shared (Redis), so every process sees the new generation on
    its next request.
    """

    def start_new_generation() -> None:
        cache.set(_GENERATION_KEY, uuid.uuid4().hex, timeout=None)

    start_new_generation()
    transaction.on_commit(start_new_generation)


def api_key_deleted(sender: Any, **kwargs: Any) -> None:
    """``post_delete`` receiver for ApiKey (connected in TrackingConfig.ready). Deletes do
    not all go through a service: admin's bulk "Delete selected" and a client's deletion
    cascading to its keys both delete rows directly; each must end the key at once."""
    api_keys_forget()


@transaction.atomic
def api_key_create(
    *, name: str, client: Client | None, created_by: Any = None
) -> tuple[ApiKey, str]:
    """Create a key for one client (or agency-wide with ``client=None``).

    Returns the saved key and the full key string, which is not stored anywhere: show it
    to the user once.
    """
    name = name.strip()
    if not name:
        raise ApiKeyError("A key needs a name.")
    while True:
        prefix = _random(PREFIX_LENGTH)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    raw_key = f"{KEY_TAG}{prefix}_{_random(SECRET_LENGTH)}"
    key = ApiKey.objects.create(
        name=name,
        client=client,
        prefix=prefix,
        key_hash=hash_key(raw_key),
        created_by=created_by,
    )
    return key, raw_key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, now: datetime | None = None) -> ApiKey:
    """Revoke a key: every request with it gets 401 from now on (the cache entry goes too)."""
    if key.revoked_at is not None:
        raise ApiKeyError(f"Key {key.prefix} is already revoked.")
    key.revoked_at = now or timezone.now()
    key.save(update_fields=["revoked_at"])
    api_keys_forget()
    return key


@transaction.atomic
def api_key_rotate(*, key: ApiKey, created_by: Any = None) -> tuple[ApiKey, str]:
    """Replace a key by a new one with the same name and client; the old one is revoked
    in the same transaction. Returns the new key and its full string (show it once)."""
    new_key, raw_key = api_key_create(name=key.name, client=key.client, created_by=created_by)
    api_key_revoke(key=key)
    return new_key, raw_key


def _find(prefix: str) -> ApiKey | None:
    """The key with this prefix (and its client), through the shared cache when enabled."""
    seconds = settings.API_KEY_CACHE_SECONDS
    if seconds <= 0:
        return ApiKey.objects.select_related("client").filter(prefix=prefix).first()
    entry_key = f"apikey:{prefix}"
    # One round trip for both; the generation is read before the row: see api_keys_forget.
    found = cache.get_many([_GENERATION_KEY, entry_key])
    generation = _generation(found.get(_GENERATION_KEY))
    entry = found.get(entry_key)
    if entry is not None and entry[0] == generation:
        return cast(ApiKey, entry[1])
    key = ApiKey.objects.select_related("client").filter(prefix=prefix).first()
    if key is not None:
        cache.set(entry_key, (generation, key), seconds)
    return key


def api_key_lookup(raw_key: str) -> ApiKey | None:
    """The active key this string is, or None. Constant-time hash comparison; the prefix
    lookup (with the key's client) is cached for API_KEY_CACHE_SECONDS when the cache is
    shared, and any revoke, rotation or delete ends every cached copy at once."""
    match = _KEY_RE.match(raw_key)
    if match is None:
        return None
    key = _find(match.group(1))
    if key is None:
        return None
    if not hmac.compare_digest(key.key_hash, hash_key(raw_key)):
        return None
    if key.revoked_at is not None:
        return None
    return key


def api_key_touch(key: ApiKey, *, now: datetime | None = None) -> None:
    """Record a use of the key, at most once a minute per key (a cache flag gates it)."""
    if not cache.add(f"apikey-used:{key.pk}", 1, int(LAST_USED_RESOLUTION.total_seconds())):
        return
    moment = now or timezone.now()
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=moment)
    key.last_used_at = moment


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def api_key_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Authenticate by ``Authorization: Bearer <key>`` only (never a session cookie).

    Sets ``request.api_key``; answers a JSON 401 for a missing, unknown or revoked key,
    without saying which.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raw_key = _bearer(request)
        key = api_key_lookup(raw_key) if raw_key else None
        if key is None:
            return api_error(
                401,
                "unauthorized",
                "Send a valid API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="clientmeter"'},
            )
        api_key_touch(key)
        request.api_key = key  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper


def rate_limit_hit(key: ApiKey, *, scope: str, limit_per_minute: int) -> int | None:
    """Count one request against the key's fixed one-minute window in the shared cache
    (Redis in production, so all workers share it). Returns the seconds to wait when the
    limit is exceeded, None otherwise."""
    now = time.time()
    window = int(now // 60)
    cache_key = f"ratelimit:{scope}:{key.pk}:{window}"
    cache.add(cache_key, 0, 90)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr: start the window again
        cache.set(cache_key, 1, 90)
        count = 1
    if count <= limit_per_minute:
        return None
    return max(1, math.ceil((window + 1) * 60 - now))
