from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tracking.rates import DEFAULT_RATES_CSV, model_rates_load

# --instant: run the suite with the clock moved (see tests/instants.py).
pytest_plugins = ["tests.instants"]

# Property tests judge the code, not the machine: CI and the shared development machine
# run several suites at once, so neither a slow example (deadline) nor slow input
# generation (the too_slow health check) fails a test. The fuzz tests load their own
# profile (tests/fuzz/hostile.py).
settings.register_profile(
    "clientmeter", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("clientmeter")


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
