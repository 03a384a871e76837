"""A web process freezes the loaded application out of the garbage collector's reach."""

from __future__ import annotations

import gc
import importlib
import sys

from django.urls import get_resolver


def test_the_wsgi_application_freezes_the_loaded_objects() -> None:
    gc.unfreeze()
    sys.modules.pop("agency.wsgi", None)
    try:
        importlib.import_module("agency.wsgi")
        assert gc.get_freeze_count() > 10_000
        # The views were imported first, so they are among the frozen objects.
        assert get_resolver().url_patterns
    finally:
        gc.unfreeze()
