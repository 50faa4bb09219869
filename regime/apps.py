from django.apps import AppConfig


class RegimeConfig(AppConfig):
    name = "regime"
    default_auto_field = "django.db.models.BigAutoField"
