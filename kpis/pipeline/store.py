"""The state store: each counted file's KPI state as a Parquet file, reached through fsspec.

The database keeps only a reference (the key) to each state; the bytes live
here, in a folder by default or in an object store (``s3://bucket/state/``)
for a cluster, so that workers on other machines write and read them directly.

A state is partitioned by cell: its (cell, subscriber) pairs are cut into
``partitions`` parts by a hash of the cell id, one Parquet row group per part.
Cells never span parts, so the distinct subscribers of a cell over any set of
states are counted part by part, each part on its own task with memory bounded
by the part, not by the hour (:func:`states_merge`).

Keys never collide: each write draws a random suffix, so a state is written
before the transaction that references it commits, and a crash in between
leaves an unreferenced file, which a later run removes (never a reference to
a missing state).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import fsspec

from kpis.pipeline.location import is_url, s3_filesystem

if TYPE_CHECKING:
    # Loaded with the first state written or read: a run with nothing to do never loads them.
    import pyarrow.parquet as pq

    from kpis.pipeline.aggregates import Partial


@dataclass(frozen=True, slots=True)
class StateRef:
    """Where one state was written, and what the ledger wants to know about it."""

    key: str
    size: int
    pairs: int


def hour_prefix(hour_start: datetime) -> str:
    """The folder of the states of the files of one hour."""
    return f"{hour_start:%Y-%m-%dT%H}"


def state_key_prefix(interval_start: datetime, file_name: str, *, seq: int) -> str:
    """The start of the keys of a file's state ``seq``: its hour's folder, the file, the range.

    Every state of an hour is under one folder, so that a final hour's states
    go in one delete and a crash's leftovers are found by listing the hour.
    """
    return f"{hour_prefix(interval_start)}/{file_name}.{seq}"


class StateStore:
    """States under one fsspec URL (a local folder, ``s3://bucket/prefix``, ...)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        if is_url(self.url) and not storage_options:
            # The same client as the input's: endpoint, region and retries from the AWS variables.
            self.fs = s3_filesystem()
            root = self.url.split("://", 1)[1]
        else:
            self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def write(self, key_prefix: str, partial: Partial, *, partitions: int) -> StateRef:
        """Write ``partial`` under a new key starting with ``key_prefix``; return its reference."""
        from kpis.pipeline.state_format import state_bytes

        key = f"{key_prefix}.{uuid.uuid4().hex}.parquet"
        data = state_bytes(partial, partitions=partitions)
        path = self._path(key)
        if self.local:
            _write_durably(path, data)
        else:
            # An object store makes a PUT visible whole or not at all.
            self.fs.pipe_file(path, data)
        return StateRef(key=key, size=len(data), pairs=len(partial.pairs))

    def read(self, key: str) -> Partial:
        """The whole state under ``key`` (all parts)."""
        from kpis.pipeline.state_format import partial_of

        with self.open(key) as parquet:
            return partial_of(parquet)

    def delete(self, keys: Iterable[str]) -> None:
        """Remove states; keys already gone are ignored."""
        paths = [self._path(key) for key in keys]
        for offset in range(0, len(paths), 1000):  # S3's DeleteObjects takes 1,000 keys at most
            batch = paths[offset : offset + 1000]
            try:
                self.fs.rm(batch)
            except FileNotFoundError:
                for path in batch:
                    if self.fs.exists(path):
                        self.fs.rm(path)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every state whose key starts with ``prefix/`` (an hour's folder)."""
        path = self._path(prefix)
        self.fs.invalidate_cache(path)  # an object store's listing may be cached
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix/``, temporary files of an interrupted write included."""
        path = self._path(prefix)
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        start = len(self.root) + 1
        return [name[start:] if name.startswith(self.root) else name for name in found]

    def open(self, key: str) -> _OpenState:
        return _OpenState(self, key)


class _OpenState:
    """A state's Parquet file, opened for reading some of its row groups."""

    def __init__(self, store: StateStore, key: str) -> None:
        self._store = store
        self._key = key
        self._handle: Any = None

    def __enter__(self) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        path = self._store._path(self._key)
        if self._store.local:  # memory-mapped: no copy of the row groups it skips
            return pq.ParquetFile(path, memory_map=True)
        self._handle = self._store.fs.open(path, "rb")
        return pq.ParquetFile(self._handle)

    def __exit__(self, *_: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _write_durably(path: str, data: bytes) -> None:
    """Write a local file so that it is complete on disk before anyone references it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
