from __future__ import annotations

import uuid
from typing import Any

import pytest

from tracking.rates import DEFAULT_RATES_CSV, model_rates_load

# --instant: run the suite with the clock moved (see tests/instants.py).
pytest_plugins = ["tests.instants"]


@pytest.fixture
def rates(db):
    """The shipped model-rate table, loaded as a user would with load_model_rates."""
    model_rates_load(text=DEFAULT_RATES_CSV.read_text())


@pytest.fixture
def private_cache(settings: Any) -> None:
    """A cache of this test's own: the dashboards cache sums, and SQLite reuses ids."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"test-{uuid.uuid4()}",
        }
    }
