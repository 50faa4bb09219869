"""Production settings: everything from the environment, nothing generated, HTTPS only.

``DJANGO_SETTINGS_MODULE=quantweb.settings_production python manage.py check --deploy`` is clean
when SECRET_KEY, FIELD_ENCRYPTION_KEY, AUDIT_HMAC_KEY and ALLOWED_HOSTS are set.
"""

import os

from django.core.exceptions import ImproperlyConfigured

for _required in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY", "ALLOWED_HOSTS"):
    if not os.environ.get(_required):
        raise ImproperlyConfigured(f"{_required} must be set in production")
os.environ.setdefault("DEBUG", "false")

from quantweb.settings import *  # noqa: E402,F403

DEBUG = False
SECURE_SSL_REDIRECT = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
