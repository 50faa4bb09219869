"""Test settings: the embedded defaults plus fast hashing. ``DATABASE_URL`` / ``REDIS_URL``
still select PostgreSQL and Redis, which is how CI runs the suite a second time."""

from quantweb.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
QUANTWEB_RELAY_POLL_SECONDS = 0.05
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
if not REDIS_URL:  # noqa: F405
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
