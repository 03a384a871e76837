"""Test overrides: the real settings with a known key and fast password hashing.

DATABASE_URL and REDIS_URL come from the environment as usual, so the same suite runs on
SQLite locally and on PostgreSQL + Redis in CI.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from agency.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# django-axes off, as its documentation says for test suites: the test client's login()
# authenticates without a request, which axes refuses. Its own tests turn it on.
AXES_ENABLED = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests call tasks eagerly unless a test starts a real worker (see tests/conftest.py).
CELERY_TASK_ALWAYS_EAGER = True
MEDIA_ROOT = BASE_DIR / "artifacts" / "test-media"  # noqa: F405
PRIVATE_STORAGE_ROOT = BASE_DIR / "artifacts" / "test-private"  # noqa: F405
# Tests never run collectstatic: WhiteNoise looks files up per request instead of scanning
# an empty STATIC_ROOT at start (which warns on every request handler built).
WHITENOISE_AUTOREFRESH = True
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    # The test runner empties its database with TRUNCATE between transactional tests;
    # billing's guard refuses that while issued invoices exist unless a session opts in.
    DATABASES["default"]["OPTIONS"]["options"] = "-c clientmeter.allow_truncate=on"  # noqa: F405
