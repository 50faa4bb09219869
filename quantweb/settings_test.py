"""Test settings: the embedded defaults plus fast hashing. ``DATABASE_URL`` / ``REDIS_URL``
still select PostgreSQL and Redis, which is how CI runs the suite a second time."""

import tempfile

from quantweb.settings import *  # noqa: F403

QUANTWEB_RUNBOOK_DIR = tempfile.mkdtemp(prefix="quantweb-runbook-")  # outage markers: never var/
# Checkpoints outside the database outlive each test's rollback: off unless a test sets a file.
QUANTWEB_AUDIT_CHECKPOINT_FILE = ""
# Adapter tests get fresh limiters each; a ban in one must not leak into the next through the
# cache. tests/execution/test_shared_ratelimit.py shares state explicitly.
QUANTWEB_SHARED_RATELIMIT = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
QUANTWEB_RELAY_POLL_SECONDS = 0.05
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
if not REDIS_URL:  # noqa: F405
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
