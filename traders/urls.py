from django.contrib.auth import views as auth_views
from django.urls import path

from traders import views, views_alerts, views_credentials, views_metrics

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("traders/", views.trader_list, name="traders"),
    path("traders/<int:pk>/", views.trader_detail, name="trader-detail"),
    path("traders/<int:pk>/action/", views.trader_action, name="trader-action"),
    path("traders/<int:pk>/mode/", views.trader_mode, name="trader-mode"),
    path("traders/<int:pk>/reset-guard/", views.trader_reset_guard, name="trader-reset-guard"),
    path("kill-switch/", views.kill_switch, name="kill-switch"),
    path("strategy/", views.strategy, name="strategy"),
    path("config/", views.config, name="config"),
    path("config/credentials/<int:pk>/delete/", views.credential_delete, name="credential-delete"),
    path("config/credentials/<int:pk>/test/", views_credentials.credential_test, name="credential-test"),
    path("config/audit-export/", views.audit_export, name="audit-export"),
    path("config/alerts/", views_alerts.alert_settings, name="alert-settings"),
    path("config/alerts/test/", views_alerts.alert_test, name="alert-test"),
    path("metrics", views_metrics.metrics, name="metrics"),
]
