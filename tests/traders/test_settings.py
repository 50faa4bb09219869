"""[RT-4]: configuration from the environment; production settings pass check --deploy and
refuse to start without their secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]


def run_manage(*args, env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY", "DATABASE_URL",
                                                             "REDIS_URL")}
    env.update({"QUANTWEB_VAR_DIR": str(tmp_path), **env_extra})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_production_settings_pass_check_deploy(tmp_path):
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, env_extra={
        "DJANGO_SETTINGS_MODULE": "quantweb.settings_production",
        "SECRET_KEY": "x" * 20 + "prod-secret-key-with-enough-entropy-1234567890abcdef",
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": "audit-hmac-key-with-enough-entropy-0987654321fedcba",
        "ALLOWED_HOSTS": "quantweb.example.org",
    })
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_missing_secrets(tmp_path):
    result = run_manage("check", tmp_path=tmp_path, env_extra={"DJANGO_SETTINGS_MODULE": "quantweb.settings_production"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr


def test_development_defaults_generate_keys_outside_git(tmp_path):
    result = run_manage("check", tmp_path=tmp_path, env_extra={"DJANGO_SETTINGS_MODULE": "quantweb.settings"})
    assert result.returncode == 0, result.stderr
    key = (tmp_path / "field_encryption.key").read_text().strip()
    Fernet(key.encode())  # a valid Fernet key
    assert (tmp_path / "field_encryption.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "secret_key").read_text().strip() != key
    # The audit checkpoints' signing key is its own, never SECRET_KEY [issue 21 #7].
    audit_key = (tmp_path / "audit_hmac.key").read_text().strip()
    assert len(audit_key) >= 40 and audit_key != (tmp_path / "secret_key").read_text().strip()
    assert (tmp_path / "audit_hmac.key").stat().st_mode & 0o077 == 0
