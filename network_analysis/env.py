"""Typed readers for settings that come from the environment.

Every reader fails loudly: a malformed value raises :class:`SettingError`
naming the variable, the value and what is allowed, so a typo in a deployment
stops start-up instead of silently falling back to a default. ``manage.py`` and
the WSGI entry point print that one line and exit (see :func:`exit_on_setting_error`).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured
from dotenv import dotenv_values

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_RATE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")


class SettingError(ImproperlyConfigured):
    """A setting holds a value it may not have; the message says which, what and what is allowed."""

    def __init__(self, name: str, shown: str, problem: str, allowed: str) -> None:
        self.name = name
        super().__init__(f"{name}={shown} {problem}: {allowed}.")


def _bad(name: str, raw: str, problem: str, allowed: str) -> SettingError:
    return SettingError(name, repr(raw), problem, allowed)


def _without_password(url: str) -> str:
    """``url`` as it may be printed: a password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@contextmanager
def exit_on_setting_error(exit_status: int = 1) -> Iterator[None]:
    """Turn a :class:`SettingError` into its one line on stderr and ``exit_status``.

    A traceback would bury the line that names the variable, and Django's command
    runner, which retries the settings while handling a KeyError, chains one onto it.
    """
    try:
        yield
    except SettingError as error:
        _exit(str(error), exit_status)


