"""Encrypted model field for exchange credentials [SPEC 2, 13].

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under ``FIELD_ENCRYPTION_KEYS``
(never SECRET_KEY). With several keys the first encrypts and all decrypt, so keys rotate by
prepending a new key and re-saving (``manage.py rotate_credentials``).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from quantweb.logging import register_secret

PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is not a valid Fernet key") from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return PREFIX + fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token.startswith(PREFIX):
        raise ValueError("value is not an encrypted token")
    try:
        value = fernet().decrypt(token[len(PREFIX):].encode()).decode()
    except InvalidToken:
        # No detail: the token or the key must never end up in an error report.
        raise ValueError("credential cannot be decrypted with the configured keys") from None
    register_secret(value)
    return value


class EncryptedSecret(str):
    """A decrypted secret whose repr never shows the value (tracebacks, debug pages)."""

    def __repr__(self) -> str:
        return "EncryptedSecret('********')"


class EncryptedTextField(models.TextField):
    """Stores ciphertext; the Python value is the plaintext (an EncryptedSecret).

    Every value assigned in Python is plaintext and is encrypted on save, even one that starts
    with ``fernet:``: a key that merely looks like ciphertext is stored encrypted like any other
    (it used to be stored as is, and then broke every page that read it). Only the database
    holds ciphertext; ``from_db_value`` is the only place that decrypts.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return EncryptedSecret(decrypt(value))

    def to_python(self, value):
        if value is None or isinstance(value, EncryptedSecret):
            return value
        return str(value)

    def get_prep_value(self, value):
        if value is None or value == "":
            return value
        value = str(value)
        register_secret(value)
        return encrypt(value)
