"""quantweb settings: one module driven by environment variables [RT-4].

Embedded defaults (no variables set): SQLite in ``var/``, django-q2 ORM broker, in-memory
channel layer, sim exchange. ``DATABASE_URL`` selects PostgreSQL or MariaDB; ``REDIS_URL``
switches the channel layer and the django-q2 broker to Redis. ``quantweb.settings_production``
hardens this module for deployment.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from quantweb.env import (
    env_bool,
    env_int,
    env_list,
    env_str,
    generate_fernet_key,
    generate_secret_key,
    local_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("QUANTWEB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY") or local_secret(VAR_DIR, "secret_key", generate_secret_key)
# Credentials are encrypted with this key, never with SECRET_KEY. Comma-separated keys rotate:
# the first encrypts, all decrypt (cryptography's MultiFernet).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEY", []) or [
    local_secret(VAR_DIR, "field_encryption.key", generate_fernet_key)
]
# Audit checkpoints are signed (HMAC-SHA256) with this key, never with SECRET_KEY: whoever can
# forge sessions still cannot forge a checkpoint (docs/ui-api.md, "Security").
AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY") or local_secret(VAR_DIR, "audit_hmac.key", generate_secret_key)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "django_q",
    "axes",
    "traders",
    "strategies",
    "regime",
    "execution",
    "risk",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # [UI-5] every page requires login unless a view is marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused by the axes backend into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "quantweb.urls"
ASGI_APPLICATION = "quantweb.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": {
                # WAL lets the web process read while the worker writes; IMMEDIATE takes the
                # write lock at BEGIN so concurrent writers queue instead of failing mid-way.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    config = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.mysql":
        try:
            import MySQLdb  # noqa: F401
        except ImportError:  # PyMySQL stands in when mysqlclient is not built
            import pymysql

            pymysql.install_as_MySQLdb()
        config.setdefault("OPTIONS", {})["charset"] = "utf8mb4"
    return config


DATABASES = {"default": _database()}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MariaDB ignores conditional unique constraints (one open position per market, unique
    # active trader names); the services enforce both under the trader's row lock.
    SILENCED_SYSTEM_CHECKS = ["models.W036", "models.W037"]  # W037: django-q2's conditional index
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# How worker events reach browsers (see docs/architecture.md, "Live updates"):
#  - "db":      the web process tails the Event table and pushes to its local consumers.
#               Works with any channel layer, with web and workers in separate processes.
#  - "channel": workers group_send through a cross-process (Redis) channel layer.
# Default: "channel" with Redis, "db" otherwise.
QUANTWEB_EVENT_RELAY = env_str("QUANTWEB_EVENT_RELAY", "channel" if REDIS_URL else "db")
QUANTWEB_RELAY_POLL_SECONDS = float(env_str("QUANTWEB_RELAY_POLL_SECONDS", "0.5"))

# django-q2: two clusters on one broker, so a slow job never delays a trading tick.
#  - the trading cluster (queue ``Q_CLUSTER["name"]``): the dispatcher, ticks, intents, alert
#    drains; short tasks with a timeout well inside a bar.
#  - the slow cluster (queue ``QUANTWEB_SLOW_QUEUE``): backtests, tuning, the daily self-test;
#    long timeout, one worker. Enqueue with ``async_task(..., cluster=settings.QUANTWEB_SLOW_QUEUE)``.
# ``manage.py run`` starts both; elsewhere ``manage.py worker --queue trading|slow`` starts one.
# A process becomes the slow cluster when django-q2 sees ``Q_CLUSTER_NAME=<slow queue>``;
# ``QUANTWEB_Q_NAME`` then keeps the site name (the signing salt, shared by both clusters).
# See docs/runbook.md, "Queues".
QUANTWEB_Q_NAME = env_str("QUANTWEB_Q_NAME") or env_str("Q_CLUSTER_NAME", "quantweb")
QUANTWEB_TRADING_QUEUE = QUANTWEB_Q_NAME
QUANTWEB_SLOW_QUEUE = env_str("QUANTWEB_SLOW_QUEUE") or f"{QUANTWEB_Q_NAME}-slow"
if QUANTWEB_SLOW_QUEUE == QUANTWEB_TRADING_QUEUE:
    raise ImproperlyConfigured("QUANTWEB_SLOW_QUEUE must differ from the trading queue (QUANTWEB_Q_NAME)")
_SLOW_TIMEOUT = env_int("Q_SLOW_TIMEOUT", 6 * 3600)
Q_CLUSTER = {
    "name": QUANTWEB_Q_NAME,
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT", 50),        # a trader tick must finish well inside a bar
    "retry": env_int("Q_RETRY", 120),           # must exceed timeout (django-q2 requirement)
    "max_attempts": 1,                          # a stale tick is skipped, never replayed
    "catch_up": False,                          # no backlog of missed schedules after downtime
    "save_limit": 500,
    "queue_limit": 100,
    "ack_failures": True,
    "label": "Workers",
    "poll": 0.5,
    "ALT_CLUSTERS": {
        QUANTWEB_SLOW_QUEUE: {
            "workers": env_int("Q_SLOW_WORKERS", 1),
            "timeout": _SLOW_TIMEOUT,           # a walk-forward backtest or a tuning study
            "retry": env_int("Q_SLOW_RETRY", _SLOW_TIMEOUT + 300),
            "max_attempts": 1,                  # a crashed study is reported, not silently rerun
            "queue_limit": 2,                   # do not prefetch hours of work into one process
            "poll": 2.0,
        },
    },
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
# Login throttling (django-axes, every login form: the login page, admin and any
# ``authenticate()`` call): LOGIN_MAX_FAILURES failures for one (username, client address) pair
# lock that pair for LOGIN_LOCKOUT_SECONDS. Attempts live in the database (axes' database
# handler), so the lockout lasts as configured whatever cache is in use.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900)
# Reverse proxies in front of the app that append to X-Forwarded-For (0: use the socket address,
# ignore the header, which any client can forge). See docs/ui-api.md, "Security".
QUANTWEB_TRUSTED_PROXY_COUNT = env_int("QUANTWEB_TRUSTED_PROXY_COUNT", 0)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",   # first: refuses a locked (username, client) pair
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# Callables read LOGIN_MAX_FAILURES / LOGIN_LOCKOUT_SECONDS when called, so overrides apply.
AXES_FAILURE_LIMIT = "traders.auth.failure_limit"
AXES_COOLOFF_TIME = "traders.auth.cool_off"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "traders.auth.client_ip"
AXES_USERNAME_CALLABLE = "traders.auth.username_key"   # a keyed hash: no typed password is stored
AXES_LOCKOUT_CALLABLE = "traders.auth.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the lockout ends LOGIN_LOCKOUT_SECONDS after it began
AXES_VERBOSE = False
AXES_DISABLE_ACCESS_LOG = True     # successful logins are in the audit log (LOGIN rows) already
# Signed audit checkpoints (traders.audit): how often the schedule signs the chain's tip, and an
# append-only copy of every checkpoint outside the database (empty: database only).
QUANTWEB_AUDIT_CHECKPOINT_MINUTES = env_int("QUANTWEB_AUDIT_CHECKPOINT_MINUTES", 10)
QUANTWEB_AUDIT_CHECKPOINT_FILE = env_str("QUANTWEB_AUDIT_CHECKPOINT_FILE", str(VAR_DIR / "audit-checkpoints.jsonl"))
# REST API tokens (rest_framework.authtoken) expire this long after they were issued.
QUANTWEB_API_TOKEN_TTL_HOURS = env_int("QUANTWEB_API_TOKEN_TTL_HOURS", 30 * 24)
# JSON request bodies nested deeper or larger than this are a 400 (quantweb/parsers.py).
QUANTWEB_API_MAX_JSON_DEPTH = env_int("QUANTWEB_API_MAX_JSON_DEPTH", 64)
QUANTWEB_API_MAX_JSON_BYTES = env_int("QUANTWEB_API_MAX_JSON_BYTES", 1_000_000)

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "quantweb_cache"}
    )
}

# Venue rate-limit and ban state, shared by every worker process of one account through this
# cache alias (Redis with REDIS_URL, else the database cache table): execution/ratelimit_shared.py.
QUANTWEB_SHARED_RATELIMIT = env_bool("QUANTWEB_SHARED_RATELIMIT", True)
QUANTWEB_RATELIMIT_CACHE = "default"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise serves from finders in DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a refused or expired token a 401.
        "traders.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # JSON bodies are size- and depth-limited: a 100k-deep nesting is a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "quantweb.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "traders.api.schema.AutoSchema",  # documents every operation's error responses
    "EXCEPTION_HANDLER": "quantweb.api.exception_handler",
    "URL_FORMAT_OVERRIDE": None,  # ?format= is the audit export's csv|jsonl, not a renderer switch
}
SPECTACULAR_SETTINGS = {
    "TITLE": "quantweb API",
    "VERSION": "1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The documented request body is JSON (form posts still parse, for the browsable forms and
    # tests, but a form field has no types: "true" is a string there, which the fuzz would flag).
    "PARSER_WHITELIST": ["quantweb.parsers.BoundedJSONParser"],
    "ENUM_NAME_OVERRIDES": {
        "ProfileKeyEnum": "strategies.models.ProfileKey",
        "BacktestStatusEnum": "strategies.models.BacktestStatus",
        "ModelStatusEnum": "strategies.models.ModelStatus",
        "TuningStatusEnum": "strategies.models_learning.TuningRun.Status",
        # a tuning run's simulator timeframe and its files' bar share one set of choices
        "TuningBarEnum": "strategies.learning.BAR_CHOICES",
        "DriftStatusEnum": "strategies.models_learning.DriftCheck.Status",
    },
}

# Trading platform
QUANTWEB_SIM_SEED = env_int("QUANTWEB_SIM_SEED", 7)
QUANTWEB_SIM_MARKETS = env_int("QUANTWEB_SIM_MARKETS", 30)
# 1-minute bars generated on first start (two days: the regime's leader look-back is 1,485 bars).
QUANTWEB_SIM_WARMUP_BARS = env_int("QUANTWEB_SIM_WARMUP_BARS", 2 * 1440)
QUANTWEB_TICK_SECONDS = env_int("QUANTWEB_TICK_SECONDS", 60)
# Metrics and alerts (docs/alerts-and-metrics.md).
METRICS_TOKEN = env_str("METRICS_TOKEN")  # Bearer token for /metrics scrapers; unset: sessions only
ALERT_HTTP_TIMEOUT = float(env_str("ALERT_HTTP_TIMEOUT", "5"))
ALERT_DRAIN_SECONDS = float(env_str("ALERT_DRAIN_SECONDS", "30"))
# Market data collectors for real venues (docs/market-data.md).
QUANTWEB_UPBIT_BASE_URL = env_str("QUANTWEB_UPBIT_BASE_URL", "https://api.upbit.com")
QUANTWEB_CCXT_QUOTE = env_str("QUANTWEB_CCXT_QUOTE", "USDT")
QUANTWEB_COLLECT_TOP_N = env_int("QUANTWEB_COLLECT_TOP_N", 40)
QUANTWEB_COLLECT_MAX_REQUESTS = env_int("QUANTWEB_COLLECT_MAX_REQUESTS", 150)
QUANTWEB_COLLECT_MAX_SECONDS = float(env_str("QUANTWEB_COLLECT_MAX_SECONDS", "35"))
# Backtest runs (docs/backtest-runs.md): data files offered on the STRATEGY page.
QUANTWEB_BACKTEST_DATA_DIR = env_str("QUANTWEB_BACKTEST_DATA_DIR", str(BASE_DIR.parent / "shared" / "data"))
QUANTWEB_BACKTEST_STALE_SECONDS = env_int("QUANTWEB_BACKTEST_STALE_SECONDS", 900)
QUANTWEB_PAPER_PROTECTION_HOURS = env_int("QUANTWEB_PAPER_PROTECTION_HOURS", 24)
TELEGRAM_BOT_TOKEN = env_str("TELEGRAM_BOT_TOKEN")
TELEGRAM_CHAT_ID = env_str("TELEGRAM_CHAT_ID")
TELEGRAM_API_URL = env_str("TELEGRAM_API_URL", "https://api.telegram.org")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "quantweb.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
