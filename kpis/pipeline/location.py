"""Where the raw files are: a local folder, or a prefix in an S3-compatible bucket.

``KPI_INPUT_DIR`` is either a folder or an ``s3://bucket/prefix/`` URL. Everything
else of the pipeline sees an :data:`InputPath` (a :class:`~pathlib.Path` or an
object's URL) and goes through the functions here to list, open, hash and name
it, so a folder and a bucket follow one contract. Objects are read through fsspec
(s3fs); the endpoint and credentials come only from the standard AWS variables,
which botocore reads itself, so no secret passes through this module or its logs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

InputPath = Path | str
"""A raw file: a local path, or the ``s3://`` URL of an object."""

URL_SCHEMES = ("s3://",)
# One ranged GET per this many bytes read in sequence.
OBJECT_READ_BYTES = 32 * 1024 * 1024


class InputUnreachable(Exception):
    """The input location cannot be listed: the message names the setting to check."""


def is_url(location: InputPath) -> bool:
    """True for an object-storage URL, False for a local path."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def parse_input_location(value: str | Path) -> InputPath:
    """The setting as a folder (:class:`Path`) or a prefix URL ending in ``/``."""
    text = str(value)
    if text.startswith(URL_SCHEMES):
        return text if text.endswith("/") else text + "/"
    return Path(value)


def storage_options() -> dict[str, Any]:
    """s3fs options from the AWS variables: the endpoint and region; keys stay with botocore.

    botocore reads ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` from the
    environment by itself, in this process and on every Dask worker alike.
    """
    client: dict[str, str] = {}
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        client["endpoint_url"] = endpoint
    if region := os.environ.get("AWS_REGION"):
        client["region_name"] = region
    # Few, quick retries: an unreachable endpoint should fail the run in seconds,
    # not after botocore's default back-off.
    config = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}
    return {"client_kwargs": client, "config_kwargs": config}


_AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
_filesystems: dict[tuple[str | None, ...], Any] = {}


def storage_environment() -> dict[str, str | None]:
    """The AWS variables of this process (None where unset), for its local worker processes."""
    return {variable: os.environ.get(variable) for variable in _AWS_VARIABLES}


def s3_filesystem() -> Any:
    """One s3fs filesystem per value of the AWS variables (changed keys take effect)."""
    import fsspec

    environment = tuple(os.environ.get(variable) for variable in _AWS_VARIABLES)
    filesystem = _filesystems.get(environment)
    if filesystem is None:
        _filesystems.clear()
        filesystem = fsspec.filesystem("s3", skip_instance_cache=True, **storage_options())
        _filesystems[environment] = filesystem
    return filesystem


def input_join(location: InputPath, name: str) -> InputPath:
    """The file ``name`` of a folder or prefix."""
    if isinstance(location, str):
        return location + name
    return location / name


def input_name(path: InputPath) -> str:
    """The file name of a path or object URL (its last component)."""
    return path.rsplit("/", 1)[-1] if isinstance(path, str) else path.name


def input_parent(path: InputPath) -> InputPath:
    """The folder or prefix of a file."""
    return path.rsplit("/", 1)[0] + "/" if isinstance(path, str) else path.parent


def open_input(path: InputPath) -> IO[bytes]:
    """Open a raw file for reading; an object that is gone raises FileNotFoundError."""
    if isinstance(path, str):
        # Sequential reads in 32 MiB ranged GETs, each fetched ahead of the parser:
        # a quarter the requests of 8 MiB blocks and, on the bench's files, 0.6x the
        # wall time of unbuffered reads (the memory is one block per open object).
        handle: IO[bytes] = s3_filesystem().open(
            path, "rb", block_size=OBJECT_READ_BYTES, cache_type="readahead"
        )
        return handle
    return open(path, "rb")


def open_input_part(path: InputPath) -> IO[bytes]:
    """Open a raw file to read a part of it: each read of an object is one GET of what it asks.

    Nothing is fetched ahead, so a reader that seeks to its part and reads it
    in blocks fetches that part and no more.
    """
    if isinstance(path, str):
        handle: IO[bytes] = s3_filesystem().open(path, "rb", cache_type="none")
        return handle
    return open(path, "rb")


def input_exists(path: InputPath) -> bool:
    """Whether the file or object is there now."""
    if isinstance(path, str):
        return bool(s3_filesystem().exists(path))
    return path.exists()


def change_token(etag: str) -> int:
    """A whole number that changes when an object's content changes, from its ETag.

    The ledger keeps a file's modification time in ``mtime_ns``; for an object the
    ETag plays that part (it changes with every new upload of other bytes). 62 bits,
    so it fits the signed 64-bit column.
    """
    digest = hashlib.blake2b(etag.strip('"').encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def list_objects(prefix: str) -> list[tuple[str, int, int]]:
    """``(name, size, change token)`` of the objects directly under ``prefix``.

    One ListObjectsV2 listing (one request per 1,000 objects); "folders" under
    the prefix are not entered, as a local scan does not enter subfolders.
    Raises :class:`InputUnreachable` with a message naming the variable to check.
    """
    filesystem = s3_filesystem()
    try:
        entries = filesystem.ls(prefix, detail=True, refresh=True)
    except FileNotFoundError as error:
        # A prefix exists only while objects are under it: an empty one is an empty folder.
        bucket = prefix.removeprefix("s3://").split("/", 1)[0]
        try:
            bucket_exists = bool(filesystem.exists(bucket))
        except Exception:
            bucket_exists = False
        if bucket_exists:
            return []
        raise InputUnreachable(f"KPI_INPUT_DIR: the bucket of {prefix} does not exist") from error
    except PermissionError as error:
        raise InputUnreachable(
            f"KPI_INPUT_DIR: access to {prefix} was refused: check the credentials in "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and their rights on the bucket"
        ) from error
    except Exception as error:
        raise InputUnreachable(describe_storage_error(error, prefix)) from error
    found = []
    for entry in entries:
        if entry.get("type") != "file":
            continue
        name = input_name(str(entry["name"]))
        etag = str(entry.get("ETag") or entry.get("LastModified") or "")
        found.append((name, int(entry["size"]), change_token(etag)))
    return found


def describe_storage_error(
    error: BaseException, location: str, setting: str = "KPI_INPUT_DIR"
) -> str:
    """One line for an object-storage failure that names the setting, never a secret."""
    kind = type(error).__name__
    text = " ".join(str(error).split())
    if "credential" in text.lower() or "signature" in text.lower() or "accesskey" in text.lower():
        return (
            f"{setting}: {location} refused the credentials: check AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY"
        )
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
    return (
        f"AWS_ENDPOINT_URL: cannot reach the object storage at {endpoint} for "
        f"{setting}={location} ({kind})"
    )


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` came from the object-storage client (endpoint lost, refused)."""
    module = type(error).__module__.split(".")[0]
    return module in {"botocore", "aiobotocore", "aiohttp", "s3fs"} or isinstance(
        error, (ConnectionError, TimeoutError, PermissionError)
    )


def check_input_location(location: InputPath) -> None:
    """Fail early, before anything is written, when the input folder is missing.

    Raises :class:`InputUnreachable` whose one line names the setting to fix. A
    bucket is not listed twice: the run's listing, its first step, raises the same.
    """
    if is_url(location):
        return  # the run's one listing is the check: it raises InputUnreachable first thing
    if not Path(location).is_dir():
        raise InputUnreachable(f"input folder {location} does not exist or is not a folder")
