"""Browser-test fixtures: the real platform as subprocesses, and Debian's Chromium via Playwright.

``live_platform`` migrates and bootstraps a throw-away SQLite database in a temp QUANTWEB_VAR_DIR,
then starts ``manage.py run`` (daphne + django-q2 cluster) on a free localhost port and waits
for the login page. A finalizer sends SIGINT (the clean Ctrl-C path) and kills whatever is
left of the process group, so no server or worker outlives the test.

``browser`` launches /usr/bin/chromium; Playwright never downloads a browser here. Without
Chromium the tests skip, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, in_ci

CHROMIUM = Path(os.environ.get("QUANTWEB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "browser-test-Pa55word"
START_TIMEOUT = 45.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Platform:
    url: str
    env: dict[str, str]
    var_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    dispatch_runs: list[str] = field(default_factory=list)

    def manage(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the platform's database directly (read-only), to prove what did or did not happen."""
        con = sqlite3.connect(f"file:{self.var_dir / 'db.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)          # `manage.py run` stops web and worker cleanly
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # anything left in the group we started
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        self.proc = None


def _platform_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "quantweb.settings",
        "QUANTWEB_VAR_DIR": str(var_dir),       # a throw-away SQLite database and keys
        "QUANTWEB_SIM_WARMUP_BARS": "1600",
        "QUANTWEB_SIM_MARKETS": "12",
        "QUANTWEB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "QUANTWEB_RELAY_POLL_SECONDS": "0.2",
        "DEBUG": "true",                          # static files from the finders, no collectstatic
        "LOG_LEVEL": "WARNING",
        # With REDIS_URL set (CI's second pass) the live path is the Redis channel layer; a
        # cluster name of our own keeps this worker off any other queue on that Redis.
        "Q_CLUSTER_NAME": f"quantweb-browser-{os.getpid()}",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture(scope="session")
def live_platform(tmp_path_factory) -> Iterator[Platform]:
    var_dir = tmp_path_factory.mktemp("quantweb-var")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    plat = Platform(url=f"http://127.0.0.1:{port}", env=_platform_env(var_dir), var_dir=var_dir,
                    log_path=ARTIFACTS / "platform.log")
    plat.manage("migrate", "--noinput", "-v", "0")
    plat.manage("bootstrap")
    with plat.log_path.open("wb") as log:
        plat.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env=plat.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,   # its own process group: the finalizer can reap every child
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if plat.proc.poll() is not None:
                raise AssertionError(f"`manage.py run` exited with {plat.proc.returncode}:\n{plat.log_tail()}")
            try:
                with urllib.request.urlopen(plat.url + "/login/", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no HTTP 200 on /login/ within {START_TIMEOUT:.0f} s:\n{plat.log_tail()}")
            time.sleep(0.2)
        yield plat
    finally:
        plat.stop()


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = f"Debian chromium not found at {CHROMIUM} (apt-get install chromium)"
        if in_ci():
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright import sync_api
    except ImportError:
        if in_ci():
            pytest.fail("the playwright package is missing (pip install -e '.[test]')")
        pytest.skip("the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