def _exit(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def env_file_load(*, base_dir: Path) -> Path | None:
    """Add the variables of ``KPI_ENV_FILE`` (default ``.env`` in ``base_dir``) to the environment.

    A variable already set (not empty) in the environment keeps its value, so the
    service manager or the shell always wins over the file. Values are taken literally
    (no ``${...}`` expansion: a password may hold a ``$``). Returns the file read, or None.
    """
    named = os.environ.get("KPI_ENV_FILE", "")
    path = Path(named) if named else base_dir / ".env"
    if not path.is_file():
        if named:
            raise _bad(
                "KPI_ENV_FILE",
                named,
                "is not a file",
                "name a file of NAME=value lines, or leave it unset to read .env in the project",
            )
        return None
    for name, value in dotenv_values(path, interpolate=False).items():
        # Empty counts as unset, as for every reader here.
        if value is not None and not os.environ.get(name):
            os.environ[name] = value
    return path


def envstr(name: str, default: str) -> str:
    """Return the variable's value, or ``default`` when it is unset or empty."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def envbool(name: str, default: bool) -> bool:
    """Read a boolean written as 1/0, true/false, yes/no or on/off (any case)."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _bad(name, raw, "is not a boolean", "use one of 1/0, true/false, yes/no, on/off")


def envint(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    power_of_two: bool = False,
) -> int:
    """Read a whole number, optionally bounded, optionally a power of two."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    allowed = "use a whole number" + (f" of at least {minimum}" if minimum is not None else "")
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, raw, "is not a whole number", allowed) from None
    if minimum is not None and value < minimum:
        raise _bad(name, raw, f"is less than {minimum}", allowed)
    if maximum is not None and value > maximum:
        raise _bad(name, raw, f"is more than {maximum}", f"use at most {maximum}")
    if power_of_two and value & (value - 1):
        raise _bad(name, raw, "is not a power of two", "use 1, 2, 4, 8, 16, ...")
    return value


def state_location(value: str) -> str:
    """A URL (``s3://bucket/prefix``) as it is, a folder as an absolute path.

    Worker processes, and Dask workers on this machine, open states by this
    name from other working directories.
    """
    if "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """Read one of ``choices`` (any case); anything else stops start-up."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise _bad(name, raw, "is not allowed", f"use one of {', '.join(choices)}")


def envlist(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list; blanks around items are dropped."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envaddress(name: str, *, schemes: tuple[str, ...]) -> str:
    """Read a network address like ``tcp://host:8786``, or "" when unset."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return ""
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in schemes or not parts.hostname or port is None or parts.path not in "/":
        examples = " or ".join(f"{scheme}://host:8786" for scheme in schemes)
        raise _bad(name, raw, "is not an address", f"use one like {examples}")
    return raw


def envrate(name: str, default: str) -> str:
    """Read a throttle rate, ``<count>/<second|minute|hour|day>``."""
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    if not _RATE.fullmatch(raw):
        raise _bad(
            name, raw, "is not a rate", "use <count>/<second|minute|hour|day>, e.g. 60/minute"
        )
    return raw


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def env_secret(name: str, fallback_file: Path) -> str:
    """Read a secret from the environment, else from a generated local file.

    The file lets a fresh checkout run without configuration while never
    committing a secret; production sets the variable.
    """
    value = os.environ.get(name, "")
    if value:
        if len(value) < 32:
            # The value is a secret: its length is shown, never the value.
            raise SettingError(
                name,
                f"<{len(value)} characters>",
                "is too short",
                "use at least 32 characters, e.g. from "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'",
            )
        return value
    if fallback_file.exists():
        return fallback_file.read_text().strip()
    fallback_file.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(50)
    fd = os.open(fallback_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def database_from_url(url: str, *, base_dir: Path) -> dict[str, Any]:
    """Turn ``DATABASE_URL`` into a Django ``DATABASES['default']`` entry.

    Supported: ``sqlite:///relative/or/absolute/path`` and
    ``mysql://user:password@host:port/name`` (MySQL or MariaDB, mysqlclient).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query))
    shown = repr(_without_password(url))
    forms = (
        "use sqlite:///relative.db, sqlite:////absolute.db or mysql://user:password@host:3306/name"
    )
    if scheme == "sqlite":
        raw_path = unquote(parts.path)
        if raw_path in ("", "/"):
            raise SettingError("DATABASE_URL", shown, "has no file path", forms)
        # sqlite:///db.sqlite3 is relative to the project, sqlite:////abs is absolute.
        path = Path(raw_path[1:]) if raw_path.startswith("/") else Path(raw_path)
        if not path.is_absolute():
            path = base_dir / path
        return sqlite_database(path)
    if scheme in ("mysql", "mariadb"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise SettingError("DATABASE_URL", shown, "has no database name", forms)
        try:
            port = parts.port
        except ValueError:
            raise SettingError(
                "DATABASE_URL", shown, "has a port that is not a number", forms
            ) from None
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": 0,
            "OPTIONS": {
                "charset": "utf8mb4",
                # Strict mode turns silent truncation into errors; READ COMMITTED
                # is what Django expects of InnoDB.
                "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
                "isolation_level": "read committed",
                **options,
            },
            "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    raise SettingError(
        "DATABASE_URL", shown, f"has a scheme ({scheme!r}) that is not supported", forms
    )


def sqlite_database(path: Path) -> dict[str, Any]:
    """SQLite in WAL mode, so the API keeps reading while the command writes."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # IMMEDIATE takes the write lock at BEGIN: writers queue on the
            # busy timeout instead of failing with "database is locked".
            "transaction_mode": "IMMEDIATE",
            "timeout": 60,
        },
        # Tests that start the command as a subprocess need a real file.
        "TEST": {"NAME": str(path.with_name(path.stem + "_test.sqlite3"))},
    }


def cache_from_url(url: str) -> dict[str, Any]:
    """Turn ``CACHE_URL`` into a Django ``CACHES['default']`` entry.

    Empty: the database cache (table ``kpi_cache``, created by ``migrate``), shared
    by every process that uses the database. ``redis://``, ``rediss://`` or
    ``unix://``: Django's Redis cache, keys prefixed with ``?prefix=`` (default
    ``kpi``). ``locmem://``: per process, for one-process setups only.
    """
    if url == "":
        return {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "kpi_cache",
        }
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = [value for name, value in query if name == "prefix"]
        rest = urlencode([(name, value) for name, value in query if name != "prefix"])
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": urlunsplit(parts._replace(query=rest)),
            "KEY_PREFIX": prefix[-1] if prefix else "kpi",
        }
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    raise SettingError(
        "CACHE_URL",
        repr(_without_password(url)),
        f"has a scheme ({scheme!r}) that is not supported",
        "use redis://, rediss://, unix:// or locmem://, or leave it empty for the database cache",
    )
