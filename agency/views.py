from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views import defaults
from django.views.decorators.cache import never_cache

from agency.health import is_ready, readiness
from agency.http import RETRY_AFTER_SECONDS, UNAVAILABLE, unavailable
from agency.selectors import clients_for


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Staff land on the agency overview, a client's user on their client's page. A
    signed-in user who is neither has nothing to see: 404, like any page they may not open."""
    if request.user.is_staff:
        return redirect("overview")
    client = clients_for(request.user).first()
    if client is None:
        raise Http404("This account has no client access")
    return redirect("client_detail", slug=client.slug)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches neither the database nor Redis."""
    return JsonResponse({"ok": True})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: database, migrations and Redis; 503 with the failing check otherwise."""
    checks = readiness()
    if is_ready(checks):
        return JsonResponse({"ok": True, "checks": checks})
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JsonResponse({"ok": False, "checks": checks}, status=503, headers=headers)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an outage raised outside a view (a middleware's session save, say) is
    still a 503. Django calls this while handling the exception, so it is in exc_info."""
    if isinstance(sys.exc_info()[1], UNAVAILABLE):
        return unavailable(request)
    return defaults.server_error(request)


def login_failure_policy() -> dict[str, int]:
    return {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
    }


def login_locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE): the sign-in page, saying why
    and for how long, with status 429."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "locked_out": True,
        "locked_username": username,
        **login_failure_policy(),
    }
    return render(request, "registration/login.html", context, status=429)
