"""Builders for Django-level tests."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from strategies.models import StrategyProfile

PASSWORD = "correct-horse-battery-9"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def operator(self, create, extracted, **kwargs):
        if extracted:
            self.user_permissions.add(Permission.objects.get(codename="change_trader"))
        self.save()


def staff_user(**kwargs):
    return UserFactory(is_staff=True, is_superuser=True, **kwargs)


def profile(key: str = "STANDARD") -> StrategyProfile:
    return StrategyProfile.objects.get(key=key)


def make_trader(user, name="alpha", key="STANDARD", seed=Decimal("10000000")):
    from traders.services import create_trader

    return create_trader(user=user, name=name, profile=profile(key), seed_money=seed)
