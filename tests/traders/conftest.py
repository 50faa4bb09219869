import pytest
from django.core.cache import cache

from tests.factories import UserFactory, staff_user


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin_user(db):
    return staff_user(username="boss")


@pytest.fixture
def operator(db):
    return UserFactory(username="op", operator=True)


@pytest.fixture
def viewer(db):
    return UserFactory(username="viewer")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client
