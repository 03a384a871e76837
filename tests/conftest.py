from __future__ import annotations

import pytest

# --instant: run the suite with the clock moved (see tests/instants.py).
pytest_plugins = ["tests.instants"]


@pytest.fixture
def rates(db):
    """The shipped model-rate table, loaded as a user would with load_model_rates."""
    from tracking.rates import DEFAULT_RATES_CSV, model_rates_load

    model_rates_load(text=DEFAULT_RATES_CSV.read_text())
