"""Small typed readers for environment variables that fail loudly on bad values."""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

from dotenv import load_dotenv

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvError(ValueError):
    pass


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvError(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise EnvError(f"{name} must be an integer, got {raw!r}") from None


def env_decimal(name: str, default: str) -> Decimal:
    raw = os.environ.get(name, default)
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise EnvError(f"{name} must be a decimal number, got {raw!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_int_list(name: str, default: str = "") -> list[int]:
    """Comma-separated integers, e.g. ``50,80,100``."""
    try:
        return [int(item) for item in env_list(name, default)]
    except ValueError:
        raise EnvError(
            f"{name} must be comma-separated integers, got {os.environ[name]!r}"
        ) from None


def load_env_file(default: Path) -> Path | None:
    """Read development defaults from a local env file (``bin/start`` writes ``.env``).

    Variables already in the environment win, so production, CI and a one-off
    ``DJANGO_DEBUG=0 manage.py …`` are unaffected. ``CLIENTMETER_ENV_FILE`` names another
    file; set it empty to read none. Called by ``manage.py`` only: the WSGI app, Celery and
    the test settings never read the file. Returns the file read, if any.
    """
    raw = os.environ.get("CLIENTMETER_ENV_FILE")
    path = default if raw is None else (Path(raw) if raw.strip() else None)
    if path is None or not path.is_file():
        return None
    load_dotenv(path, override=False)
    return path
