"""Input file names, the five-minute grid, scanning the input folder, and the read block size."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kpis.pipeline.location import InputPath, input_join, is_url, list_objects

logger = logging.getLogger(__name__)

# Bytes of CSV parsed at a time (here, not in the reader, so that the default is known
# without loading pyarrow).
DEFAULT_BLOCK_BYTES = 8 * 1024 * 1024
INTERVAL = timedelta(minutes=5)
HOUR = timedelta(hours=1)
INTERVALS_PER_HOUR = 12
_INTERVAL_MS = 5 * 60 * 1000

# <prefix>.<stream>-<epoch_ms>.<part>.csv[.gz], e.g. network.records-1626566720000.0.csv.
# No dots or slashes inside prefix and stream, so a name can never point elsewhere.
FILE_NAME_RE = re.compile(
    r"(?P<prefix>[A-Za-z0-9_-]+)\.(?P<stream>[A-Za-z0-9_-]+?)-(?P<epoch_ms>[0-9]{13})"
    r"\.(?P<part>[0-9]{1,9})\.csv(?P<gzip>\.gz)?",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class InputFile:
    """A raw file in the input folder, with what its name and stat say."""

    name: str
    path: InputPath  # a local path, or the URL of an object in a bucket
    epoch_ms: int
    size: int
    mtime_ns: int

    @property
    def interval_start(self) -> datetime:
        return interval_start_for_epoch_ms(self.epoch_ms)

    @property
    def gzipped(self) -> bool:
        return self.name.endswith(".gz")


def parse_file_name(name: str) -> int | None:
    """Return the closing epoch (ms) of a raw file's name, or None if it is not one."""
    match = FILE_NAME_RE.fullmatch(name)
    return int(match["epoch_ms"]) if match else None


def interval_start_for_epoch_ms(epoch_ms: int) -> datetime:
    """Start of the five-minute interval a file closed at ``epoch_ms`` belongs to.

    The closing time is rounded down to the grid; the file covers the five
    minutes before that grid point.
    """
    grid_ms = epoch_ms // _INTERVAL_MS * _INTERVAL_MS
    return datetime.fromtimestamp((grid_ms - _INTERVAL_MS) / 1000, tz=UTC)


def hour_start_for(moment: datetime) -> datetime:
    """Start of the UTC hour containing ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_to_interval(moment: datetime) -> datetime:
    """Start of the five-minute interval containing ``moment``."""
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def scan_input_dir(directory: InputPath) -> list[InputFile]:
    """List the raw files in ``directory`` (a folder or an ``s3://`` prefix), oldest first.

    Names outside the contract (a ``.tmp`` being written, a README) are
    ignored, and so are symbolic links and anything that is not a regular
    file: a link could lead outside the folder.
    """
    found: list[InputFile] = []
    if is_url(directory):
        for name, size, token in list_objects(str(directory)):
            epoch_ms = parse_file_name(name)
            if epoch_ms is not None:
                found.append(InputFile(name, input_join(directory, name), epoch_ms, size, token))
        found.sort(key=lambda f: (f.epoch_ms, f.name))
        return found
    with os.scandir(directory) as entries:
        for entry in entries:
            epoch_ms = parse_file_name(entry.name)
            if epoch_ms is None:
                continue
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                logger.warning(
                    "Skipping %s: not a regular file (links are not followed)", entry.name
                )
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
            found.append(
                InputFile(
                    name=entry.name,
                    path=Path(entry.path),
                    epoch_ms=epoch_ms,
                    size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                )
            )
    found.sort(key=lambda f: (f.epoch_ms, f.name))
    return found
