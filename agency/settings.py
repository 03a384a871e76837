"""ClientMeter settings: one module, driven by environment variables.

Development defaults are safe and need nothing installed: SQLite in the project folder,
Celery tasks run eagerly in-process, mail printed to the console. Production sets
DJANGO_DEBUG=0 (the default), DJANGO_SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL and REDIS_URL.
The README lists every variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from agency.env import env_bool, env_decimal, env_int, env_int_list, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for development).")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Absolute base of links in alert messages and emails.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "simple_history",
    "axes",
    "agency",
    "tracking",
    "billing",
]

MIDDLEWARE = [
    # /healthz and /readyz for probes at any address (agency.health.ProbeMiddleware).
    "agency.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A database or Redis outage in a view: 503 with Retry-After (JSON on the API).
    "agency.http.ServiceUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "agency.urls"
WSGI_APPLICATION = "agency.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # An unreachable server fails a request in seconds (a 503), not at gunicorn's timeout.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT", 5
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "clientmeter",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling (django-axes), for staff and client users, on the site's and admin's
# login alike: after LOGIN_FAILURE_LIMIT wrong passwords in a row for one username from one
# address, that pair is locked out for LOGIN_COOLOFF_MINUTES (each further try restarts it).
# Per username *and* address: by username alone anyone could lock staff out; by address
# alone one office behind NAT would lock itself out.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "agency.views.login_locked_out"
# No start-up banner in every command's output; failures are still logged (username, address).
AXES_VERBOSE = False
# The client's address: REMOTE_ADDR, or behind our TLS proxy the address it appends to
# X-Forwarded-For (the right-most: anything left of it is the client's own, forgeable).
if env_bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    AXES_IPWARE_PROXY_COUNT = 1
    AXES_IPWARE_PROXY_ORDER = "right-most"
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# The agency's time zone: days and months of rollups, budgets and invoices are its days.
# Events are stored in UTC.
TIME_ZONE = env_str("CLIENTMETER_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
# Invoice PDFs: never under MEDIA_ROOT or STATIC_ROOT, never served by URL; only the
# permission-checked download views read them.
PRIVATE_STORAGE_ROOT = Path(env_str("PRIVATE_STORAGE_ROOT", str(BASE_DIR / "private")))
for _public in (MEDIA_ROOT, STATIC_ROOT):
    if PRIVATE_STORAGE_ROOT.resolve().is_relative_to(_public.resolve()):
        raise ImproperlyConfigured(f"PRIVATE_STORAGE_ROOT must not be inside {_public}")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "invoices": {"BACKEND": "agency.storage.PrivateStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# The ingest API accepts up to 1 MiB bodies; leave headroom for Django's own check.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1_572_864

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ClientMeter <billing@localhost>")
# Agency staff addresses that receive budget alerts, comma-separated.
AGENCY_ALERT_EMAILS = env_list("AGENCY_ALERT_EMAILS")
AGENCY_SLACK_WEBHOOK_URL = env_str("AGENCY_SLACK_WEBHOOK_URL")

# Celery: eager (in-process) when no broker is configured, Redis otherwise.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
# Each task states its delivery semantics (billing/tasks.py, tracking/tasks.py); these
# defaults are the at-least-once ones, for a task that would forget to.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
# Queues, so that one kind of work never waits behind another: "usage" (the ingest side:
# re-pricing, rollups and budget recompute, run ~30 s after usage arrives), "notify"
# (alert emails and webhooks), "documents" (month-end drafts, finalization, PDFs) and
# "reports" (provider report syncs); anything else goes to "celery". A worker consumes
# every queue unless started with -Q (bin/worker lists them all, WORKER_QUEUES narrows
# it): at scale, give "documents" workers of their own (README, "Scaling").
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in ("celery", "documents", "notify", "reports", "usage")
]
CELERY_TASK_ROUTES = {
    "tracking.tasks.reprice_unpriced_task": {"queue": "usage"},
    "billing.tasks.budgets_recompute_task": {"queue": "usage"},
    "billing.tasks.recon_outputs_refresh_task": {"queue": "usage"},
    "billing.tasks.overview_refresh_task": {"queue": "usage"},
    "billing.tasks.alert_delivery_send_task": {"queue": "notify"},
    "billing.tasks.alert_deliveries_retry_task": {"queue": "notify"},
    "billing.tasks.recon_alerts_task": {"queue": "notify"},
    "billing.tasks.invoices_generate_task": {"queue": "documents"},
    "billing.tasks.invoices_finalize_due_task": {"queue": "documents"},
    "billing.tasks.invoice_pdf_prepare_task": {"queue": "documents"},
    "tracking.tasks.provider_usage_sync_task": {"queue": "reports"},
    "tracking.tasks.provider_usage_sync_recent_task": {"queue": "reports"},
    "tracking.tasks.usage_partitions_ensure_task": {"queue": "usage"},
}
# A task whose whole worker vanished (machine lost) stays unacknowledged in Redis this
# long before another worker takes it again. It must exceed the longest task, or a slow
# task would run twice at once: the longest measured is month-end finalization, ~95 s for
# 200 clients (PDFs included), and a rollup rebuild after a two-month backfill of 10M
# events takes ~5 min. 15 minutes is three times that. (A worker *process* killed alone
# is requeued at once: reject_on_worker_lost.)
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 900)
if CELERY_VISIBILITY_TIMEOUT < 120:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be at least 120 seconds")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# A task running into its visibility timeout is killed first (and logged as failed; the
# beat reruns the periodic jobs), rather than run a second time beside itself.
CELERY_TASK_TIME_LIMIT = CELERY_VISIBILITY_TIMEOUT - 60
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Price events whose model had no rate when they arrived, once a rate exists.
    "reprice-unpriced": {
        "task": "tracking.tasks.reprice_unpriced_task",
        "schedule": crontab(minute="*/10"),
    },
    # Rebuild the rollups of days with new or re-priced usage, recompute every client's
    # budget status and fire alerts (also runs ~30 s after ingest; this catches the rest).
    "budgets-recompute": {
        "task": "billing.tasks.budgets_recompute_task",
        "schedule": crontab(minute="*/2"),
    },
    # Resend alert deliveries that failed or whose task was lost.
    "alert-deliveries-retry": {
        "task": "billing.tasks.alert_deliveries_retry_task",
        "schedule": crontab(minute="*/5"),
    },
    # Reconciliation alerts (coverage below RECON_COVERAGE_ALERT_PCT, a model's rate
    # drifting) for this month and, in its first days, the last: once each per month.
    "recon-alerts": {
        "task": "billing.tasks.recon_alerts_task",
        "schedule": crontab(minute=45),
    },
    # On the 1st, draft last month's invoice for every client with something to bill.
    "invoices-generate": {
        "task": "billing.tasks.invoices_generate_task",
        "schedule": crontab(minute=30, hour=1, day_of_month=1),
    },
    # Daily: finish a month-end run cut short (or missed), refresh past months' drafts
    # with late usage, finalize those whose grace period (INVOICE_GRACE_DAYS) is over.
    "invoices-finalize-due": {
        "task": "billing.tasks.invoices_finalize_due_task",
        "schedule": crontab(minute=0, hour=3),
    },
    # Every 4 hours: re-pull the last 3 days of each provider's usage and cost report
    # (providers revise recent days) for every provider whose admin key is set.
    "provider-usage-sync": {
        "task": "tracking.tasks.provider_usage_sync_recent_task",
        "schedule": crontab(minute=20, hour="*/4"),
    },
    # Daily (PostgreSQL): create the event table's monthly partitions three months ahead,
    # so new events never land in the default partition.
    "usage-partitions-ensure": {
        "task": "tracking.tasks.usage_partitions_ensure_task",
        "schedule": crontab(minute=10, hour=2),
    },
}

# The providers' usage and cost reports (tracking.provider_reports): organization admin
# keys, only ever read from the environment. The base URLs default to the providers' own.
ANTHROPIC_ADMIN_API_KEY = env_str("ANTHROPIC_ADMIN_API_KEY")
OPENAI_ADMIN_API_KEY = env_str("OPENAI_ADMIN_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")

# API keys: a lookup is cached this long in the shared cache (a revoke, rotation or delete
# still takes effect on the next request). Off without Redis: a per-process cache would
# keep a revoked key alive in the other processes.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 60 if REDIS_URL else 0)

# Ingest API limits.
INGEST_MAX_EVENTS = 1000
INGEST_MAX_BODY_BYTES = 1_048_576
INGEST_RATE_LIMIT_PER_MINUTE = env_int("INGEST_RATE_LIMIT_PER_MINUTE", 3000)
INGEST_BACKFILL_DAYS = env_int("INGEST_BACKFILL_DAYS", 62)

# Billing.
INVOICE_NUMBER_PREFIX = env_str("INVOICE_NUMBER_PREFIX", "INV")
INVOICE_GRACE_DAYS = env_int("INVOICE_GRACE_DAYS", 3)
# The alert thresholds (percent of budget) a new client starts with; editable per client.
DEFAULT_ALERT_THRESHOLDS = env_int_list("DEFAULT_ALERT_THRESHOLDS", "50,80,100")
ANOMALY_STDDEV = env_decimal("ANOMALY_STDDEV", "3")
# Reconciliation: alert when a month's coverage (tracked ÷ the provider's cost) is below
# this percentage.
RECON_COVERAGE_ALERT_PCT = env_decimal("RECON_COVERAGE_ALERT_PCT", "98")
# A budget recompute runs this long after new usage: one run per burst of ingest requests.
BUDGET_RECOMPUTE_DELAY_SECONDS = env_int("BUDGET_RECOMPUTE_DELAY_SECONDS", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# Production hardening; `manage.py check --deploy` is clean with DEBUG off.
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    if env_bool("DJANGO_BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
