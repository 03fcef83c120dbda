"""Settings read from the environment, with embedded defaults that need no server.

Production differs only by environment variables (see README "Deployment").
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PREFSTUDIO_VAR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "ninja",
    "axes",
    "prefstudio",
    "jobs",
    "annotation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "prefstudio.uploads.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "prefstudio.uploads.AnonymousBodyMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "prefstudio.csp.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks: turns a lockout into its page
]

ROOT_URLCONF = "prefstudio.urls"
WSGI_APPLICATION = "prefstudio.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'prefstudio.sqlite3'}"),
        # Persistent connections (seconds; 0 closes one after each request): a new PostgreSQL connection
        # costs more than the annotate screen's queries. Checked before reuse, so a restarted server is
        # only a reconnect.
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to the same file: wait for locks, take them up front.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that worker processes started by tests can open the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# A manager's new account gets a one-time set-password link (annotation/services/accounts.py) that expires
# after ACCOUNT_LINK_DAYS; it is the same timeout as Django's password reset (the app sends no mail).
PASSWORD_RESET_TIMEOUT = int(float(os.environ.get("ACCOUNT_LINK_DAYS", "7")) * 24 * 3600)
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): LOGIN_FAILURE_LIMIT failed logins for one username from one address lock
# that pair out for LOGIN_COOLOFF_SECONDS (a failure during the lockout starts it again); 429 and a page.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("LOGIN_COOLOFF_SECONDS", "900")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# API tokens: API_TOKEN_FAILURE_LIMIT failed bearer tokens from one address get 429 until
# API_TOKEN_COOLOFF_SECONDS after the last failure (counted in the database: every worker sees it).
API_TOKEN_FAILURE_LIMIT = int(os.environ.get("API_TOKEN_FAILURE_LIMIT", "10"))
API_TOKEN_COOLOFF_SECONDS = float(os.environ.get("API_TOKEN_COOLOFF_SECONDS", "900"))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", VAR_DIR / "artifacts"))
MODEL_CACHE = Path(os.environ.get("MODEL_CACHE", VAR_DIR / "models"))

# Uploads: imports are streamed to disk; requests bodies other than files stay small.
# UPLOAD_MAX_BYTES bounds the files of one request, and (with DATA_UPLOAD_MAX_MEMORY_SIZE for the other
# fields) every request body by its Content-Length before it is read (prefstudio/uploads.py); the import
# worker reads it too. IMPORT_MAX_UPLOAD_BYTES is its former name.
UPLOAD_MAX_BYTES = int(
    os.environ.get("UPLOAD_MAX_BYTES", os.environ.get("IMPORT_MAX_UPLOAD_BYTES", str(512 * 1024 * 1024)))
)
FILE_UPLOAD_HANDLERS = [
    "prefstudio.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
IMPORT_MAX_IMAGE_BYTES = int(os.environ.get("IMPORT_MAX_IMAGE_BYTES", str(20 * 1024 * 1024)))
IMPORT_MAX_IMAGE_PIXELS = int(os.environ.get("IMPORT_MAX_IMAGE_PIXELS", str(40_000_000)))
# Characters one imported field may hold: a prompt, one response, any other column (row errors past them).
IMPORT_MAX_PROMPT_CHARS = int(os.environ.get("IMPORT_MAX_PROMPT_CHARS", str(200_000)))
IMPORT_MAX_RESPONSE_CHARS = int(os.environ.get("IMPORT_MAX_RESPONSE_CHARS", str(200_000)))
IMPORT_MAX_FIELD_CHARS = int(os.environ.get("IMPORT_MAX_FIELD_CHARS", str(20_000)))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Celery: the database row is the source of truth; the broker is only transport.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # the exchange tables; kombu's default is ./control, relative to wherever the process started
        "control_folder": str(_broker_dir / "control"),
    }
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
else:
    # A broker that is down or hangs must cost a request seconds, not its thread (jobs/sending.py).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 10}
CELERY_BROKER_CONNECTION_TIMEOUT = 3
# A send gives up after about a second when the broker is down; the job waits for the recovery's resend.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# Security: on when DEBUG is off, each overridable from the environment.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Sent on every response (prefstudio/csp.py). No inline script anywhere; styles allow inline attributes
# (progress bars' widths, plotly's own <style> rules).
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

for _path in (VAR_DIR, STATIC_ROOT, MEDIA_ROOT, ARTIFACT_ROOT, MODEL_CACHE):
    Path(_path).mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------------------------------------------
# Training jobs (training/tasks.py explains the acknowledgement strategy): Celery routing, beat, timings.
# ---------------------------------------------------------------------------------------------------
CELERY_TASK_ROUTES = {"prefstudio.tasks.jobs_recover": {"queue": "cpu"}}
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "1"))
# A worker fetches a task only when it has a free slot (Redis only; Celery ignores it elsewhere). Tasks are
# acknowledged when they start, so a busy worker would otherwise hold one more message: the node task of a
# multi-node job could wait behind the very job it is part of (training/services/nodes.py).
CELERY_WORKER_DISABLE_PREFETCH = env_bool(
    "CELERY_WORKER_DISABLE_PREFETCH", CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
)
TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("TRAINING_HEARTBEAT_SECONDS", "10"))
TRAINING_HEARTBEAT_STALE_SECONDS = float(os.environ.get("TRAINING_HEARTBEAT_STALE_SECONDS", "120"))
TRAINING_MAX_ATTEMPTS = int(os.environ.get("TRAINING_MAX_ATTEMPTS", "3"))
# A queued training job may wait behind long runs: its task is sent again (a lost message) after this.
TRAINING_QUEUED_RESEND_SECONDS = float(os.environ.get("TRAINING_QUEUED_RESEND_SECONDS", "1800"))
# How often the recovery of every job kind runs (prefstudio/job_kinds.py), in beat and on a thread of every
# worker; the TRAINING_STALE_CHECK_* names these had when only training jobs were checked still work.
JOB_RECOVERY_SECONDS = float(
    os.environ.get("JOB_RECOVERY_SECONDS", os.environ.get("TRAINING_STALE_CHECK_SECONDS", "30"))
)
JOB_RECOVERY_IN_WORKER = env_bool("JOB_RECOVERY_IN_WORKER", env_bool("TRAINING_STALE_CHECK_IN_WORKER", True))
# A queued job whose task the broker did not take (it was down) is sent again after this many seconds; the
# recovery runs every JOB_RECOVERY_SECONDS, so keep that short too where outages matter.
JOB_UNDELIVERED_RESEND_SECONDS = float(os.environ.get("JOB_UNDELIVERED_RESEND_SECONDS", "20"))
# torch intra-op threads per training or generation job; 0 = the cores this worker may use divided by its
# concurrency (training/services/threads.py), so concurrent jobs do not oversubscribe the CPU.
TRAINING_TORCH_THREADS = int(os.environ.get("TRAINING_TORCH_THREADS", "0"))
TRAINING_CANCEL_POLL_SECONDS = float(os.environ.get("TRAINING_CANCEL_POLL_SECONDS", "1"))
TRAINING_CANCEL_CHECK_SHARE = float(os.environ.get("TRAINING_CANCEL_CHECK_SHARE", "0.005"))
TRAINING_METRICS_FLUSH_SECONDS = float(os.environ.get("TRAINING_METRICS_FLUSH_SECONDS", "2"))
# Jobs on more than one node (training/services/nodes.py, docs/scaling.md): the operator declares that
# ARTIFACT_ROOT and MODEL_CACHE are storage every worker shares; the address other nodes reach this
# worker's rendezvous at (empty: this host's name); how long the nodes wait for each other.
TRAINING_SHARED_STORAGE = env_bool("TRAINING_SHARED_STORAGE", False)
TRAINING_NODE_ADDRESS = os.environ.get("TRAINING_NODE_ADDRESS", "")
TRAINING_RENDEZVOUS_TIMEOUT_SECONDS = int(os.environ.get("TRAINING_RENDEZVOUS_TIMEOUT_SECONDS", "600"))
CELERY_BEAT_SCHEDULE = {
    "jobs-recover": {"task": "prefstudio.tasks.jobs_recover", "schedule": JOB_RECOVERY_SECONDS},
}
# A generation, freeze or import job that has not reported for this long lost its worker: it is requeued
# (by the same recovery as training jobs).  Longer than its longest silent stage.
ANNOTATION_JOB_STALE_SECONDS = float(os.environ.get("ANNOTATION_JOB_STALE_SECONDS", "1800"))
ANNOTATION_JOB_MAX_ATTEMPTS = int(os.environ.get("ANNOTATION_JOB_MAX_ATTEMPTS", "3"))
# An online loop is claimed once per attempt and runs for hours: it may outlive several lost workers.
LOOP_MAX_ATTEMPTS = int(os.environ.get("LOOP_MAX_ATTEMPTS", "10"))
# Freezes and imports also renew their heartbeat from a thread this often, through silent stages.
ANNOTATION_JOB_HEARTBEAT_SECONDS = float(os.environ.get("ANNOTATION_JOB_HEARTBEAT_SECONDS", "60"))
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "prefstudio.staticfinders.PlotlyFinder",
]
