from django.apps import AppConfig


class TradersConfig(AppConfig):
    name = "traders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Auditing logins hooks Django's own auth signals: they cover the login page, admin and
        # the API alike. Business logic stays in services (STYLE.md); this is only the record.
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

        from traders.auth import on_login, on_login_failed, on_logout
        from traders.consumers import end_session_sockets

        user_logged_in.connect(on_login, dispatch_uid="quantweb-audit-login")
        user_login_failed.connect(on_login_failed, dispatch_uid="quantweb-audit-login-failed")
        user_logged_out.connect(on_logout, dispatch_uid="quantweb-audit-logout")
        # A logout ends that session's websockets at once (traders.consumers).
        user_logged_out.connect(end_session_sockets, dispatch_uid="quantweb-ws-logout")
