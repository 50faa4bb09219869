"""Shared model-field helpers: money and quantities are Decimal in the database [DM-3]."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

MONEY_DIGITS = 28
MONEY_PLACES = 10
ZERO = Decimal("0")


def money_field(**kwargs) -> models.DecimalField:
    """A Decimal column wide enough for KRW notionals and 8-decimal crypto quantities."""
    kwargs.setdefault("max_digits", MONEY_DIGITS)
    kwargs.setdefault("decimal_places", MONEY_PLACES)
    return models.DecimalField(**kwargs)


def to_decimal(value) -> Decimal:
    """Decimal from a float/str/int without binary-float noise (floats go through repr)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def quantize_money(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-MONEY_PLACES))
