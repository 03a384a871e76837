"""manage.py reads development defaults from .env (bin/start writes it); the environment
wins, and without the file production settings still demand a secret key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agency.env import load_env_file

ROOT = Path(__file__).resolve().parents[2]
PRINT_SETTINGS = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY[:12])"


def _manage(env_file: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CLIENTMETER_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(CLIENTMETER_ENV_FILE=env_file, **extra)
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", PRINT_SETTINGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text("# development\nDJANGO_DEBUG=1\nDJANGO_SECRET_KEY=from-the-env-file-xyz\n")
    return path


def test_manage_py_reads_development_defaults_from_the_env_file(env_file: Path) -> None:
    result = _manage(str(env_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "from-the-env"]


def test_environment_variables_win_over_the_env_file(env_file: Path) -> None:
    result = _manage(str(env_file), DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "xxxxxxxxxxxx"]


def test_without_an_env_file_production_settings_demand_a_secret_key(tmp_path: Path) -> None:
    result = _manage(str(tmp_path / "missing.env"))
    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in result.stderr


def test_an_empty_env_file_setting_reads_no_file(
    env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CLIENTMETER_ENV_FILE= (empty): bin/stack-smoke's production run reads no .env.
    monkeypatch.setenv("CLIENTMETER_ENV_FILE", "")
    # Recorded as absent now, so the undo removes what the file sets below.
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    assert load_env_file(env_file) is None
    assert "DJANGO_SECRET_KEY" not in os.environ
    monkeypatch.delenv("CLIENTMETER_ENV_FILE")
    assert load_env_file(env_file) == env_file
    assert os.environ["DJANGO_SECRET_KEY"] == "from-the-env-file-xyz"


def test_the_env_file_is_ignored_by_git_and_docker() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
