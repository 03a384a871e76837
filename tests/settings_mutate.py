"""Settings for mutation runs (bin/mutate): the test settings with the test database in a
file kept between runs (``--reuse-db``), so that each mutant's pytest does not migrate a
fresh database. mutmut runs one mutant at a time, so one file is enough."""

from __future__ import annotations

from agency.settings_test import *  # noqa: F403

DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "mutants-test.sqlite3")}  # noqa: F405
