from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

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


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
