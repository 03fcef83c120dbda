"""`manage.py check --deploy` is clean with the production variables that docker-compose sets."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def production_env() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["x-app"]["environment"].items()}
    env["SECRET_KEY"] = "x" * 20 + "-a-long-random-production-secret-key-0123456789"
    env["ALLOWED_HOSTS"] = "studio.example.org"
    env["CSRF_TRUSTED_ORIGINS"] = "https://studio.example.org"
    env["SECURE_SSL_REDIRECT"] = "true"
    for key in ("MEDIA_ROOT", "ARTIFACT_ROOT", "MODEL_CACHE", "PREFSTUDIO_VAR"):
        env.pop(key)
    return env


def test_check_deploy_is_clean_with_production_variables(tmp_path):
    env = {**os.environ, **production_env(), "PREFSTUDIO_VAR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "", "PREFSTUDIO_VAR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
