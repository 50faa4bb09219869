"""Every engine module imports without Django configured, and pulls in no Django, DRF,
Channels, django-q2 or exchange client (STYLE.md; ground rule 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE_PACKAGES = ["execution/engine", "strategies/engine", "regime/engine", "risk/engine", "traders/engine"]
FORBIDDEN = ("django", "rest_framework", "channels", "django_q", "ccxt", "pyupbit")


def engine_modules() -> list[str]:
    modules = []
    for package in ENGINE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join(parts))
    return modules


def test_engine_modules_exist():
    mods = engine_modules()
    assert "execution.engine.types" in mods
    assert "strategies.engine.types" in mods
    assert "regime.engine.types" in mods


def test_every_engine_module_imports_without_django():
    code = (
        "import importlib, json, sys\n"
        f"mods = {engine_modules()!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(json.dumps(bad))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
