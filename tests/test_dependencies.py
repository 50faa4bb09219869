"""Dependencies [issue 21 #8]: every runtime dependency is used, the lock pins all of them at
versions pyproject.toml accepts, and no test tool is in the runtime lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["quantweb", "traders", "strategies", "regime", "execution", "risk"]
# Used without an import statement in our code: the reason is the documentation.
INDIRECT = {
    "psycopg": "Django's PostgreSQL backend (DATABASE_URL=postgres://...)",
    "redis": "Django's RedisCache and django-q2's Redis broker (REDIS_URL)",
    "pyarrow": "pandas.read_feather (execution/adapters/replay.py)",
}
IMPORT_NAMES = {"PyJWT": "jwt", "django-q2": "django_q", "djangorestframework": "rest_framework",
                "django-axes": "axes", "Django": "django"}
TEST_ONLY = {"pytest", "pytest-django", "playwright", "vectorbt", "backtesting", "schemathesis", "hypothesis",
             "ta", "ruff", "factory-boy", "pytest-socket", "pytest-asyncio", "pymysql"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _source_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for d in SOURCES for p in (ROOT / d).rglob("*.py"))


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith(("#", "-r")):
            dist, version = line.split("==")
            pins[canonicalize_name(dist)] = version
    return pins


def test_every_runtime_dependency_is_used():
    text = _source_text()
    unused = []
    for raw in _project()["dependencies"]:
        name = Requirement(raw).name
        if canonicalize_name(name) in INDIRECT:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_").lower())
        used = re.search(rf"^\s*(import|from) {re.escape(module)}\b", text, re.M) or f'"{module}' in text
        if not used:
            unused.append(name)
    assert unused == []


def test_runtime_lock_pins_every_runtime_dependency_and_no_test_tool():
    runtime = _lock("requirements.lock")
    for raw in _project()["dependencies"]:
        req = Requirement(raw)
        version = runtime.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} does not satisfy {req}"
    assert {canonicalize_name(n) for n in TEST_ONLY} & set(runtime) == set()
    assert "pyupbit" not in runtime


def test_test_lock_pins_the_test_extra_on_top_of_the_runtime_lock():
    runtime, test = _lock("requirements.lock"), _lock("requirements-test.lock")
    assert (ROOT / "requirements-test.lock").read_text().count("-r requirements.lock") == 1
    assert set(runtime) & set(test) == set()
    for raw in _project()["optional-dependencies"]["test"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        version = test.get(name) or runtime.get(name)
        assert version is not None and req.specifier.contains(version, prereleases=True), raw
