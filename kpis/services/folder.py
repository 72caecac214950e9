"""The input folder seen cheaply: each contract file's name, size, mtime and closing time.

A run compares the folder's fingerprints with the ledger's through a set, so a run
with nothing new over a long history costs one ``stat`` per file and one look-up;
the pipeline's :class:`~kpis.pipeline.InputFile` objects are made only for the files
and intervals a run reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from kpis.pipeline import INTERVAL, InputFile, interval_start_for_epoch_ms, parse_file_name
from kpis.pipeline.location import InputPath, input_join, is_url, list_objects

logger = logging.getLogger("kpis.update")

_INTERVAL_MS = int(INTERVAL.total_seconds() * 1000)

Fingerprint = tuple[str, int, int]
"""(name, size, mtime_ns): a file whose fingerprint is in the ledger was read as it is."""


def interval_key(epoch_ms: int) -> int:
    """A file's interval as a number: the same for the files of one interval, increasing."""
    return epoch_ms // _INTERVAL_MS


@dataclass
class FolderListing:
    """Every contract file of the input folder, as ``stat`` saw it."""

    directory: InputPath  # a folder, or an s3:// prefix
    # name -> (epoch_ms, size, mtime_ns); for an object, a token of its ETag stands for mtime_ns
    stats: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # Names that do not follow the file-name contract (a probe misnamed, a stray file);
    # in-progress uploads (".tmp") and hidden files are not counted.
    ignored: list[str] = field(default_factory=list)

    def ignore(self, name: str) -> None:
        if not (name.endswith(".tmp") or name.startswith(".")):
            self.ignored.append(name)

    def span(self) -> tuple[datetime, datetime]:
        """The first and last interval start of the files listed (the listing is not empty)."""
        epochs = [epoch_ms for epoch_ms, _, _ in self.stats.values()]
        return interval_start_for_epoch_ms(min(epochs)), interval_start_for_epoch_ms(max(epochs))

    def unrecorded(self, recorded: Iterable[Fingerprint]) -> list[str]:
        """The names whose fingerprint is not among ``recorded``: new, changed, or back."""
        known = set(recorded)
        return [
            name
            for name, (_, size, mtime_ns) in self.stats.items()
            if (name, size, mtime_ns) not in known
        ]

    def due(self, names: Iterable[str], *, due_before: datetime) -> list[str]:
        """Those of ``names`` whose interval ended at or before ``due_before``."""
        last_key = interval_key(int(due_before.timestamp() * 1000))
        return [name for name in names if interval_key(self.stats[name][0]) <= last_key]

    def input_files(self, names: Iterable[str]) -> list[InputFile]:
        """The pipeline's view of the named files, oldest interval first."""
        files = []
        for name in names:
            epoch_ms, size, mtime_ns = self.stats[name]
            files.append(
                InputFile(
                    name=name,
                    path=input_join(self.directory, name),
                    epoch_ms=epoch_ms,
                    size=size,
                    mtime_ns=mtime_ns,
                )
            )
        files.sort(key=lambda f: (f.epoch_ms, f.name))
        return files

    def same_intervals(self, names: Iterable[str]) -> list[str]:
        """Every listed file of the intervals of ``names``."""
        keys = {interval_key(self.stats[name][0]) for name in names}
        if not keys:
            return []
        return [name for name, stat in self.stats.items() if interval_key(stat[0]) in keys]


def folder_list(directory: InputPath) -> FolderListing:
    """List the contract files of ``directory``, a folder or an ``s3://`` prefix.

    Same rules as :func:`kpis.pipeline.scan_input_dir`: other names are ignored,
    and so are symbolic links and anything that is not a regular file. A prefix
    costs one listing (one request per 1,000 objects) and no object read.
    """
    listing = FolderListing(directory)
    if is_url(directory):
        for name, size, token in list_objects(str(directory)):
            epoch_ms = parse_file_name(name)
            if epoch_ms is None:
                listing.ignore(name)
            else:
                listing.stats[name] = (epoch_ms, size, token)
        return listing
    # Through a descriptor of the folder, each stat resolves one name, not the whole path.
    folder = os.open(directory, os.O_RDONLY)
    try:
        _list_into(listing, folder)
    finally:
        os.close(folder)
    return listing


def _list_into(listing: FolderListing, folder: int) -> None:
    stats = listing.stats
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            epoch_ms = parse_file_name(name)
            if epoch_ms is None:
                listing.ignore(name)
                continue
            if not entry.is_file(follow_symlinks=False):  # a link is not a regular file
                logger.warning("Skipping %s: not a regular file (links are not followed)", name)
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
            stats[name] = (epoch_ms, stat.st_size, stat.st_mtime_ns)
