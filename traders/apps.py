from django.apps import AppConfig


class TradersConfig(AppConfig):
    name = "traders"
    default_auto_field = "django.db.models.BigAutoField"
