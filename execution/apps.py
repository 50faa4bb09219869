from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only (no query runs here): every worker process of one account shares its
        # rate-limit and ban state through the cache (Redis or the database).
        from execution.ratelimit_shared import install

        install()
