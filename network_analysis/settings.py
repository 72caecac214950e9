"""Settings for Network-Analysis, read from the environment.

With no environment at all this runs on SQLite in the project folder; every
variable is documented in ``.env.example`` and in docs/operations.md (Configuration), and
may also be set in ``.env`` (or the file ``KPI_ENV_FILE`` names), where the environment wins.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from kpis.pipeline.location import parse_input_location
from network_analysis.env import (
    cache_from_url,
    cpus_available,
    database_from_url,
    env_file_load,
    env_secret,
    envaddress,
    envbool,
    envchoice,
    envint,
    envlist,
    envrate,
    envstr,
    sqlite_database,
    state_location,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# First: every reader below sees the file's variables (the environment wins over them).
ENV_FILE = env_file_load(base_dir=BASE_DIR)
DATA_DIR = Path(envstr("KPI_DATA_DIR", str(BASE_DIR / "data")))

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", DATA_DIR / "secret_key")
DEBUG = envbool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Locks the admin login after repeated wrong passwords; its admin pages unlock.
    "axes",
    "kpis",
]

MIDDLEWARE = [
    # Outermost: a HEAD answer keeps the headers of the GET and loses its body.
    "network_analysis.middleware.HeadWithoutBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # API responses only: gzip when accepted, then an ETag of the plain body and 304s.
    "kpis.api.middleware.ApiGZipMiddleware",
    "kpis.api.middleware.ApiConditionalGetMiddleware",
    # Serves collected static files (admin, browsable API) without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "network_analysis.urls"
WSGI_APPLICATION = "network_analysis.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

_database_url = envstr("DATABASE_URL", "")
DATABASES = {
    "default": (
        database_from_url(_database_url, base_dir=BASE_DIR)
        if _database_url
        else sqlite_database(BASE_DIR / "db.sqlite3")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Throttle counters live here, so every gunicorn worker counts against one limit.
CACHES = {"default": cache_from_url(envstr("CACHE_URL", ""))}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The admin's dates and times: 24-hour with the zone named (network_analysis/formats).
FORMAT_MODULE_PATH = ["network_analysis.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "admin:login"

# --- Login lockout (django-axes) ----------------------------------------------
# Every password login (the admin's form, which also guards the dashboard, and the
# browsable API's) is checked by axes first; API tokens are not passwords and are
# throttled instead.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Wrong passwords in a row, per user name and per client address apart, before a lockout.
AXES_FAILURE_LIMIT = envint("DJANGO_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Minutes a lockout lasts, counted from the last refused attempt; 0: until an admin
# deletes its access attempt in the admin (or `manage.py axes_reset`).
_LOGIN_COOLOFF_MINUTES = envint("DJANGO_LOGIN_COOLOFF_MINUTES", 30, minimum=0)
AXES_COOLOFF_TIME = timedelta(minutes=_LOGIN_COOLOFF_MINUTES) if _LOGIN_COOLOFF_MINUTES else None
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
# No start-up line in every command's log; failures and lockouts are still logged.
AXES_VERBOSE = False
# Behind the HTTPS proxy, the address the proxy appended to X-Forwarded-For.
AXES_CLIENT_IP_CALLABLE = "network_analysis.proxy.client_ip"

# --- Content-Security-Policy (django-csp) -------------------------------------
# Pages load only the project's own scripts, styles and images (static files, no CDN);
# no inline script anywhere. Swagger UI relaxes style-src for its inline <style>
# (network_analysis/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Production hardening; each is off by default so that plain-HTTP development
# on 127.0.0.1 works, and `check --deploy` passes once they are set.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if envbool("DJANGO_BEHIND_HTTPS_PROXY", False) else None
)
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- The KPI pipeline -------------------------------------------------------
# A folder (Path), or an s3://bucket/prefix/ URL (str) read through s3fs.
KPI_INPUT_DIR = parse_input_location(envstr("KPI_INPUT_DIR", str(BASE_DIR / "data" / "input")))
KPI_TOP_N = envint("KPI_TOP_N", 3, minimum=1)
KPI_GRACE_SECONDS = envint("KPI_GRACE_SECONDS", 60, minimum=0)
KPI_API_PUBLIC = envbool("KPI_API_PUBLIC", False)
# Seconds a worker remembers a successful token check (kpis.api.authentication); 0: never.
KPI_API_TOKEN_CACHE_SECONDS = envint("KPI_API_TOKEN_CACHE_SECONDS", 5, minimum=0)
# Keys the pseudonymous subscriber hashes kept for exact hourly roll-ups. It
# must stay the same for the life of the data: a new key makes old and new
# hashes of one subscriber differ.
KPI_SUBSCRIBER_KEY = env_secret("KPI_SUBSCRIBER_KEY", DATA_DIR / "subscriber_key")
# A run whose heartbeat is older than this is presumed dead and its lock taken over.
KPI_LOCK_STALE_SECONDS = envint("KPI_LOCK_STALE_SECONDS", 900, minimum=30)
# Bytes of CSV parsed at a time: bounds memory whatever the file size.
KPI_READ_BLOCK_BYTES = envint("KPI_READ_BLOCK_BYTES", 8 * 1024 * 1024, minimum=64 * 1024)
# Days after an hour ends during which its file states are kept and a late file is merged;
# after that the hour is final and its states are dropped.
KPI_RESTATE_DAYS = envint("KPI_RESTATE_DAYS", 3, minimum=0)
# /api/health/ answers 503 "stale" once the newest interval with accepted rows ended longer ago.
KPI_HEALTH_MAX_LAG_SECONDS = envint("KPI_HEALTH_MAX_LAG_SECONDS", 900, minimum=1)
# Local worker processes that read files in parallel; 1 reads them in the command's process.
KPI_WORKERS = envint("KPI_WORKERS", cpus_available(), minimum=1)
# A Dask scheduler (tcp://host:8786) whose workers read the files instead; they must see
# KPI_INPUT_DIR at the same path.
KPI_DASK_SCHEDULER = envaddress("KPI_DASK_SCHEDULER", schemes=("tcp", "tls"))
KPI_DASK_CONNECT_SECONDS = envint("KPI_DASK_CONNECT_SECONDS", 10, minimum=1)
# Where each counted file's state is kept (kpis.pipeline.store): a folder, or an
# s3://bucket/prefix/ URL that every Dask worker reaches. The database keeps references only.
KPI_STATE_URL = state_location(envstr("KPI_STATE_URL", str(DATA_DIR / "state")))
# Cell partitions of every state: each is merged on its own, so memory follows one part.
KPI_STATE_PARTITIONS = envint(
    "KPI_STATE_PARTITIONS", 16, minimum=1, maximum=1024, power_of_two=True
)
# A file larger than this is read as byte ranges of this size, each a task of its own
# (gzip files stay one task: they cannot be split).
KPI_READ_RANGE_BYTES = envint("KPI_READ_RANGE_BYTES", 64 * 1024 * 1024, minimum=4096)

REST_FRAMEWORK = {
    # The throttles' client address: the one the HTTPS proxy appended to X-Forwarded-For
    # (the right-most), or the connection's when there is no proxy (the header ignored).
    "NUM_PROXIES": 1 if SECURE_PROXY_SSL_HEADER else 0,
    # Every view that needs credentials, /api/ and /metrics alike, accepts the same three:
    # "Authorization: Token <key>", "Authorization: Bearer <key>" (the same key, as
    # Prometheus and most HTTP clients send it) and the admin's session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that anonymous requests get 401 with WWW-Authenticate.
        "kpis.api.authentication.CachedTokenAuthentication",
        "kpis.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["kpis.api.permissions.ReadAccess"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": [
        # DRF's JSONRenderer, with a faster path for long plain lists of KPI rows.
        "kpis.api.renderers.JsonRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "kpis.api.throttling.AnonRateThrottle",
        "kpis.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": envrate("KPI_API_THROTTLE_ANON", "60/minute"),
        "user": envrate("KPI_API_THROTTLE_USER", "6000/minute"),
        # Its own budget: monitors polling /api/health/ never use up the anonymous one.
        "health": envrate("KPI_API_THROTTLE_HEALTH", "600/minute"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Network-Analysis KPI API",
    "DESCRIPTION": "Five-minute and hourly network KPIs computed from probe files.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the sidecar package's static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"HealthStatusEnum": "kpis.selectors.HEALTH_STATUSES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "kpis.api.schema.finish_schema",
    ],
}

# Logs go to stderr; KPI_LOG_FORMAT=json gives one JSON object per line, with
# each processed interval's figures as fields, for log collectors.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
KPI_LOG_LEVEL = envchoice("KPI_LOG_LEVEL", "", _LOG_LEVELS)
KPI_LOG_FORMAT = envchoice("KPI_LOG_FORMAT", "text", ("text", "json"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if KPI_LOG_FORMAT == "json" else "plain",
        },
    },
    "root": {"handlers": ["console"], "level": KPI_LOG_LEVEL or "WARNING"},
    "loggers": {
        "kpis": {
            "handlers": ["console"],
            "level": KPI_LOG_LEVEL or "INFO",
            "propagate": False,
        },
    },
}
