"""Root fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QUANTWEB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_shared_data(relative: str = "") -> Path:
    """Path to real market data under ../shared/data.

    Outside CI a missing file skips the test with the reason; in CI it fails, because CI always
    has ../shared beside the clone and a silently skipped real-data test proves nothing.
    """
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real market data not found at {path}"
        if in_ci():
            pytest.fail(message + " (CI must have ../shared/data)")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()
